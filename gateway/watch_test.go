package gateway

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/config"
)

// An uplink that stays down is reported after a while and then at a slow
// pace, never once per check.
func TestWatchThrottlesTheDownWarning(t *testing.T) {
	cfg, err := config.Parse("x.yaml", []byte("gateway:\n  id: gw1\nsensors:\n  - name: sim\n    driver: sim\nupstream:\n  servers: [nats://127.0.0.1:1]\n"), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var logs strings.Builder
	g, _ := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), nil))})
	// Nothing runs: the uplink counts as down for the whole second, checked
	// every 5 ms: 200 checks; warned after 100 ms, then every 300 ms.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	g.watch(ctx, 5*time.Millisecond, 100*time.Millisecond, 300*time.Millisecond)
	mu.Lock()
	n := strings.Count(logs.String(), "uplink still down")
	mu.Unlock()
	if n < 2 || n > 4 {
		t.Fatalf("%d warnings in 1 s (after 100 ms, then every 300 ms: 3 or 4):\n%s", n, logs.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

//go:build linux && (amd64 || arm64)

package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/powercuttest"
	"github.com/edgegw/edgegw/gateway/wait"
)

// edgegw as the site's broker, its data_dir on a file system that forgets
// every write not yet fsynced when the power is cut: at least 50 cuts at random
// points while a device publishes and the forwarder drains. After each,
// edgegw starts again on what the disk kept. In the end every message the
// device was told was stored (its PUBACK) is in the stream, none twice,
// and no buffer event is in the stream twice (the stream's duplicate
// window is 1 s, shorter than a cut and restart, so a re-send would show).
func TestPowerCuts(t *testing.T) {
	if testing.Short() {
		t.Skip("re-execs the test binary")
	}
	disk := powercuttest.Mount(t)
	srv := natstest.Start(t, nil)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "TELEMETRY", Subjects: []string{"telemetry.>"}, Duplicates: time.Second}); err != nil {
		t.Fatal(err)
	}
	port := natstest.FreePort(t)
	cfgPath := filepath.Join(t.TempDir(), "edgegw.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`gateway:
  id: gw1
  data_dir: %s
mqtt:
  server:
    listen: 127.0.0.1:%d
    allow_anonymous: true
  subscriptions:
    - topic: sensors/#
# The default buffer settings (a 250 ms commit delay among them): the
# device publishes one at a time, waiting for each PUBACK, which the
# delay does not hold back, so there are many commits for cuts to land in.
upstream:
  servers: [%s]
  drain: oldest_first
  rate:
    events_per_second: 2000
http:
  listen: "off"
`, disk.Dir, port, srv.URL())), 0o600)

	var mu sync.Mutex
	var logs []*syncBuffer
	start := func() *exec.Cmd {
		cmd := edgegwChild("run", "--config", cfgPath)
		out := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		logs = append(logs, out)
		mu.Unlock()
		return cmd
	}

	// The device: clean sessions, no re-sends of its own; a message counts
	// as acknowledged when its PUBACK came (a clean session's tokens fail
	// on a lost connection, and are never completed by a resume).
	acked := map[int]bool{}
	var ackMu sync.Mutex
	stop := make(chan struct{})
	var devWG sync.WaitGroup
	devWG.Go(func() {
		url := fmt.Sprintf("tcp://127.0.0.1:%d", port)
		n := 0
		for {
			select {
			case <-stop:
				return
			default:
			}
			c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("device").SetCleanSession(true).SetAutoReconnect(false))
			if tok := c.Connect(); !tok.WaitTimeout(2*time.Second) || tok.Error() != nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			for c.IsConnectionOpen() {
				select {
				case <-stop:
					c.Disconnect(100)
					return
				default:
				}
				i := n
				n++
				tok := c.Publish("sensors/device", 1, false, strconv.Itoa(i))
				if tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
					ackMu.Lock()
					acked[i] = true
					ackMu.Unlock()
				}
			}
			c.Disconnect(0)
		}
	})

	cmd := start()
	// At least 50 cuts, and on until 10 of them landed inside a commit
	// (forgot writes): where a cut lands is chance, what the test proves
	// must not be.
	const minCuts, minLossy, maxCuts = 50, 10, 500
	lossy := 0 // cuts that forgot writes: they landed inside a commit
	cuts := 0
	for k := 0; k < minCuts || lossy < minLossy; k++ {
		if k == maxCuts {
			t.Fatalf("only %d of %d cuts landed inside a commit: the test proved little", lossy, k)
		}
		cuts++
		time.Sleep(time.Duration(200+rand.IntN(600)) * time.Millisecond)
		lost := disk.Cut()
		if lost > 0 {
			lossy++
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		disk.Restore()
		if k%10 == 9 {
			ackMu.Lock()
			t.Logf("cut %d: %d unsynced writes forgotten; %d messages acknowledged so far", k+1, lost, len(acked))
			ackMu.Unlock()
		}
		cmd = start()
	}
	time.Sleep(time.Second)
	close(stop)
	devWG.Wait()
	ackMu.Lock()
	want := len(acked)
	ackMu.Unlock()
	deadline := time.Now().Add(2 * time.Minute)
	wait.Within(t, time.Until(deadline), fmt.Sprintf("the %d acknowledged messages in the stream", want), func() bool {
		c, _ := natstest.StreamMsgs(srv.URL(), "TELEMETRY")
		return c >= uint64(want)
	})
	// A sentinel after the device's last PUBACK: sent oldest first, it is
	// in the stream only after everything stored before it, what would
	// come twice included.
	sentinelThrough(t, fmt.Sprintf("tcp://127.0.0.1:%d", port), srv.URL(), "sensors/device", deadline)
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("last run: %v", err)
	}
	drainedBuffer(t, filepath.Join(disk.Dir, "buffer.db"))
	for i, l := range logs {
		if strings.Contains(l.String(), "unusable") || strings.Contains(l.String(), "moved aside") {
			t.Fatalf("run %d found the buffer damaged after a power cut:\n%s", i, l.String())
		}
	}

	seqs, payloads := map[string]int{}, map[int]int{}
	for _, m := range streamMessages(t, srv.URL()) {
		if m.data == "sentinel" {
			continue
		}
		seqs[m.id]++
		n, _ := strconv.Atoi(m.data)
		payloads[n]++
	}
	bad := 0
	for id, c := range seqs {
		if c > 1 {
			if bad++; bad <= 5 {
				t.Errorf("buffer event %s is in the stream %d times", id, c)
			}
		}
	}
	for n := range acked {
		if payloads[n] != 1 {
			if bad++; bad <= 10 {
				t.Errorf("message %d was acknowledged to the device and is in the stream %d times", n, payloads[n])
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d problems after %d power cuts (%d acknowledged, %d in the stream)", bad, cuts, want, len(seqs))
	}
	t.Logf("%d power cuts, %d of them inside a commit (writes forgotten): %d messages acknowledged, all in the stream once; %d fsyncs made durable", cuts, lossy, want, disk.Syncs())
}

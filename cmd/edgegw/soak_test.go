package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
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
	"github.com/edgegw/edgegw/gateway/wait"
)

// TestSoak runs the real binary for EDGEGW_SOAK_MINUTES minutes (skipped
// without it): a device publishes 1,000 QoS 1 readings/s to edgegw's own
// broker, the uplink (an in-process nats-server) goes down and up every
// 20 s, and once a minute it prints the process's RSS, its lifetime peak
// (VmHWM), goroutines and open file descriptors. In the end every reading
// the device was told was stored is in the stream once, and no buffer
// event twice (duplicate window 1 s).
//
//	EDGEGW_SOAK_MINUTES=30 go test -run TestSoak -v -timeout 45m ./cmd/edgegw/
func TestSoak(t *testing.T) {
	minutes, _ := strconv.Atoi(os.Getenv("EDGEGW_SOAK_MINUTES"))
	if minutes <= 0 {
		t.Skip("set EDGEGW_SOAK_MINUTES to run the soak test")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "edgegw")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	srv := natstest.Start(t, nil)
	nc, err := nats.Connect(srv.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "TELEMETRY", Subjects: []string{"telemetry.>"}, Storage: jetstream.FileStorage, Duplicates: time.Second}); err != nil {
		t.Fatal(err)
	}
	mqttPort, httpPort := natstest.FreePort(t), natstest.FreePort(t)
	cfgPath := filepath.Join(dir, "edgegw.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`gateway:
  id: gw1
  data_dir: %s
mqtt:
  server:
    listen: 127.0.0.1:%d
    allow_anonymous: true
  subscriptions:
    - topic: sensors/#
upstream:
  servers: [%s]
  drain: oldest_first
http:
  listen: 127.0.0.1:%d
`, dir, mqttPort, srv.URL(), httpPort)), 0o600)
	cmd := exec.Command(bin, "run", "--config", cfgPath)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()

	var mu sync.Mutex
	acked := map[int]bool{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { soakDevice(fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort), stop, &mu, acked) })

	t.Logf("%6s %10s %10s %10s %6s %10s %8s", "minute", "rss_mib", "hwm_mib", "goroutines", "fds", "acked", "uplink")
	up := true
	flap := time.NewTicker(20 * time.Second)
	defer flap.Stop()
	minute := time.NewTicker(time.Minute)
	defer minute.Stop()
	end := time.After(time.Duration(minutes) * time.Minute)
loop:
	for m := 1; ; {
		select {
		case <-flap.C:
			if up {
				srv.Shutdown()
			} else {
				srv.Restart()
			}
			up = !up
		case <-minute.C:
			kb, _ := procStatus(cmd.Process.Pid)
			rss, hwm := float64(kb["VmRSS"])/1024, float64(kb["VmHWM"])/1024
			fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", cmd.Process.Pid))
			mu.Lock()
			n := len(acked)
			mu.Unlock()
			t.Logf("%6d %10.1f %10.1f %10d %6d %10d %8v", m, rss, hwm, goroutines(httpPort), len(fds), n, up)
			m++
		case <-end:
			break loop
		}
	}
	close(stop)
	wg.Wait()
	if !up {
		srv.Restart()
	}
	mu.Lock()
	want := len(acked)
	mu.Unlock()
	deadline := time.Now().Add(5 * time.Minute)
	wait.Within(t, time.Until(deadline), fmt.Sprintf("the %d acknowledged readings in the stream", want), func() bool {
		c, _ := natstest.StreamMsgs(srv.URL(), "TELEMETRY")
		return c >= uint64(want)
	})
	sentinelThrough(t, fmt.Sprintf("tcp://127.0.0.1:%d", mqttPort), srv.URL(), "sensors/device", deadline)
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("edgegw: %v\n%s", err, tail(logs.String(), 20))
	}
	drainedBuffer(t, filepath.Join(dir, "buffer.db"))
	seqs, payloads := map[string]int{}, map[int]int{}
	for _, m := range streamMessages(t, srv.URL()) {
		if m.data == "sentinel" {
			continue
		}
		seqs[m.id]++
		n, _ := strconv.Atoi(m.data)
		payloads[n]++
	}
	lost, twice := 0, 0
	for n := range acked {
		if payloads[n] == 0 {
			lost++
		}
	}
	for _, c := range seqs {
		if c > 1 {
			twice++
		}
	}
	for _, c := range payloads {
		if c > 1 {
			twice++
		}
	}
	t.Logf("%d minutes: %d readings acknowledged, %d in the stream; lost %d, twice %d", minutes, want, len(seqs), lost, twice)
	if lost > 0 || twice > 0 {
		t.Fatalf("lost %d, twice %d", lost, twice)
	}
}

// soakDevice publishes 1,000 QoS 1 readings a second, at most 100 in
// flight, reconnecting when it must; acked gets each acknowledged one.
func soakDevice(url string, stop chan struct{}, mu *sync.Mutex, acked map[int]bool) {
	n := 0
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("soak-device").SetCleanSession(true).SetAutoReconnect(false))
		if tok := c.Connect(); !tok.WaitTimeout(2*time.Second) || tok.Error() != nil {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
				continue
			}
		}
		type inflight struct {
			i   int
			tok paho.Token
		}
		var window []inflight
		settle := func(keep int) {
			for len(window) > keep {
				w := window[0]
				window = window[1:]
				if w.tok.WaitTimeout(10*time.Second) && w.tok.Error() == nil {
					mu.Lock()
					acked[w.i] = true
					mu.Unlock()
				}
			}
		}
		for c.IsConnectionOpen() {
			select {
			case <-stop:
				settle(0)
				c.Disconnect(100)
				return
			case <-tick.C:
			}
			// Catch up to 1,000 a second since the start (while the
			// device was disconnected, those readings were not taken).
			for due := int(time.Since(start).Milliseconds()); n < due && c.IsConnectionOpen(); n++ {
				window = append(window, inflight{n, c.Publish("sensors/soak", 1, false, strconv.Itoa(n))})
				settle(100)
			}
		}
		settle(0)
		c.Disconnect(0)
	}
}

// goroutines reads go_goroutines from the gateway's /metrics.
func goroutines(port int) int {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "go_goroutines "); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return -1
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

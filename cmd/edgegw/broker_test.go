package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/wait"
)

// edgegw as the site's broker, SIGKILLed 5 times while 3 devices publish
// with persistent sessions — two with QoS 1, one with QoS 2 — and
// restarted: every message of every device is in the stream exactly once
// (a message stored but not yet acknowledged when edgegw died comes again
// from its device, DUP set, and is recognised by its mark).
func TestEmbeddedBrokerSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("re-execs the test binary")
	}
	srv := natstest.Start(t, nil)
	dir := t.TempDir()
	port := natstest.FreePort(t)
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
  stream:
    create: true
http:
  listen: 127.0.0.1:0
`, dir, port, srv.URL())), 0o600)

	start := func() (*exec.Cmd, *syncBuffer) {
		cmd := edgegwChild("run", "--config", cfgPath)
		logs := &syncBuffer{}
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, logs
	}
	cmd, logs := start()

	const devices, per = 3, 1500
	url := fmt.Sprintf("tcp://127.0.0.1:%d", port)
	var wg sync.WaitGroup
	for d := range devices {
		qos := byte(1)
		if d == 2 {
			qos = 2
		}
		c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("device-%d", d)).
			SetCleanSession(false).SetAutoReconnect(true).SetConnectRetry(true).
			SetConnectRetryInterval(50 * time.Millisecond).SetMaxReconnectInterval(200 * time.Millisecond))
		if tok := c.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
			t.Fatalf("device %d: %v\n%s", d, tok.Error(), logs.String())
		}
		defer c.Disconnect(100)
		wg.Go(func() {
			var inflight []paho.Token
			for i := d * per; i < (d+1)*per; i++ {
				inflight = append(inflight, c.Publish(fmt.Sprintf("sensors/device%d", d), qos, false, strconv.Itoa(i)))
				if len(inflight) == 10 {
					inflight[0].WaitTimeout(time.Minute)
					inflight = inflight[1:]
				}
				time.Sleep(time.Millisecond)
			}
			for _, tok := range inflight {
				tok.WaitTimeout(time.Minute)
			}
		})
	}
	streamCount := func() uint64 { n, _ := natstest.StreamMsgs(srv.URL(), "TELEMETRY"); return n }
	for k := range 5 {
		time.Sleep(600 * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		t.Logf("kill %d: %d messages in the stream", k+1, streamCount())
		cmd, logs = start()
	}
	wg.Wait()
	deadline := time.Now().Add(2 * time.Minute)
	wait.Within(t, time.Until(deadline), "every device's acknowledged messages in the stream", func() bool { return streamCount() >= devices*per })
	// A sentinel after every device's last PUBACK: sent oldest first, it
	// is in the stream only after everything stored before it, a copy
	// included.
	sentinelThrough(t, url, srv.URL(), "sensors/device0", deadline)
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("last run: %v\n%s", err, logs.String())
	}
	drainedBuffer(t, filepath.Join(dir, "buffer.db"))

	seen := map[int]int{}
	for _, m := range streamMessages(t, srv.URL()) {
		if m.data == "sentinel" {
			continue
		}
		n, err := strconv.Atoi(m.data)
		if err != nil {
			t.Fatalf("payload %q", m.data)
		}
		seen[n]++
	}
	bad := 0
	for i := range devices * per {
		if seen[i] != 1 {
			if bad++; bad <= 5 {
				t.Errorf("message %d is in the stream %d times", i, seen[i])
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d messages not in the stream exactly once", bad, devices*per)
	}
}

package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgegw/edgegw/gateway/natstest"
)

// hostileConfig writes a config for edgegw as the site's broker on a free
// loopback port (anonymous devices), routing sensors/#, and returns its
// path, the broker's URL and the data dir.
func hostileConfig(t *testing.T, natsURL, extra string) (cfgPath, url, dir string) {
	t.Helper()
	dir = t.TempDir()
	port := natstest.FreePort(t)
	cfgPath = filepath.Join(dir, "edgegw.yaml")
	text := fmt.Sprintf(`gateway:
  id: gw1
  data_dir: %s
mqtt:
  server:
    listen: 127.0.0.1:%d
    allow_anonymous: true
%s  subscriptions:
    - topic: sensors/#
upstream:
  servers: [%s]
  drain: oldest_first
  stream:
    create: true
http:
  listen: "off"
`, dir, port, extra, natsURL)
	if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath, fmt.Sprintf("tcp://127.0.0.1:%d", port), dir
}

// dialFrom connects to addr (host:port) from the loopback address local.
func dialFrom(local, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	return d.Dial("tcp", addr)
}

// connectHeader is the fixed header of a CONNECT declaring n bytes.
func connectHeader(n int) []byte {
	b := []byte{0x10}
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

// The attack before login: 3,000 connections from 30 addresses,
// each a CONNECT that declares 320,000 bytes (the default max_packet_size)
// followed by 319,000 zero bytes, or one that declares 15,000 and sends
// 14,000, and then nothing. mochi allocated each declared length up front
// and set no deadline: 693 of them OOM-killed edgegw under MemoryMax=256M.
// Now a CONNECT over 16 KiB is refused on its header, at most 100
// connections wait for their login (10 per address), each for 5 s. A
// device connected before the attack publishes QoS 1 readings all along:
// each is in the stream once; the process's peak RSS (VmHWM) stays under
// 64 MiB; and a new device connects once the attack is over.
func TestHostileConnectsBeforeLogin(t *testing.T) {
	if testing.Short() {
		t.Skip("3,000 connections against a child process")
	}
	srv := natstest.Start(t, nil)
	cfgPath, url, _ := hostileConfig(t, srv.URL(), "")
	cmd := edgegwChild("run", "--config", cfgPath)
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := url[len("tcp://"):]

	device := func(id string) paho.Client {
		c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(false).
			SetConnectRetry(true).SetConnectRetryInterval(50 * time.Millisecond).SetAutoReconnect(true))
		if tok := c.Connect(); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
			t.Fatalf("device %s: %v\n%s", id, tok.Error(), logs.String())
		}
		return c
	}
	dev := device("device")
	defer dev.Disconnect(100)

	var published atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if tok := dev.Publish("sensors/device", 1, false, strconv.Itoa(i)); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
				t.Errorf("reading %d: %v", i, tok.Error())
				return
			}
			published.Add(1)
			time.Sleep(5 * time.Millisecond)
		}
	})

	// 30 attacking addresses, 100 connections each.
	var conns []net.Conn
	var mu sync.Mutex
	var attackers sync.WaitGroup
	junk := make([]byte, 319_000)
	for a := range 30 {
		attackers.Go(func() {
			local := fmt.Sprintf("127.0.9.%d", a+1)
			for k := range 100 {
				c, err := dialFrom(local, addr)
				if err != nil {
					continue // refused while the listener is busy: the attack's problem
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
				c.SetWriteDeadline(time.Now().Add(2 * time.Second))
				if k%2 == 0 {
					c.Write(connectHeader(320_000))
					c.Write(junk)
				} else {
					c.Write(connectHeader(15_000))
					c.Write(junk[:14_000])
				}
			}
		})
	}
	attackers.Wait()
	hwm := func() int64 { kb, _ := procStatus(cmd.Process.Pid); return kb["VmHWM"] }
	t.Logf("3,000 hostile connections made; edgegw VmHWM %d KiB, %d readings published so far", hwm(), published.Load())
	mu.Lock()
	for _, c := range conns {
		c.Close()
	}
	mu.Unlock()

	// After the attack, a new device logs in.
	late := device("late-device")
	if tok := late.Publish("sensors/late", 1, false, "late"); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		t.Fatalf("late device: %v", tok.Error())
	}
	late.Disconnect(100)
	close(stop)
	wg.Wait()

	deadline := time.Now().Add(2 * time.Minute)
	sentinelThrough(t, url, srv.URL(), "sensors/device", deadline)
	if peak := hwm(); peak > 64<<10 && !raceEnabled {
		t.Fatalf("edgegw's peak RSS %d KiB is over 64 MiB", peak)
	} else {
		t.Logf("edgegw's peak RSS %d KiB", peak)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("edgegw: %v\n%s", err, logs.String())
	}
	n := int(published.Load())
	seen := map[string]int{}
	for _, m := range streamMessages(t, srv.URL()) {
		seen[m.data]++
	}
	for i := range n {
		if c := seen[strconv.Itoa(i)]; c != 1 {
			t.Fatalf("reading %d of %d is in the stream %d times", i, n, c)
		}
	}
	if seen["late"] != 1 {
		t.Fatal("the late device's reading is not in the stream")
	}
	if !bytes.Contains([]byte(logs.String()), []byte("CONNECT larger than the limit")) {
		t.Fatalf("the refusals were not logged:\n%s", logs.String())
	}
	t.Logf("%d readings, each once", n)
}

// The retained flood: one client publishes 24,000 retained 8 KB
// messages on topics of its own (before: broker-sessions.db grew to
// 151 MB, outside buffer.max_bytes, and every start was OOM-killed while
// mochi loaded it). Now at most 8 MiB of retained payload is kept: the
// rest is delivered, not retained. The sessions file stays small, edgegw
// restarts cleanly with its peak RSS under 64 MiB, a new subscriber gets
// only what was kept, and a device's QoS 1 readings are in the stream
// once throughout.
func TestRetainedFloodIsBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("a flood against a child process")
	}
	srv := natstest.Start(t, nil)
	cfgPath, url, dir := hostileConfig(t, srv.URL(), "")
	start := func() (*syncBuffer, func()) {
		cmd := edgegwChild("run", "--config", cfgPath)
		cmd.Env = append(cmd.Env, os.Getenv("EDGEGW_TEST_CHILD_ENV"))
		var logs syncBuffer
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return &logs, func() {
			if kb, _ := procStatus(cmd.Process.Pid); kb["VmHWM"] > 64<<10 && !raceEnabled {
				t.Errorf("edgegw's peak RSS %d KiB is over 64 MiB", kb["VmHWM"])
			} else {
				t.Logf("edgegw's peak RSS %d KiB", kb["VmHWM"])
			}
			cmd.Process.Signal(syscall.SIGTERM)
			if err := cmd.Wait(); err != nil {
				t.Fatalf("edgegw: %v\n%s", err, logs.String())
			}
		}
	}
	client := func(id string) paho.Client {
		c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(id).
			SetConnectRetry(true).SetConnectRetryInterval(50 * time.Millisecond).SetAutoReconnect(true))
		if tok := c.Connect(); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
			t.Fatalf("%s: %v", id, tok.Error())
		}
		return c
	}
	logs, stop := start()
	dev := client("device")
	flood := client("flood")
	payload := bytes.Repeat([]byte("r"), 8<<10)
	var readings []paho.Token
	for i := range 24_000 {
		tok := flood.Publish(fmt.Sprintf("other/%d", i), 0, true, payload)
		if i%100 == 0 {
			tok.WaitTimeout(time.Minute)
			readings = append(readings, dev.Publish("sensors/device", 1, false, strconv.Itoa(i/100)))
		}
	}
	for i, tok := range readings {
		if !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
			t.Fatalf("reading %d: %v", i, tok.Error())
		}
	}
	flood.Disconnect(100)
	dev.Disconnect(100)
	sentinelThrough(t, url, srv.URL(), "sensors/device", time.Now().Add(2*time.Minute))
	stop()
	if !bytes.Contains([]byte(logs.String()), []byte("retained messages not kept")) {
		t.Fatalf("the bound was not logged:\n%s", logs.String())
	}
	fi, err := os.Stat(filepath.Join(dir, "broker-sessions.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("broker-sessions.db after 24,000 retained 8 KB messages: %d bytes", fi.Size())
	if fi.Size() > 16<<20 {
		t.Fatalf("broker-sessions.db is %d bytes", fi.Size())
	}

	// A clean restart; a new subscriber gets only what was kept. The
	// retained copies come on subscribe, before a message published
	// after the subscription.
	_, stop = start()
	var got atomic.Int64
	done := make(chan struct{})
	sub := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("sub").
		SetConnectRetry(true).SetConnectRetryInterval(50 * time.Millisecond).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			if m.Topic() == "end/x" {
				close(done)
				return
			}
			got.Add(1)
		}))
	if tok := sub.Connect(); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		t.Fatalf("subscriber: %v", tok.Error())
	}
	if tok := sub.Subscribe("other/#", 0, nil); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	// The broker handles one client's packets in order: once this second
	// SUBACK is in, every retained copy of the first is queued, and the
	// message below comes after them.
	if tok := sub.Subscribe("end/#", 0, nil); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	pub := client("end")
	pub.Publish("end/x", 1, false, "end").WaitTimeout(time.Minute)
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("the subscriber never got the message after its retained copies")
	}
	pub.Disconnect(100)
	sub.Disconnect(100)
	if n := got.Load(); n == 0 || n > 4<<20/(8<<10) {
		t.Fatalf("the new subscriber got %d retained messages, want 1..512 (4 MiB of 8 KB)", n)
	} else {
		t.Logf("after the restart a new subscriber got %d retained messages", n)
	}
	stop()
	seen := map[string]int{}
	for _, m := range streamMessages(t, srv.URL()) {
		seen[m.data]++
	}
	for i := range 240 {
		if seen[strconv.Itoa(i)] != 1 {
			t.Fatalf("reading %d is in the stream %d times", i, seen[strconv.Itoa(i)])
		}
	}
}

package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/mqttbroker"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/status"
	"github.com/edgegw/edgegw/gateway/wait"
)

// serverConfigFor makes edgegw the site's broker on a free loopback port
// (no mqtt.broker), routing sensors/# upstream; it returns the config and
// the URL devices connect to.
func serverConfigFor(t testing.TB, natsURL, server, extra string) (*config.Config, string) {
	t.Helper()
	dir := t.TempDir()
	port := natstest.FreePort(t)
	text := fmt.Sprintf(`
gateway:
  id: gw1
  data_dir: %s
mqtt:
  server:
    listen: 127.0.0.1:%d
%s
  subscriptions:
    - topic: sensors/#
      subject: telemetry.{gateway}.{topic}
upstream:
  servers: [%s]
  ack_timeout: 2s
  stream:
    name: TELEMETRY
    subjects: [telemetry.>]
    create: true
%s`, dir, port, server, natsURL, extra)
	path := filepath.Join(dir, "edgegw.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, fmt.Sprintf("tcp://127.0.0.1:%d", port)
}

// A device's QoS 1 and QoS 2 PUBLISH is acknowledged only once the buffer
// holds it: every time a PUBACK (or, for QoS 2, the PUBCOMP after the
// PUBREC) reaches the device, the buffer has committed at least as many
// events. With the uplink down, a local subscriber still receives
// everything; once it is back, the stream holds every message once.
func TestEmbeddedBrokerAcksAfterTheCommit(t *testing.T) {
	srv := natstest.Start(t, nil)
	srv.Shutdown()
	cfg, url := serverConfigFor(t, srv.URL(), "    allow_anonymous: true", "")
	g := startGateway(t, cfg)

	var local atomic.Int64
	sub := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("dashboard").
		SetDefaultPublishHandler(func(paho.Client, paho.Message) { local.Add(1) }))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("local subscriber: %v", tok.Error())
	}
	defer sub.Disconnect(100)
	if tok := sub.Subscribe("sensors/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}

	accepted := map[int]bool{}
	for qos, from := range map[byte]int{1: 0, 2: 1000} {
		dev := newPublisher(t, url, fmt.Sprintf("device-qos%d", qos), false)
		var toks []paho.Token
		for i := from; i < from+300; i++ {
			toks = append(toks, dev.c.Publish(topicOf(i), qos, false, payloadOf(i)))
		}
		for k, tok := range toks {
			if !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
				t.Fatalf("QoS %d message %d: %v", qos, k, tok.Error())
			}
			// Acknowledged ones, of this device and the one before.
			if acked, appended := uint64(len(accepted)+1), g.Stats().Buffer.Appended; appended < acked {
				t.Fatalf("QoS %d: %d messages acknowledged to the device, %d committed: an ack came before its commit", qos, acked, appended)
			}
			accepted[from+k] = true
		}
	}
	wait.For(t, "the local subscriber to receive all 600", func() bool { return local.Load() >= 600 })

	srv.Restart()
	wait.For(t, "600 messages upstream", func() bool { return streamMsgs(t, srv.URL()) >= 600 })
	checkExactlyOnce(t, srv.URL(), accepted)
	var st status.SourceStatus
	for _, s := range g.Status().Sources {
		if s.Kind == status.KindMQTTServer {
			st = s
		}
	}
	if !st.Up || st.Ingested != 600 {
		t.Fatalf("broker source status %+v", st)
	}
}

// With when_full: reject and the uplink down, the buffer fills: an MQTT
// 3.1.1 device then gets no PUBACK for what is not stored (it is
// disconnected, and sends again when it is back), and the buffer stays
// within its bound. Once the uplink drains the buffer, every message the
// device sent is in the stream once.
//
// The device's own view cannot be the check: paho.mqtt.golang completes a
// publish token without error when it re-sends the message after a
// reconnect (messageIds.claimID calls flowComplete on the old token), so
// the device "sees" success for messages the broker never acknowledged.
// The broker's side is checked instead: every PUBACK it wrote followed the
// commit (TestEmbeddedBrokerAcksAfterTheCommit), it refused the rest, and
// nothing is missing or twice at the end.
func TestEmbeddedBrokerFullBufferGivesNoSuccess(t *testing.T) {
	srv := natstest.Start(t, nil)
	srv.Shutdown()
	cfg, url := serverConfigFor(t, srv.URL(), "    allow_anonymous: true\n  max_payload: 8KiB", "buffer:\n  max_bytes: 64KiB\n  when_full: reject\n")
	g := startGateway(t, cfg)

	dev := newPublisher(t, url, "device", false)
	done := make(chan struct{})
	go func() {
		defer close(done)
		dev.publish(0, 1500, 20, 0) // about 150 KB: more than the buffer holds
	}()
	broker := func() status.SourceStatus {
		for _, s := range g.Status().Sources {
			if s.Kind == status.KindMQTTServer {
				return s
			}
		}
		return status.SourceStatus{}
	}
	wait.For(t, "the buffer to refuse messages", func() bool { return broker().StoreErrors > 2 })
	if st := g.Stats().Buffer; st.Bytes > 64<<10 || st.Rejected == 0 {
		t.Fatalf("buffer %+v: want refusals and at most 64 KiB held", st)
	}
	srv.Restart()
	<-done
	all := map[int]bool{}
	for i := range 1500 {
		all[i] = true
	}
	wait.For(t, "1500 messages upstream", func() bool { return streamMsgs(t, srv.URL()) >= 1500 })
	checkExactlyOnce(t, srv.URL(), all)
	if st := broker(); st.Ingested != 1500 {
		t.Fatalf("broker source %+v: want 1500 stored, each once", st)
	}
}

// Users from a users file with bcrypt hashes: a bad password is refused;
// a publish outside the user's ACL is not stored (an MQTT 3.1.1 client is
// disconnected: it has no reason codes); a subscription outside it is
// refused in the SUBACK; what the ACL allows is stored.
func TestEmbeddedBrokerUsersAndACL(t *testing.T) {
	srv := natstest.Start(t, nil)
	hash, err := mqttbroker.HashPassword("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(t.TempDir(), "users.yaml")
	os.WriteFile(users, []byte(fmt.Sprintf("users:\n  - name: dev1\n    password_hash: %q\n    publish: [sensors/room1/#]\n    subscribe: [commands/dev1/#]\n", hash)), 0o600)
	cfg, url := serverConfigFor(t, srv.URL(), "    users_file: "+users, "")
	g := startGateway(t, cfg)

	connect := func(id, user, pass string) (paho.Client, error) {
		c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(id).SetUsername(user).SetPassword(pass).SetAutoReconnect(false))
		tok := c.Connect()
		if !tok.WaitTimeout(10 * time.Second) {
			return nil, fmt.Errorf("no CONNACK")
		}
		return c, tok.Error()
	}
	if _, err := connect("intruder", "dev1", "wrong"); err == nil || !strings.Contains(err.Error(), "bad user name or password") && !strings.Contains(err.Error(), "not Authorized") {
		t.Fatalf("bad password: %v, want refused", err)
	}
	c, err := connect("dev1", "dev1", "s3cret")
	if err != nil {
		t.Fatalf("good password: %v", err)
	}
	defer c.Disconnect(100)
	if tok := c.Subscribe("sensors/#", 1, nil); tok.WaitTimeout(10 * time.Second) {
		if code := tok.(*paho.SubscribeToken).Result()["sensors/#"]; code != 0x80 {
			t.Fatalf("subscription outside the ACL: SUBACK code %#x, want 0x80", code)
		}
	}
	if tok := c.Publish("sensors/room1/temp", 1, false, payloadOf(1)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("allowed publish: %v", tok.Error())
	}
	tok := c.Publish("sensors/room2/temp", 1, false, payloadOf(2))
	tok.WaitTimeout(3 * time.Second)
	wait.For(t, "the denied client disconnected", func() bool { return !c.IsConnectionOpen() })
	// A sentinel, published after the denied message was refused: once
	// it is in the stream, message 2 would be too.
	c2, err := connect("dev1-sentinel", "dev1", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Disconnect(100)
	if tok := c2.Publish(topicOf(11), 1, false, payloadOf(11)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("sentinel: %v", tok.Error())
	}
	wait.For(t, "the sentinel upstream", func() bool { count, _ := streamContents(t, srv.URL()); return count[11] == 1 })
	if count, _ := streamContents(t, srv.URL()); count[1] != 1 || count[2] != 0 {
		t.Fatalf("stream %v: want message 1 once and message 2 never", count)
	}
	_ = g
}

// MQTT 5 devices get the reason: a publish the full buffer (when_full:
// reject) refuses gets PUBACK (QoS 1) or PUBREC (QoS 2) with 0x97, quota
// exceeded, never a success; once the uplink drains the buffer, the same
// publish succeeds. A payload over mqtt.max_payload gets 0x99.
func TestEmbeddedBrokerMQTT5ReasonCodes(t *testing.T) {
	srv := natstest.Start(t, nil)
	srv.Shutdown()
	cfg, url := serverConfigFor(t, srv.URL(), "    allow_anonymous: true\n  max_payload: 8KiB", "buffer:\n  max_bytes: 64KiB\n  when_full: reject\n")
	g := startGateway(t, cfg)

	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "tcp://"))
	if err != nil {
		t.Fatal(err)
	}
	c := paho5.NewClient(paho5.ClientConfig{ClientID: "device-v5", Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if ca, err := c.Connect(ctx, &paho5.Connect{ClientID: "device-v5", KeepAlive: 30, CleanStart: true}); err != nil || ca.ReasonCode != 0 {
		t.Fatalf("connect: %v %+v", err, ca)
	}
	defer c.Disconnect(&paho5.Disconnect{})
	publish := func(i int, qos byte) (byte, error) {
		r, err := c.Publish(ctx, &paho5.Publish{Topic: topicOf(i), QoS: qos, Payload: payloadOf(i)})
		if r == nil {
			return 0, err
		}
		return r.ReasonCode, err
	}
	stored := map[int]bool{}
	full := -1
	for i := 0; i < 2000 && full < 0; i++ {
		code, err := publish(i, byte(1+i%2))
		switch {
		case code == 0 && err == nil:
			stored[i] = true
		case code == 0x97:
			full = i
		default:
			t.Fatalf("publish %d: code %#x, %v", i, code, err)
		}
	}
	if full < 0 || len(stored) == 0 {
		t.Fatalf("the buffer never said full (%d stored)", len(stored))
	}
	if code, _ := publish(full+1, 2); code != 0x97 {
		t.Fatalf("QoS 2 into a full buffer: PUBREC code %#x, want 0x97", code)
	}
	if r, err := c.Publish(ctx, &paho5.Publish{Topic: topicOf(9999), QoS: 1, Payload: make([]byte, 9<<10)}); r == nil || r.ReasonCode != 0x99 {
		t.Fatalf("payload over max_payload: %+v, %v; want 0x99", r, err)
	}
	if appended := g.Stats().Buffer.Appended; appended != uint64(len(stored)) {
		t.Fatalf("%d stored by the buffer, %d acknowledged as stored", appended, len(stored))
	}
	srv.Restart()
	wait.For(t, "the buffer to drain", func() bool { return g.Stats().Buffer.Events == 0 })
	for _, i := range []int{full, full + 1} {
		if code, err := publish(i, 1); code != 0 || err != nil {
			t.Fatalf("publish %d again after the drain: %#x %v", i, code, err)
		}
		stored[i] = true
	}
	wait.For(t, "everything upstream", func() bool { return streamMsgs(t, srv.URL()) >= uint64(len(stored)) })
	checkExactlyOnce(t, srv.URL(), stored)
}

// A local subscriber's persistent session (clean session off) survives a
// restart of edgegw: after it, the subscriber reconnects without
// subscribing again and still receives (the sessions are kept in
// data_dir/broker-sessions.db).
func TestEmbeddedBrokerKeepsLocalSessions(t *testing.T) {
	srv := natstest.Start(t, nil)
	cfg, url := serverConfigFor(t, srv.URL(), "    allow_anonymous: true", "")
	cfg.HTTP.Listen = "off"
	g, err := gateway.New(cfg, gateway.Options{})
	if err != nil {
		t.Fatal(err)
	}
	stop := runGateway(t, g)
	got := make(chan string, 16)
	o := paho.NewClientOptions().AddBroker(url).SetClientID("dashboard").SetCleanSession(false).
		SetAutoReconnect(true).SetConnectRetry(true).SetMaxReconnectInterval(100 * time.Millisecond).
		SetConnectRetryInterval(100 * time.Millisecond).
		// A reconnect that reaches the stopping broker may get no CONNACK:
		// give up on it after 2s, not paho's default 30s.
		SetConnectTimeout(2 * time.Second).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) })
	sub := paho.NewClient(o)
	if tok := sub.Connect(); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer sub.Disconnect(100)
	if tok := sub.Subscribe("alerts/#", 1, nil); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	stop()

	g2, err := gateway.New(cfg, gateway.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(runGateway(t, g2))
	wait.For(t, "the subscriber back", func() bool { return sub.IsConnectionOpen() })
	dev := newPublisher(t, url, "device", true)
	if tok := dev.c.Publish("alerts/door", 1, false, "open"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	select {
	case m := <-got:
		if m != "open" {
			t.Fatalf("got %q", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the subscriber's session did not survive the restart: nothing received")
	}
}

// A retained message a device publishes is stored upstream like any other
// and kept by the broker for subscribers that come later.
func TestEmbeddedBrokerRetains(t *testing.T) {
	srv := natstest.Start(t, nil)
	cfg, url := serverConfigFor(t, srv.URL(), "    allow_anonymous: true", "")
	startGateway(t, cfg)
	dev := newPublisher(t, url, "device", true)
	if tok := dev.c.Publish("sensors/lobby/state", 1, true, "on"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	got := make(chan string, 1)
	sub := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("late"))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer sub.Disconnect(100)
	sub.Subscribe("sensors/lobby/#", 1, func(_ paho.Client, m paho.Message) {
		if m.Retained() {
			got <- string(m.Payload())
		}
	}).WaitTimeout(10 * time.Second)
	select {
	case v := <-got:
		if v != "on" {
			t.Fatalf("retained %q", v)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no retained message for a later subscriber")
	}
	wait.For(t, "the message upstream", func() bool { return streamMsgs(t, srv.URL()) == 1 })
}

// The WebSocket listener: a device over ws:// is stored like any other.
func TestEmbeddedBrokerWebSocket(t *testing.T) {
	srv := natstest.Start(t, nil)
	port := natstest.FreePort(t)
	cfg, _ := serverConfigFor(t, srv.URL(), fmt.Sprintf("    allow_anonymous: true\n    websocket: 127.0.0.1:%d", port), "")
	startGateway(t, cfg)
	deliverOne(t, paho.NewClientOptions().AddBroker(fmt.Sprintf("ws://127.0.0.1:%d/", port)).SetClientID("ws-device"), srv.URL())

	// Its port taken: the start fails and says so (mochi's own WebSocket
	// listener bound it later, only logged the failure, and the broker
	// reported itself listening).
	cfg2, _ := serverConfigFor(t, srv.URL(), fmt.Sprintf("    allow_anonymous: true\n    websocket: 127.0.0.1:%d", port), "")
	g, err := gateway.New(cfg2, gateway.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	wait.For(t, "the start to fail", func() bool {
		for _, s := range g.Status().Sources {
			if s.Kind == status.KindMQTTServer && s.Up {
				t.Fatal("the broker reports itself listening without its WebSocket port")
			}
		}
		return len(done) > 0
	})
	if err, want := <-done, fmt.Sprintf("127.0.0.1:%d: bind: address already in use (is another broker on that port?)", port); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("the WebSocket port taken: %v, want %q", err, want)
	}
}

// A disk that fills up for real (a 4 MiB tmpfs; needs root, as .ci/run
// has): with when_full: reject and max_bytes larger than the disk, the
// commits fail and the device gets no PUBACK for what is not stored;
// when space returns, ingest resumes by itself, and every reading the
// device was told was stored reaches the stream. With drop_oldest and
// max_bytes under the disk, the oldest are dropped and counted and the
// file stays on the disk. The gateway never stops.
func TestDiskFullOnARealFileSystem(t *testing.T) {
	for _, tc := range []struct {
		policy, maxBytes string
	}{{"reject", "64MiB"}, {"drop_oldest", "1MiB"}} {
		t.Run(tc.policy, func(t *testing.T) {
			disk := t.TempDir()
			if err := syscall.Mount("tmpfs", disk, "tmpfs", 0, "size=4m"); err != nil {
				t.Skipf("cannot mount a 4 MiB tmpfs to fill (needs root): %v", err)
			}
			t.Cleanup(func() { syscall.Unmount(disk, syscall.MNT_DETACH) })
			srv := natstest.Start(t, nil)
			srv.Shutdown()
			cfg, url := serverConfigFor(t, srv.URL(), "    allow_anonymous: true\n  max_payload: 16KiB",
				fmt.Sprintf("buffer:\n  path: %s/buffer.db\n  max_bytes: %s\n  when_full: %s\n", disk, tc.maxBytes, tc.policy))
			g := startGateway(t, cfg)

			acked := map[int]bool{}
			c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("device").SetCleanSession(true).SetAutoReconnect(false))
			if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatal(tok.Error())
			}
			defer c.Disconnect(100)
			payload := func(i int) []byte {
				return append(payloadOf(i), bytes.Repeat([]byte("x"), 10_000)...) // 10 KB each
			}
			publish := func(i int) bool {
				tok := c.Publish(topicOf(i), 1, false, payload(i))
				ok := tok.WaitTimeout(3*time.Second) && tok.Error() == nil
				if ok {
					acked[i] = true
				}
				return ok
			}
			i := 0
			for ; i < 800; i++ { // 8 MB into a 4 MiB disk
				if !publish(i) && tc.policy == "reject" {
					break
				}
			}
			st := g.Stats().Buffer
			if tc.policy == "drop_oldest" {
				if st.DroppedFull == 0 || len(acked) != 800 {
					t.Fatalf("drop_oldest: %d acked, buffer %+v: want all stored and the oldest dropped, counted", len(acked), st)
				}
				return
			}
			if i == 800 || st.CommitError == "" || !strings.Contains(st.CommitError, "disk full") {
				t.Fatalf("reject: %d published, buffer %+v: want a commit error naming the full disk", i, st)
			}
			if err := syscall.Mount("tmpfs", disk, "tmpfs", syscall.MS_REMOUNT, "size=64m"); err != nil {
				t.Fatal(err)
			}
			// The device was disconnected (3.1.1, no success); it comes
			// back and ingest resumes by itself.
			c.Disconnect(0)
			c = paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("device").SetCleanSession(true).SetAutoReconnect(false))
			wait.For(t, "the device back", func() bool { tok := c.Connect(); return tok.WaitTimeout(2*time.Second) && tok.Error() == nil })
			for j := i; j < i+20; j++ {
				if !publish(j) {
					t.Fatalf("publish %d after space returned failed", j)
				}
			}
			srv.Restart()
			wait.For(t, "everything acknowledged upstream", func() bool { return streamMsgs(t, srv.URL()) >= uint64(len(acked)) })
			count := streamNs(t, srv.URL())
			for n := range acked {
				if count[n] != 1 {
					t.Fatalf("acknowledged reading %d is in the stream %d times", n, count[n])
				}
			}
		})
	}
}

// streamNs counts the stream's messages by the n their payload starts
// with ({"n":N,...}).
func streamNs(t testing.TB, url string) map[int]int {
	t.Helper()
	count := map[int]int{}
	for _, m := range natstest.Messages(t, url) {
		var n int
		if _, err := fmt.Sscanf(string(m.Data()), `{"n":%d`, &n); err != nil {
			t.Fatalf("message %.40q is not one of ours", m.Data())
		}
		count[n]++
	}
	return count
}

// The broker's limits from config: max_connections refuses a device over
// it, max_packet_size disconnects a device that sends a larger packet
// (and stores nothing of it), and what was within the limits is stored.
func TestEmbeddedBrokerLimits(t *testing.T) {
	srv := natstest.Start(t, nil)
	cfg, url := serverConfigFor(t, srv.URL(), "    allow_anonymous: true\n    max_connections: 2\n    max_packet_size: 2KiB", "")
	startGateway(t, cfg)
	connect := func(id string) (paho.Client, error) {
		c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(id).SetAutoReconnect(false))
		tok := c.Connect()
		if !tok.WaitTimeout(10 * time.Second) {
			return c, fmt.Errorf("no CONNACK")
		}
		return c, tok.Error()
	}
	a, err := connect("dev-a")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Disconnect(100)
	b, err := connect("dev-b")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Disconnect(100)
	if c, err := connect("dev-c"); err == nil {
		c.Disconnect(100)
		t.Fatal("a third device connected past max_connections: 2")
	}

	if tok := a.Publish("sensors/a", 1, false, payloadOf(1)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("a small publish: %v", tok.Error())
	}
	big := append(payloadOf(2), make([]byte, 4<<10)...)
	b.Publish("sensors/b", 1, false, big).WaitTimeout(3 * time.Second)
	wait.For(t, "the device over max_packet_size disconnected", func() bool { return !b.IsConnectionOpen() })
	// A sentinel after the oversized packet was refused.
	if tok := a.Publish("sensors/a", 1, false, payloadOf(3)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("sentinel: %v", tok.Error())
	}
	payloads := func() map[string]int {
		m := map[string]int{}
		for _, msg := range natstest.Messages(t, srv.URL()) {
			m[string(msg.Data())]++
		}
		return m
	}
	wait.For(t, "the sentinel upstream", func() bool { return payloads()[string(payloadOf(3))] == 1 })
	if got := payloads(); len(got) != 2 || got[string(payloadOf(1))] != 1 {
		t.Fatalf("the stream holds %v, want only the two within the limit", got)
	}
}

package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/forward"
	"github.com/edgegw/edgegw/gateway/mqtttest"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/wait"
)

// Messages that together are larger than buffer.max_bytes (20 × 200 KB
// against 1 MiB, the uplink down) must not stop ingest: batches are cut to
// fit, drop_oldest keeps the newest, and everything after them is stored.
func TestBatchLargerThanMaxBytesDoesNotStopIngest(t *testing.T) {
	broker := mqtttest.Start(t, mqtttest.Options{})
	srv := natstest.Start(t, nil)
	srv.Shutdown() // the uplink is down throughout
	cfg, _ := configFor(t, broker.URL(), srv.URL(), "buffer:\n  max_bytes: 1MiB\n")
	g := startGateway(t, cfg)

	pub := newPublisher(t, broker.URL(), "pub", true)
	big := bytes.Repeat([]byte("x"), 200_000)
	// All in flight at once, so the gateway takes them as one batch.
	var toks []paho.Token
	for i := range 20 {
		toks = append(toks, pub.c.Publish(topicOf(i), 1, false, big))
	}
	for i, tok := range toks {
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %d: %v", i, tok.Error())
		}
	}
	pub.publish(100, 110, 10, 0)
	wait.For(t, "all 30 messages committed", func() bool { return g.Stats().MQTT.Committed == 30 })
	st := g.Stats().Buffer
	if st.Bytes > 1<<20 || st.DroppedFull == 0 || st.Appended != 30 {
		t.Fatalf("buffer %+v: want 30 appended, the oldest dropped to stay within 1 MiB", st)
	}
	// Data lost on purpose is what operators alert on: the metric says it.
	if v := scrapeMetrics(t, g).must(t, "edgegw_buffer_dropped_total", "reason", "full"); v != float64(st.DroppedFull) {
		t.Fatalf("edgegw_buffer_dropped_total{reason=full} = %v, buffer dropped %d", v, st.DroppedFull)
	}
}

// Events older than buffer.max_age are dropped, and the metric says so.
func TestMaxAgeDropsAreCounted(t *testing.T) {
	broker := mqtttest.Start(t, mqtttest.Options{})
	srv := natstest.Start(t, nil)
	srv.Shutdown()
	cfg, _ := configFor(t, broker.URL(), srv.URL(), "buffer:\n  max_age: 300ms\n")
	g := startGateway(t, cfg)
	newPublisher(t, broker.URL(), "pub", true).publish(0, 5, 5, 0)
	wait.For(t, "5 events dropped for age, in the metric", func() bool {
		v, _ := scrapeMetrics(t, g).value("edgegw_buffer_dropped_total", "reason", "age")
		return v == 5
	})
	if st := g.Stats().Buffer; st.Events != 0 || st.DroppedAge != 5 {
		t.Fatalf("buffer %+v", st)
	}
}

// One message whose event alone is larger than buffer.max_bytes can never
// be stored: it is set aside in the dead-letter lane, counted for its
// source, and the messages behind it are stored.
func TestEventLargerThanMaxBytesIsSetAside(t *testing.T) {
	broker := mqtttest.Start(t, mqtttest.Options{})
	srv := natstest.Start(t, nil)
	srv.Shutdown()
	cfg, _ := configFor(t, broker.URL(), srv.URL(), "")
	cfg.Buffer.MaxBytes, cfg.MQTT.MaxPayload = 4<<10, 3<<10 // as config check allows
	g := startGateway(t, cfg)

	pub := newPublisher(t, broker.URL(), "pub", true)
	long := "sensors/" + strings.Repeat("l", 600)
	// All in flight at once, so the gateway may take them as one batch.
	toks := []paho.Token{pub.c.Publish(long, 1, false, bytes.Repeat([]byte("x"), 3000))}
	for i := range 5 {
		toks = append(toks, pub.c.Publish(topicOf(i), 1, false, payloadOf(i)))
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	wait.For(t, "the 5 small messages committed", func() bool { return g.Stats().Buffer.Appended == 5 })
	st := g.Status()
	if st.Buffer.DeadLetters != 1 || st.Sources[0].SetAside != 1 {
		t.Fatalf("buffer %+v, source %+v: want the large one set aside", st.Buffer, st.Sources[0])
	}
}

// A buffer file with a damaged page (bit rot on an SD card) costs the
// damaged file, never the service: the gateway starts on a fresh buffer
// holding what was salvaged, and says so in /status and the metrics.
func TestDamagedBufferFileIsQuarantinedAndReported(t *testing.T) {
	broker := mqtttest.Start(t, mqtttest.Options{})
	srv := natstest.Start(t, nil)
	srv.Shutdown()
	cfg, _ := configFor(t, broker.URL(), srv.URL(), "")
	q, err := buffer.Open(cfg.Buffer.Path, nil)
	if err != nil {
		t.Fatal(err)
	}
	batch := make([][]byte, 20000)
	for i := range batch {
		batch[i] = []byte(fmt.Sprintf("event %d", i))
	}
	if _, err := q.Append(context.Background(), batch...); err != nil {
		t.Fatal(err)
	}
	q.Close()
	f, err := os.OpenFile(cfg.Buffer.Path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0xff, 0xff}, 3*16384+10) // the reproduction
	f.Close()

	g := startGateway(t, cfg)
	st := g.Status().Buffer
	if st.Quarantined != 1 || !strings.Contains(st.LastQuarantine, ".corrupt-") || st.Events == 0 {
		t.Fatalf("buffer status %+v: want the file quarantined, reported, and events salvaged", st)
	}
	if v := scrapeMetrics(t, g).must(t, "edgegw_buffer_quarantined_total"); v != 1 {
		t.Fatalf("edgegw_buffer_quarantined_total = %v", v)
	}
}

// 1000 distinct 60 KB topics that map to no subject: each is counted, the
// log stays small (a line per topic took 65 MB), and a message after them
// flows.
func TestHostileTopicFloodKeepsTheLogSmall(t *testing.T) {
	broker := mqtttest.Start(t, mqtttest.Options{})
	srv := natstest.Start(t, nil)
	cfg, _ := configFor(t, broker.URL(), srv.URL(), "")
	var logs syncLog
	cfg.HTTP.Listen = "127.0.0.1:0"
	g, _ := gateway.New(cfg, gateway.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	t.Cleanup(runGateway(t, g))
	wait.For(t, "the gateway to subscribe", func() bool { return g.Stats().MQTT.Subscribed })
	pub := newPublisher(t, broker.URL(), "pub", true)
	const n = 1000
	long := strings.Repeat("x", 60_000) // a subject over NATS' limits: unmappable
	var toks []paho.Token
	for i := range n {
		toks = append(toks, pub.c.Publish(fmt.Sprintf("sensors/%d/%s", i, long), 1, false, "v"))
		if len(toks) == 100 {
			for _, tok := range toks {
				tok.WaitTimeout(10 * time.Second)
			}
			toks = toks[:0]
		}
	}
	wait.For(t, "every hostile topic counted", func() bool { return g.Stats().MQTT.Unmappable == n })
	if size := len(logs.String()); size > 20_000 {
		t.Fatalf("the log grew %d bytes for %d dropped topics", size, n)
	}
	if lines := strings.Count(logs.String(), "message dropped"); lines < 1 || lines > 12 {
		t.Fatalf("%d 'message dropped' lines, want 1 to 12", lines)
	}
}

// Retained copies the broker sends on every (re)subscribe are the last
// known values, not new readings: they are skipped and counted, start
// after start; a subscription with retained: true forwards them, marked.
// A message published (retained or not) while subscribed is live.
func TestRetainedCopiesAreNotNewReadings(t *testing.T) {
	broker := mqtttest.Start(t, mqtttest.Options{})
	srv := natstest.Start(t, nil)
	pub := newPublisher(t, broker.URL(), "pub", true)
	for i := range 3 {
		pub.c.Publish(fmt.Sprintf("sensors/r%d", i), 1, true, "last known").WaitTimeout(10 * time.Second)
	}
	cfg, _ := configFor(t, broker.URL(), srv.URL(), "")
	cfg.HTTP.Listen = "127.0.0.1:0"
	for start := range 3 {
		g, _ := gateway.New(cfg, gateway.Options{})
		stop := runGateway(t, g)
		wait.For(t, "the gateway to subscribe", func() bool { return g.Stats().MQTT.Subscribed })
		want := 3.0 // r0..r2; from the second start live0 too, retained since
		if start > 0 {
			want = 4
		}
		wait.For(t, "the retained copies skipped", func() bool {
			v, _ := scrapeMetrics(t, g).value("edgegw_source_dropped_total", "source", "mqtt", "reason", "retained")
			return v == want
		})
		pub.c.Publish(fmt.Sprintf("sensors/live%d", start), 1, start == 0, "live").WaitTimeout(10 * time.Second)
		wait.For(t, "the live one in the stream", func() bool { return streamMsgs(t, srv.URL()) == uint64(start+1) })
		stop()
	}

	// Asked for, they are forwarded, marked.
	cfg2, _ := configFor(t, broker.URL(), srv.URL(), "")
	cfg2.Gateway.ID = "gw2"
	cfg2.MQTT.ClientID = "edgegw-gw2"
	cfg2.MQTT.Subscriptions[0].Retained = true
	cfg2.MQTT.Subscriptions[0].Subject = "telemetry.gw2.{topic}"
	g2 := startGateway(t, cfg2)
	// r0..r2 and live0 (published retained) are retained now: 4.
	wait.For(t, "the retained copies forwarded", func() bool { return g2.Stats().Forward.Acked == 4 })
	nc, _ := nats.Connect(srv.URL())
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, _ := js.Stream(ctx, "TELEMETRY")
	m, err := s.GetLastMsgForSubject(ctx, "telemetry.gw2.sensors.r1")
	if err != nil || m.Header.Get(forward.HeaderRetained) != "true" {
		t.Fatalf("retained copy: %v, headers %v", err, m.Header)
	}
	m, err = s.GetLastMsgForSubject(ctx, "telemetry.gw1.sensors.live1")
	if err != nil || m.Header.Get(forward.HeaderRetained) != "" {
		t.Fatalf("live reading marked retained: %v %v", err, m.Header)
	}
}

// A full disk: the buffer's commits fail, /readyz says so (it said ready),
// and once there is room again the gateway is ready and stores again.
// It mounts a small tmpfs, so it needs root (as .ci/run has).
func TestFullDiskIsNotReady(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=4m"); err != nil {
		t.Skipf("cannot mount a 4 MiB tmpfs to fill (needs root): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	broker := mqtttest.Start(t, mqtttest.Options{})
	srv := natstest.Start(t, nil)
	srv.Shutdown()
	cfg, _ := configFor(t, broker.URL(), srv.URL(), "")
	cfg.Buffer.Path = filepath.Join(dir, "buffer.db")
	g := startGateway(t, cfg)

	pub := newPublisher(t, broker.URL(), "pub", true)
	payload := bytes.Repeat([]byte("x"), 100_000)
	var code int
	var body string
	for i := 0; ; i++ {
		pub.c.Publish(topicOf(i), 1, false, payload).WaitTimeout(10 * time.Second)
		if code, body = get(t, g, "/readyz"); code != http.StatusOK {
			break
		}
		if i > 200 {
			t.Fatalf("200 × 100 KB into a 4 MiB disk and still %d %s", code, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "buffer cannot commit") || !strings.Contains(body, "disk full") {
		t.Fatalf("/readyz with a full disk: %d %s", code, body)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_REMOUNT, "size=64m"); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "ready again once there is room", func() bool { c, _ := get(t, g, "/readyz"); return c == http.StatusOK })
}

// A stream deleted under a running gateway: it keeps buffering, and
// /readyz says the upstream refuses its events until the stream is back.
func TestUpstreamConfigErrorIsNotReady(t *testing.T) {
	broker := mqtttest.Start(t, mqtttest.Options{})
	srv := natstest.Start(t, nil)
	cfg, _ := configFor(t, broker.URL(), srv.URL(), "")
	cfg.Upstream.Stream.Create = false
	js, scfg := telemetryStream(t, srv.URL())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	g := startGateway(t, cfg)
	pub := newPublisher(t, broker.URL(), "pub", true)
	pub.publish(0, 1, 1, 0)
	wait.For(t, "the first message delivered", func() bool { return g.Stats().Forward.Acked == 1 })
	if err := js.DeleteStream(ctx, "TELEMETRY"); err != nil {
		t.Fatal(err)
	}
	pub.publish(1, 2, 1, 0)
	wait.For(t, "/readyz to say the upstream refuses", func() bool {
		code, body := get(t, g, "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "upstream refuses") && strings.Contains(body, "not found")
	})
	if _, err := js.CreateStream(ctx, scfg); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "ready again with the stream back", func() bool { c, _ := get(t, g, "/readyz"); return c == http.StatusOK && g.Stats().Forward.Acked == 2 })
}

// PUBACKs lost on the way to the broker (the link drops right after the
// gateway committed and acknowledged): the broker sends those messages
// again with DUP set, and the buffer's marks keep them from being stored
// twice. Plain go test, on mochi; .ci/run does the same against mosquitto
// restarts (TestBrokerRestartsDuringIngest).
func TestLostPubacksAreNotStoredTwice(t *testing.T) {
	if mqtttest.Mosquitto() {
		t.Skip("the lost PUBACKs are a mochi hook")
	}
	lose := &mqtttest.LosePubacks{Client: "edgegw-gw1", Count: 3}
	broker := mqtttest.Start(t, mqtttest.Options{LosePubacks: lose})
	srv := natstest.Start(t, nil)
	cfg, _ := configFor(t, broker.URL(), srv.URL(), "")
	g := startGateway(t, cfg)
	pub := newPublisher(t, broker.URL(), "pub", true)
	const n = 200
	pub.publish(0, n, 20, time.Millisecond)
	wait.For(t, "the lost PUBACKs", func() bool { return lose.Lost() == 3 })
	// mochi itself loses a message now and then across a client's
	// reconnects (docs/mqtt.md): judge copies, not losses (the mosquitto
	// tests judge those), once a sentinel says every redelivery is in.
	sentinel(t, pub, g, srv.URL())
	count, _ := streamContents(t, srv.URL())
	if len(count) < n*9/10 {
		t.Fatalf("only %d of %d messages in the stream", len(count), n)
	}
	for m, c := range count {
		if c > 1 {
			t.Errorf("message %d is in the stream %d times", m, c)
		}
	}
	if d := g.Stats().Duplicates; d == 0 {
		t.Fatal("no redelivered copy was seen: the test did not test the marks")
	}
}

// Ack after commit: messages the buffer refuses (full, when_full: reject,
// the uplink down) are not PUBACKed, so the broker keeps them; a gateway
// restarted with room stores every one. A gateway that acknowledged on
// arrival would have lost them.
func TestRefusedMessagesStayAtTheBroker(t *testing.T) {
	broker := mqtttest.Start(t, mqtttest.Options{})
	srv := natstest.Start(t, nil)
	srv.Shutdown()
	cfg, _ := configFor(t, broker.URL(), srv.URL(), "")
	cfg.Buffer.MaxBytes, cfg.Buffer.WhenFull, cfg.MQTT.MaxPayload = 64<<10, "reject", 16<<10 // as config check allows
	g, _ := gateway.New(cfg, gateway.Options{})
	stop := runGateway(t, g)
	wait.For(t, "the gateway to subscribe", func() bool { return g.Stats().MQTT.Subscribed })
	pub := newPublisher(t, broker.URL(), "pub", false)
	const n = 20
	for i := range n {
		pub.c.Publish(topicOf(i), 1, false, append(bytes.Repeat([]byte("x"), 10_000), payloadOf(i)...)).WaitTimeout(10 * time.Second)
	}
	wait.For(t, "the buffer to refuse", func() bool { return g.Stats().MQTT.Retries > 0 })
	if st := g.Stats(); st.Buffer.Events >= n {
		t.Fatalf("the buffer took all %d: %+v", n, st.Buffer)
	}
	stop()

	srv.Restart()
	cfg.Buffer.MaxBytes = 1 << 20
	g = startGateway(t, cfg)
	wait.For(t, "all of them in the stream", func() bool { return streamMsgs(t, srv.URL()) >= n })
	sentinel(t, pub, g, srv.URL())
	if got := streamMsgs(t, srv.URL()); got != n+1 {
		t.Fatalf("stream holds %d, want %d and the sentinel", got, n)
	}
}

// log.level debug answers "did my device's message arrive, and which
// subject did it get?", a line per message at most 10 a second; info has
// none of them.
func TestDebugLogSaysWhereEachMessageWent(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelDebug, slog.LevelInfo} {
		broker := mqtttest.Start(t, mqtttest.Options{})
		srv := natstest.Start(t, nil)
		cfg, _ := configFor(t, broker.URL(), srv.URL(), "")
		cfg.HTTP.Listen = "127.0.0.1:0"
		var logs syncLog
		g, _ := gateway.New(cfg, gateway.Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: level}))})
		stop := runGateway(t, g)
		wait.For(t, "the gateway to subscribe", func() bool { return g.Stats().MQTT.Subscribed })
		pub := newPublisher(t, broker.URL(), "pub", true)
		pub.publish(0, 50, 50, 0)
		wait.For(t, "50 in the stream", func() bool { return g.Stats().Forward.Acked == 50 })
		stop()
		stored := strings.Count(logs.String(), "topic=sensors/room1/temp subject=telemetry.gw1.sensors.room1.temp")
		inStream := strings.Count(logs.String(), `msg="event in the stream"`)
		if level == slog.LevelDebug && (stored == 0 || inStream == 0 || strings.Count(logs.String(), "message stored") > 20) {
			t.Fatalf("debug: %d stored lines for room1, %d in-the-stream lines:\n%s", stored, inStream, logs.String())
		}
		if level == slog.LevelInfo && (stored != 0 || inStream != 0) {
			t.Fatalf("info has per-message lines:\n%s", logs.String())
		}
	}
}

// Routes choose lanes: an alarm subscription at priority 0 and a sensor
// subscription at priority 7 with a 1s TTL. With the uplink down, the
// sensor readings expire and the metric says so by priority; the alarms
// wait in their lane and, once the uplink is back, reach the stream
// marked with their priority.
func TestRoutesPriorityAndTTL(t *testing.T) {
	broker := mqtttest.Start(t, mqtttest.Options{})
	srv := natstest.Start(t, nil)
	srv.Shutdown()
	cfg, _ := configFor(t, broker.URL(), srv.URL(), "")
	zero, seven, one := 0, 7, 1
	cfg.MQTT.Subscriptions[0].Route = config.Route{Priority: &seven, TTL: time.Second}
	cfg.MQTT.Subscriptions = append(cfg.MQTT.Subscriptions, config.SubscriptionConfig{
		Topic: "alarms/#", QoS: &one, Subject: "telemetry.{gateway}.{topic}", Route: config.Route{Priority: &zero}})
	g := startGateway(t, cfg)

	pub := newPublisher(t, broker.URL(), "pub", true)
	pub.publish(0, 3, 3, 0)
	for _, topic := range []string{"alarms/door", "alarms/smoke"} {
		if tok := pub.c.Publish(topic, 1, false, "on"); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatal(tok.Error())
		}
	}
	wait.For(t, "3 readings dropped by ttl, in the metric", func() bool {
		v, _ := scrapeMetrics(t, g).value("edgegw_buffer_dropped_total", "reason", "ttl", "priority", "7")
		return v == 3
	})
	m := scrapeMetrics(t, g)
	if v := m.must(t, "edgegw_buffer_lane_events", "priority", "0"); v != 2 {
		t.Fatalf("edgegw_buffer_lane_events{priority=0} = %v, want the 2 alarms", v)
	}
	lanes := g.Status().Buffer.Lanes
	if len(lanes) != 2 || lanes[0].Priority != 0 || lanes[0].Events != 2 || lanes[1].Priority != 7 || lanes[1].TTL != "1s" || lanes[1].DroppedTTL != 3 {
		t.Fatalf("status lanes %+v", lanes)
	}
	// The lane gauges: the alarms' bytes and age; the expired lane empty.
	if v := m.must(t, "edgegw_buffer_lane_bytes", "priority", "0"); v <= 4 || v != float64(lanes[0].Bytes) {
		t.Errorf("edgegw_buffer_lane_bytes{priority=0} = %v, status says %d", v, lanes[0].Bytes)
	}
	if v := m.must(t, "edgegw_buffer_lane_oldest_age_seconds", "priority", "0"); v < 0.5 || v > 60 {
		t.Errorf("edgegw_buffer_lane_oldest_age_seconds{priority=0} = %v, want the alarms' age (over the 1s TTL wait)", v)
	}
	for _, name := range []string{"edgegw_buffer_lane_events", "edgegw_buffer_lane_bytes", "edgegw_buffer_lane_oldest_age_seconds"} {
		if v := m.must(t, name, "priority", "7"); v != 0 {
			t.Errorf("%s{priority=7} = %v after its events expired", name, v)
		}
	}

	srv.Restart()
	wait.For(t, "the alarms in the stream", func() bool { return g.Status().Upstream.Acked == 2 })
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	s, err := js.Stream(context.Background(), "TELEMETRY")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetMsg(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Header.Get(forward.HeaderPriority) != "0" || !strings.HasPrefix(msg.Subject, "telemetry.gw1.alarms") {
		t.Fatalf("first message %s %v: want an alarm with Edgegw-Priority: 0", msg.Subject, msg.Header)
	}
}

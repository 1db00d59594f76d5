package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/forward"
	"github.com/edgegw/edgegw/gateway/mqtttest"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/status"
	"github.com/edgegw/edgegw/gateway/wait"
)

// configFor writes a config for one gateway between broker and server.
func configFor(t testing.TB, brokerURL, natsURL string, extra string) (*config.Config, string) {
	t.Helper()
	dir := t.TempDir()
	text := fmt.Sprintf(`
gateway:
  id: gw1
  data_dir: %s
mqtt:
  broker: %s
  subscriptions:
    - topic: sensors/#
      qos: 1
      subject: telemetry.{gateway}.{topic}
upstream:
  servers: [%s]
  ack_timeout: 2s
  stream:
    name: TELEMETRY
    subjects: [telemetry.>]
    create: true
%s`, dir, brokerURL, natsURL, extra)
	path := filepath.Join(dir, "edgegw.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, path
}

// startGateway runs a gateway until the test ends and waits for its MQTT
// source to connect.
func startGateway(t testing.TB, cfg *config.Config) *gateway.Gateway {
	t.Helper()
	var log *slog.Logger
	if os.Getenv("EDGEGW_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return startGatewayLogged(t, cfg, log)
}

// startGatewayLogged is startGateway with the gateway's logger.
func startGatewayLogged(t testing.TB, cfg *config.Config, log *slog.Logger) *gateway.Gateway {
	t.Helper()
	g, _ := startGatewayStop(t, cfg, log)
	return g
}

// startGatewayStop is startGatewayLogged that also returns a stop, for a
// test to stop the gateway before it ends (it is stopped then anyway).
// It waits for what the test will use: the embedded broker's listener, the
// MQTT client's subscriptions.
func startGatewayStop(t testing.TB, cfg *config.Config, log *slog.Logger) (*gateway.Gateway, func()) {
	t.Helper()
	cfg.HTTP.Listen = "127.0.0.1:0"
	g, err := gateway.New(cfg, gateway.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	stop := runGateway(t, g)
	t.Cleanup(stop)
	if cfg.MQTT != nil && cfg.MQTT.Server.On() {
		wait.For(t, "the gateway's broker to listen", func() bool {
			for _, s := range g.Status().Sources {
				if s.Kind == status.KindMQTTServer {
					return s.Up
				}
			}
			return false
		})
	}
	if cfg.MQTT != nil && cfg.MQTT.Broker != "" {
		wait.For(t, "the gateway to subscribe", func() bool { return g.Stats().MQTT.Subscribed })
	}
	return g, stop
}

// runGateway starts g.Run; the returned stop cancels it and fails the test
// if Run returned an error or did not return within 30 s.
func runGateway(t testing.TB, g *gateway.Gateway) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("gateway Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("gateway did not stop within 30s")
			}
		})
	}
}

// telemetryStream makes the stream TELEMETRY on telemetry.> at url, as the
// hub's operator does, and returns the JetStream context and config a
// test changes it with (the connection closes when the test ends).
func telemetryStream(t testing.TB, url string) (jetstream.JetStream, jetstream.StreamConfig) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	scfg := jetstream.StreamConfig{Name: "TELEMETRY", Subjects: []string{"telemetry.>"}}
	if _, err := js.CreateStream(ctx, scfg); err != nil {
		t.Fatal(err)
	}
	return js, scfg
}

// firstMsg returns the first message of the TELEMETRY stream.
func firstMsg(t testing.TB, url string) jetstream.Msg {
	t.Helper()
	msgs := natstest.Messages(t, url)
	if len(msgs) == 0 {
		t.Fatal("the stream is empty")
	}
	return msgs[0]
}

// publisher is a paho client publishing numbered QoS 1 messages.
type publisher struct {
	c        paho.Client
	qos      byte // 1 unless a test says otherwise
	mu       sync.Mutex
	accepted map[int]bool // PUBACKed by the broker
}

func newPublisher(t testing.TB, brokerURL, id string, clean bool) *publisher {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(brokerURL).SetClientID(id).SetCleanSession(clean).
		SetAutoReconnect(true).SetConnectRetry(true).SetMaxReconnectInterval(200 * time.Millisecond).
		SetConnectRetryInterval(100 * time.Millisecond).SetWriteTimeout(5 * time.Second)
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return &publisher{c: c, qos: 1, accepted: map[int]bool{}}
}

func topicOf(i int) string { return fmt.Sprintf("sensors/room%d/temp", i%10) }

func payloadOf(i int) []byte {
	// Binary bytes and text: what arrives must be byte-identical.
	return append([]byte(fmt.Sprintf(`{"n":%d,"t":%d.25}`, i, i%30)), 0, 0xff, byte(i))
}

// publish sends messages [from, to) with QoS 1, at most window unacked,
// and records each one the broker acknowledged.
func (p *publisher) publish(from, to, window int, pace time.Duration) {
	type pending struct {
		i   int
		tok paho.Token
	}
	var inflight []pending
	settle := func(keep int) {
		for len(inflight) > keep {
			pd := inflight[0]
			inflight = inflight[1:]
			if pd.tok.WaitTimeout(30*time.Second) && pd.tok.Error() == nil {
				p.mu.Lock()
				p.accepted[pd.i] = true
				p.mu.Unlock()
			}
		}
	}
	for i := from; i < to; i++ {
		inflight = append(inflight, pending{i, p.c.Publish(topicOf(i), p.qos, false, payloadOf(i))})
		settle(window)
		if pace > 0 {
			time.Sleep(pace)
		}
	}
	settle(0)
}

func (p *publisher) acceptedSet() map[int]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[int]bool, len(p.accepted))
	for k := range p.accepted {
		out[k] = true
	}
	return out
}

// streamContents reads every message in the stream: for each message
// number, how many times it is there, and the order they came in.
func streamContents(t testing.TB, url string) (count map[int]int, order []int) {
	t.Helper()
	count = map[int]int{}
	for _, m := range natstest.Messages(t, url) {
		if m.Subject() == "telemetry.gw1.sensors.sentinel" {
			continue
		}
		var n, tt int
		if _, err := fmt.Sscanf(string(m.Data()), `{"n":%d,"t":%d.25}`, &n, &tt); err != nil {
			t.Fatalf("message %q on %s is not one of ours", m.Data(), m.Subject())
		}
		if want := "telemetry.gw1." + strings.ReplaceAll(topicOf(n), "/", "."); m.Subject() != want {
			t.Fatalf("message %d on subject %q, want %q", n, m.Subject(), want)
		}
		if !bytes.Equal(m.Data(), payloadOf(n)) {
			t.Fatalf("message %d payload %q, want %q", n, m.Data(), payloadOf(n))
		}
		if h := m.Headers(); h.Get("Edgegw-Source") != topicOf(n) || h.Get("Edgegw-Gateway") != "gw1" || h.Get("Edgegw-Time") == "" {
			t.Fatalf("message %d headers %v", n, h)
		}
		if n >= probeBase {
			continue // a probe of waitSubscribed
		}
		count[n]++
		order = append(order, n)
	}
	return count, order
}

// sentinel publishes one message on a topic of its own after everything
// the test published, and waits until it is in the stream and g's buffer
// is empty. The broker delivers in order, so everything before it (a
// redelivered copy included) reached the gateway first; and the buffer is
// what the forwarder sends from, so with it empty the stream holds all
// that g will ever send of it: a check that nothing more (no copy)
// arrives may count now.
func sentinel(t testing.TB, p *publisher, g *gateway.Gateway, natsURL string) {
	t.Helper()
	sentinelThen(t, p, natsURL, emptied(g))
}

// emptied says when g's buffer holds nothing: everything it stored is in
// the stream (or set aside).
func emptied(g *gateway.Gateway) func() bool {
	return func() bool { return g.Stats().Buffer.Events == 0 }
}

// sentinelThen is sentinel with what else must hold once the sentinel is
// in the stream (for a gateway in another process: see
// TestSIGKILLWhilePublishing).
func sentinelThen(t testing.TB, p *publisher, natsURL string, drained func() bool) {
	t.Helper()
	before, err := subjectCount(natsURL, "telemetry.gw1.sensors.sentinel")
	if err != nil {
		t.Fatal(err)
	}
	if tok := p.c.Publish("sensors/sentinel", 1, false, "sentinel"); !tok.WaitTimeout(30*time.Second) || tok.Error() != nil {
		t.Fatalf("sentinel: %v", tok.Error())
	}
	wait.For(t, "the sentinel in the stream and the buffer empty", func() bool {
		n, err := subjectCount(natsURL, "telemetry.gw1.sensors.sentinel")
		return err == nil && n > before && drained()
	})
}

// streamMsgs is how many messages TELEMETRY holds; 0 while it cannot say.
func streamMsgs(t testing.TB, url string) uint64 {
	n, _ := natstest.StreamMsgs(url, "TELEMETRY")
	return n
}

// checkNoneLost reads the stream and fails the test if an accepted message
// is not there; it returns how many times each message is there.
func checkNoneLost(t testing.TB, url string, accepted map[int]bool) map[int]int {
	t.Helper()
	count, _ := streamContents(t, url)
	missing := 0
	for n := range accepted {
		if count[n] == 0 {
			missing++
			if missing <= 5 {
				t.Errorf("message %d accepted by the broker is not in the stream", n)
			}
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d accepted messages missing (%d in the stream)", missing, len(accepted), len(count))
	}
	return count
}

// checkExactlyOnce: every accepted message is in the stream once; nothing
// is there twice.
func checkExactlyOnce(t testing.TB, url string, accepted map[int]bool) map[int]int {
	t.Helper()
	count := checkNoneLost(t, url, accepted)
	dups := 0
	for n, c := range count {
		if c > 1 {
			dups++
			if dups <= 5 {
				t.Errorf("message %d is in the stream %d times", n, c)
			}
		}
	}
	if dups > 0 {
		t.Fatalf("%d messages duplicated (of %d accepted, %d in the stream)", dups, len(accepted), len(count))
	}
	return count
}

func TestEndToEnd50kQoS1(t *testing.T) {
	const n = 50_000
	broker := mqtttest.Start(t, mqtttest.Options{})
	srv := natstest.Start(t, nil)
	cfg, _ := configFor(t, broker.URL(), srv.URL(), "")
	g := startGateway(t, cfg)

	pub := newPublisher(t, broker.URL(), "pub", true)
	base := waitSubscribed(t, pub, srv.URL(), emptied(g))
	pub.publish(0, n, 500, 0)
	if len(pub.acceptedSet()) != n {
		t.Fatalf("broker accepted %d of %d", len(pub.acceptedSet()), n)
	}
	wait.For(t, "all messages in the stream", func() bool { return streamMsgs(t, srv.URL()) >= base+n })
	count, order := streamContents(t, srv.URL())
	if len(order) != n || len(count) != n {
		t.Fatalf("stream holds %d messages, %d distinct; want %d", len(order), len(count), n)
	}
	for i, v := range order {
		if v != i {
			t.Fatalf("stream position %d holds message %d: out of order", i, v)
		}
	}
	st := g.Stats()
	t.Logf("gateway: mqtt %+v, forward %+v, duplicates %d", st.MQTT, st.Forward, st.Duplicates)
}

func TestHostileTopicsAndOversizedPayloads(t *testing.T) {
	broker := mqtttest.Start(t, mqtttest.Options{})
	srv := natstest.Start(t, nil)
	cfg, _ := configFor(t, broker.URL(), srv.URL(), "")
	cfg.MQTT.MaxPayload = 1024
	g := startGateway(t, cfg)
	base := waitSubscribed(t, newPublisher(t, broker.URL(), "probe", true), srv.URL(), emptied(g))

	// One connection per message: a broker may refuse a topic by closing
	// the connection (mosquitto does for control bytes); such a topic never
	// reaches a gateway, so it is left out of what must arrive.
	sent := 0
	send := func(topic string, payload []byte) bool {
		sent++
		pub := newPublisher(t, broker.URL(), fmt.Sprintf("pub%d", sent), true)
		defer pub.c.Disconnect(0)
		tok := pub.c.Publish(topic, 1, false, payload)
		if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
			t.Logf("the broker refused topic %q: %v", topic, tok.Error())
			return false
		}
		return true
	}
	hostile := map[string]string{ // topic -> the subject it must map to
		"sensors/x\r\nNats-Msg-Id: gw1-1": "telemetry.gw1.sensors.x%0D%0ANats-Msg-Id:%20gw1-1",
		"sensors/a.b/c":                   "telemetry.gw1.sensors.a%2Eb.c",
		"sensors/*/x":                     "telemetry.gw1.sensors.%2A.x",
		"sensors/>":                       "telemetry.gw1.sensors.%3E",
		"sensors//empty":                  "telemetry.gw1.sensors.%.empty",
		"sensors/with space/tab\t":        "telemetry.gw1.sensors.with%20space.tab%09",
		"sensors/ctl\x01/x":               "telemetry.gw1.sensors.ctl%01.x",
		"sensors/trailing/":               "telemetry.gw1.sensors.trailing.%",
	}
	for topic := range hostile {
		if !send(topic, []byte("h:"+topic)) {
			delete(hostile, topic)
		}
		// mosquitto acknowledges a topic with control bytes and delivers it
		// to nobody; mochi delivers it, and the mapping is tested there.
		if mqtttest.Mosquitto() && strings.ContainsFunc(topic, func(r rune) bool { return r < 0x20 }) {
			t.Logf("mosquitto does not deliver topic %q", topic)
			delete(hostile, topic)
		}
	}
	if len(hostile) < 4 {
		t.Fatalf("the broker took only %d of the hostile topics", len(hostile))
	}
	send("sensors/big", make([]byte, 4096)) // over max_payload: dropped
	send("sensors/big", make([]byte, 2048)) // logged once per topic, still dropped
	send("sensors/after", []byte("after"))  // and the next message flows

	want := base + uint64(len(hostile)) + 1
	wait.For(t, "the hostile topics' messages and the one after them in the stream", func() bool { return streamMsgs(t, srv.URL()) >= want })
	nc, _ := nats.Connect(srv.URL())
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, _ := js.Stream(ctx, "TELEMETRY")
	for topic, subj := range hostile {
		m, err := s.GetLastMsgForSubject(ctx, subj)
		if err != nil {
			t.Errorf("topic %q: nothing on subject %q: %v", topic, subj, err)
			continue
		}
		if string(m.Data) != "h:"+topic || m.Header.Get("Edgegw-Source") != forward.EscapeHeader(topic) {
			t.Errorf("topic %q: got %q from %q", topic, m.Data, m.Header.Get("Edgegw-Source"))
		}
	}
	if _, err := s.GetLastMsgForSubject(ctx, "telemetry.gw1.sensors.after"); err != nil {
		t.Errorf("the message after the oversized ones: %v", err)
	}
	if _, err := s.GetLastMsgForSubject(ctx, "telemetry.gw1.sensors.big"); err == nil {
		t.Error("an oversized message reached the stream")
	}
	if info, _ := s.Info(ctx); info.State.Msgs != want {
		t.Errorf("stream holds %d messages, want %d", info.State.Msgs, want)
	}
	if st := g.Stats().MQTT; st.TooLarge != 2 {
		t.Errorf("TooLarge = %d, want 2", st.TooLarge)
	}
}

// The broker's login: the right username and password ingest; a wrong
// password stops the gateway with an error that names the keys to check
// and not the password.
func TestMQTTUsernamePassword(t *testing.T) {
	const secret = "br0ker-pa55"
	broker := mqtttest.Start(t, mqtttest.Options{Users: map[string]string{"edgegw": secret, "pub": "pub"}})
	srv := natstest.Start(t, nil)
	cfg, _ := configFor(t, broker.URL(), srv.URL(), "")
	cfg.MQTT.Username, cfg.MQTT.Password = "edgegw", secret
	startGateway(t, cfg)
	deliverOne(t, paho.NewClientOptions().AddBroker(broker.URL()).SetClientID("pub").SetUsername("pub").SetPassword("pub"), srv.URL())

	bad, _ := configFor(t, broker.URL(), srv.URL(), "")
	bad.MQTT.Username, bad.MQTT.Password = "edgegw", "wrong-"+secret
	bad.MQTT.ClientID = "edgegw-other"
	bad.HTTP.Listen = "127.0.0.1:0"
	g, _ := gateway.New(bad, gateway.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := g.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "mqtt.password") || strings.Contains(err.Error(), secret) {
		t.Fatalf("wrong password: %v", err)
	}
	t.Logf("error shown: %v", err)
}

// deliverOne connects a publisher with o and publishes until a message is
// in the stream.
func deliverOne(t *testing.T, o *paho.ClientOptions, natsURL string) {
	t.Helper()
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publisher: %v", tok.Error())
	}
	defer c.Disconnect(100)
	wait.For(t, "a message in the stream", func() bool {
		c.Publish(topicOf(1), 1, false, payloadOf(1)).Wait()
		return streamMsgs(t, natsURL) >= 1
	})
}

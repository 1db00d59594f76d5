package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/mqtttest"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/wait"
)

const childConfig = "EDGEGW_GATEWAY_CHILD_CONFIG"

// TestGatewayChild is the child of TestSIGKILLWhilePublishing: a whole
// gateway process, run from a config file until it is killed or told to
// stop with SIGTERM.
func TestGatewayChild(t *testing.T) {
	path := os.Getenv(childConfig)
	if path == "" {
		t.Skip("child process only")
	}
	cfg, err := config.Load(path)
	if err != nil {
		fmt.Println(err)
		os.Exit(3)
	}
	var log *slog.Logger
	if os.Getenv("EDGEGW_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("pid", os.Getpid())
	}
	cfg.HTTP.Listen = "127.0.0.1:0"
	g, err := gateway.New(cfg, gateway.Options{Logger: log})
	if err != nil {
		fmt.Println(err)
		os.Exit(3)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if log != nil {
		go func() {
			for ctx.Err() == nil {
				time.Sleep(time.Second)
				st := g.Stats()
				log.Info("stats", "mqtt", fmt.Sprintf("%+v", st.MQTT), "buffer_events", st.Buffer.Events, "next", st.Buffer.NextSeq, "fwd", fmt.Sprintf("%+v", st.Forward), "dups", st.Duplicates)
			}
		}()
	}
	if err := g.Run(ctx); err != nil {
		fmt.Println("run:", err)
		os.Exit(4)
	}
	os.Exit(0)
}

// oldestFirst sets upstream.drain: oldest_first in the config file at
// path: each lane is sent in seq order, so a message in the stream says
// every one stored before it is there too.
func oldestFirst(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.Replace(b, []byte("  ack_timeout: 2s\n"), []byte("  ack_timeout: 2s\n  drain: oldest_first\n"), 1)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// startChild starts a gateway process; it is killed when the test ends,
// however it ends.
func startChild(t *testing.T, cfgPath string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestGatewayChild$")
	cmd.Env = append(os.Environ(), childConfig+"="+cfgPath)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd
}

// The gateway process is SIGKILLed at random moments while a publisher
// keeps publishing with QoS 1, and restarted, 10 times: every message the
// broker accepted is in the stream exactly once.
func TestSIGKILLWhilePublishing(t *testing.T) {
	if testing.Short() {
		t.Skip("re-execs the test binary 11 times")
	}
	if !mqtttest.Mosquitto() {
		// Measured: mochi-mqtt v2.7.9 loses 16-60 of 40,000 messages queued
		// for a persistent session across these reconnects (the gateway
		// received and forwarded everything mochi sent it); mosquitto loses
		// none. .ci/run runs this test against mosquitto.
		t.Skip("needs a broker that keeps a persistent session's queue across reconnects: set EDGEGW_TEST_MOSQUITTO=/usr/sbin/mosquitto")
	}
	broker := mqtttest.Start(t, mqtttest.Options{})
	srv := natstest.Start(t, nil)
	cfg, cfgPath := configFor(t, broker.URL(), srv.URL(), "")
	oldestFirst(t, cfgPath)

	pub := newPublisher(t, broker.URL(), "pub", true)
	child := startChild(t, cfgPath)
	base := waitSubscribed(t, pub, srv.URL(), func() bool { return true }) // probes are in the stream too; oldest first

	const total = 40_000
	published := make(chan struct{})
	go func() {
		defer close(published)
		pub.publish(0, total, 200, 50*time.Microsecond)
	}()
	for k := 0; k < 10; k++ {
		time.Sleep(time.Duration(150+rand.IntN(350)) * time.Millisecond)
		child.Process.Signal(syscall.SIGKILL)
		child.Wait()
		broker.WaitGone("edgegw-gw1")
		t.Logf("kill %d: %d accepted by the broker, %d in the stream", k+1, len(pub.acceptedSet()), streamMsgs(t, srv.URL()))
		child = startChild(t, cfgPath)
	}
	<-published
	accepted := pub.acceptedSet()
	t.Logf("publisher done: %d accepted", len(accepted))
	for range 10 {
		if os.Getenv("EDGEGW_TEST_LOG") == "" {
			break
		}
		t.Logf("stream: %d", streamMsgs(t, srv.URL()))
		time.Sleep(time.Second)
	}
	if os.Getenv("EDGEGW_TEST_LOG") != "" {
		checkExactlyOnce(t, srv.URL(), accepted)
	}
	wait.For(t, "every accepted message in the stream", func() bool {
		return streamMsgs(t, srv.URL()) >= base+uint64(len(accepted))
	})
	// Anything extra (a copy) reaches the gateway before the sentinel and,
	// oldest first, the stream before it too.
	sentinelThen(t, pub, srv.URL(), func() bool { return true })
	child.Process.Signal(syscall.SIGTERM)
	if err := child.Wait(); err != nil {
		t.Errorf("gateway did not exit 0 on SIGTERM: %v", err)
	}
	if st, err := buffer.ReadStats(cfg.Buffer.Path, time.Second); err != nil || st.Events != 0 {
		t.Fatalf("the stopped gateway's buffer holds %d events (%v): the sentinel proved nothing", st.Events, err)
	}
	count := checkExactlyOnce(t, srv.URL(), accepted)
	t.Logf("%d accepted, %d in the stream, each once", len(accepted), len(count))
}

// ingestUnderFaults runs a gateway between a broker and a JetStream server,
// publishes 20,000 QoS 1 messages, calls fault twice (after a third and
// after two thirds have been committed), and returns once every message
// the broker accepted is in the stream, with the server's URL, what was
// accepted, and the gateway.
func ingestUnderFaults(t *testing.T, persist, cleanPublisher bool, fault func(*mqtttest.Broker, *natstest.Server, *gateway.Gateway)) (string, map[int]bool, *gateway.Gateway) {
	t.Helper()
	broker := mqtttest.Start(t, mqtttest.Options{Persist: persist})
	srv := natstest.Start(t, nil)
	cfg, _ := configFor(t, broker.URL(), srv.URL(), "")
	g := startGateway(t, cfg)
	pub := newPublisher(t, broker.URL(), "pub", cleanPublisher)
	if !cleanPublisher {
		// A QoS 2 publisher: the broker has each message once, whatever
		// happens to it, so any copy in the stream is the gateway's.
		pub.qos = 2
	}
	base := waitSubscribed(t, pub, srv.URL(), emptied(g)) // probes are in the stream too

	const total = 20_000
	published := make(chan struct{})
	go func() {
		defer close(published)
		pub.publish(0, total, 100, 100*time.Microsecond)
	}()
	for k := 1; k <= 2; k++ {
		wait.For(t, "progress", func() bool { return g.Stats().MQTT.Committed > uint64(k*total/3) })
		fault(broker, srv, g)
	}
	<-published
	accepted := pub.acceptedSet()
	wait.For(t, "every accepted message in the stream", func() bool {
		return streamMsgs(t, srv.URL()) >= base+uint64(len(accepted))
	})
	sentinel(t, pub, g, srv.URL()) // a copy would arrive before it
	return srv.URL(), accepted, g
}

// The uplink goes away and comes back, twice, while messages flow:
// everything the broker accepted arrives once.
func TestUplinkOutagesDuringIngest(t *testing.T) {
	url, accepted, g := ingestUnderFaults(t, false, true, func(_ *mqtttest.Broker, srv *natstest.Server, g *gateway.Gateway) {
		srv.Shutdown()
		wait.For(t, "a backlog", func() bool { return g.Stats().Buffer.Events > 1000 })
		t.Logf("uplink down: %d events buffered", g.Stats().Buffer.Events)
		srv.Restart()
	})
	checkExactlyOnce(t, url, accepted)
	st := g.Stats()
	t.Logf("%d accepted; gateway: mqtt %+v forward %+v", len(accepted), st.MQTT, st.Forward)
}

// The broker restarts twice while messages flow; it keeps its queue
// (mosquitto with persistence) and the gateway reconnects to the same
// session: everything the broker accepted arrives. The broker's
// redelivery of what the gateway committed but had not PUBACKed is
// recognised and dropped (Duplicates counts those). The publisher uses
// QoS 2, so that a QoS 1 publisher's own resends (copies made before the
// gateway, docs/mqtt.md) do not hide the gateway's.
func TestBrokerRestartsDuringIngest(t *testing.T) {
	if !mqtttest.Mosquitto() {
		t.Skip("needs a broker that keeps in-flight messages across a restart (mochi's persistence cannot): set EDGEGW_TEST_MOSQUITTO=/usr/sbin/mosquitto")
	}
	url, accepted, g := ingestUnderFaults(t, true, false, func(broker *mqtttest.Broker, _ *natstest.Server, g *gateway.Gateway) {
		broker.Restart()
		t.Logf("broker restarted at %d committed", g.Stats().MQTT.Committed)
	})
	count := checkNoneLost(t, url, accepted)
	copies := 0
	for n, c := range count {
		if c > 1 {
			t.Logf("message %d is in the stream %d times", n, c)
		}
		copies += c - 1
	}
	st := g.Stats()
	t.Logf("%d accepted, none lost, %d copies; redeliveries dropped %d", len(accepted), copies, st.Duplicates)
	// Measured over 9 runs with the marks: 18-70 redeliveries recognised
	// and dropped, and 0-11 copies in the stream; with the marks ignored:
	// none recognised and 17-39 copies. The copies that remain are messages
	// at the very moment of a restart (a few around the last one
	// committed), which mosquitto sends again in a form the marks cannot
	// tell from a new message. The marks' test is therefore the first
	// check; the second only bounds the copies by what can be in flight
	// at two restarts (the publisher's window of 100, twice).
	if st.Duplicates == 0 {
		t.Fatal("no redelivery was recognised: two broker restarts at full rate always leave some")
	}
	if copies > 200 {
		t.Fatalf("%d copies in the stream: more than could be in flight at two restarts", copies)
	}
}

// probeBase numbers the probe messages, outside the range of the ones a
// test counts.
const probeBase = 1_000_000

// waitSubscribed publishes probes until one reaches the stream: then the
// gateway's subscription is in place at the broker, and its session will
// keep what follows. Then a sentinel settles the probes (drained: what
// else says the gateway has sent all it holds; see sentinelThen). It
// returns the number of messages in the stream; readers of the stream
// skip probes and sentinels.
func waitSubscribed(t testing.TB, p *publisher, natsURL string, drained func() bool) uint64 {
	t.Helper()
	start := streamMsgs(t, natsURL)
	for k := 0; streamMsgs(t, natsURL) == start; k++ {
		if k > 300 {
			t.Fatal("the gateway never subscribed")
		}
		p.c.Publish(topicOf(probeBase+k), 1, false, payloadOf(probeBase+k)).WaitTimeout(5 * time.Second)
		deadline := time.Now().Add(200 * time.Millisecond)
		for time.Now().Before(deadline) && streamMsgs(t, natsURL) == start {
			time.Sleep(10 * time.Millisecond)
		}
	}
	sentinelThen(t, p, natsURL, drained)
	return streamMsgs(t, natsURL)
}

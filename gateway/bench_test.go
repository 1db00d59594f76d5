package gateway_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/mqttroute"
	"github.com/edgegw/edgegw/gateway/mqttsource"
	"github.com/edgegw/edgegw/gateway/mqtttest"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/subject"
	"github.com/edgegw/edgegw/gateway/wait"
)

const ingestN = 100_000

// BenchmarkIngestQoS1 measures QoS 1 ingest, publisher → broker → MQTT
// source → durable buffer commit → PUBACK, against the same run's
// baseline: the same publisher → broker → a bare paho subscriber that acks
// at once. With EDGEGW_TEST_MOSQUITTO set the broker is mosquitto, and
// both sides run at the broker's ceiling (about 30k/s here): the ratio
// then says only that edgegw keeps up with it. In-process (mochi) it
// measures the gateway. It stops at the buffer commit: the whole path
// into the stream is the embedded-broker issue's benchmark.
//
//	go test -run '^$' -bench IngestQoS1 -benchtime 1x -count 3 ./gateway/
func BenchmarkIngestQoS1(b *testing.B) {
	for range b.N {
		base := ingestRun(b, bareSubscriber)
		gw := ingestRun(b, func(b *testing.B, url string) (func() uint64, func()) {
			q, err := buffer.Open(filepath.Join(b.TempDir(), "buf.db"), nil)
			if err != nil {
				b.Fatal(err)
			}
			tmpl, _ := subject.ParseTemplate("telemetry.{gateway}.{topic}", "gw1")
			src, err := mqttsource.New(mqttsource.Options{Broker: url, ClientID: "edgegw-gw1",
				Subscriptions: []mqttroute.Subscription{{Topic: "sensors/#", QoS: 1, Subject: tmpl}}})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- src.Run(ctx, gateway.BufferEmitter(q)) }()
			wait.For(b, "the source's subscription (the broker's SUBACK)", func() bool { return src.Stats().Subscribed })
			return func() uint64 { return src.Stats().Committed }, func() {
				cancel()
				<-done
				q.Close()
			}
		})
		b.ReportMetric(gw, "msgs/s")
		b.ReportMetric(base, "baseline-msgs/s")
		b.ReportMetric(gw/base, "x-baseline")
	}
}

// ingestRun starts a broker and a receiver, publishes ingestN QoS 1
// messages with 1000 in flight, and returns messages/s until the receiver
// has them all.
func ingestRun(b *testing.B, receiver func(*testing.B, string) (count func() uint64, stop func())) float64 {
	broker := mqtttest.Start(b, mqtttest.Options{})
	defer broker.Shutdown()
	count, stop := receiver(b, broker.URL())
	defer stop()
	return publishUntil(b, broker.URL(), count)
}

// publishUntil publishes ingestN QoS 1 messages of 128 bytes to the broker
// at url, 1000 in flight, and returns messages/s until count says all
// arrived.
func publishUntil(b *testing.B, url string, count func() uint64) float64 {
	pub := newPublisher(b, url, "bench-pub", true)
	defer pub.c.Disconnect(100)
	payload := make([]byte, 128)
	start := time.Now()
	toks := make([]paho.Token, 0, 1000)
	for i := 0; i < ingestN; i++ {
		toks = append(toks, pub.c.Publish(topicOf(i), 1, false, payload))
		if len(toks) == cap(toks) {
			for _, t := range toks {
				t.Wait()
			}
			toks = toks[:0]
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for count() < ingestN {
		if time.Now().After(deadline) {
			b.Fatalf("received %d of %d", count(), ingestN)
		}
		time.Sleep(time.Millisecond)
	}
	return ingestN / time.Since(start).Seconds()
}

// BenchmarkIntoStream times the whole path, a paho publisher's 100,000
// QoS 1 messages of 128 bytes (1000 in flight) until the JetStream stream
// holds every one, with nats-server as a separate process:
//
//   - via mosquitto: publisher → mosquitto (a process) → edgegw's MQTT
//     source → buffer → forwarder → nats-server;
//   - embedded: publisher → edgegw's own broker → buffer → forwarder →
//     nats-server;
//
// beside the same run's baseline: the publisher → mosquitto → a bare paho
// subscriber that acks at once. It needs EDGEGW_TEST_MOSQUITTO (the
// mosquitto binary) and builds nats-server from the module cache.
//
//	EDGEGW_TEST_MOSQUITTO=/usr/sbin/mosquitto go test -run '^$' -bench IntoStream -benchtime 1x -count 3 ./gateway/
func BenchmarkIntoStream(b *testing.B) {
	if !mqtttest.Mosquitto() {
		b.Skip("set EDGEGW_TEST_MOSQUITTO=/usr/sbin/mosquitto: the baseline is mosquitto as a separate process")
	}
	natsBin := buildNatsServer(b)
	for range b.N {
		base := ingestRun(b, bareSubscriber)
		viaMosquitto := ingestRun(b, func(b *testing.B, url string) (func() uint64, func()) {
			natsURL, stopNats := startNatsProcess(b, natsBin)
			cfg, _ := configFor(b, url, natsURL, "")
			return gatewayIntoStream(b, cfg, natsURL, stopNats)
		})
		embedded := intoStreamEmbedded(b, natsBin, "")
		// The same path with wave 2's buffer settings (issue 24: the SD
		// card defaults must keep ≥ 0.9× of its speed).
		wave2 := intoStreamEmbedded(b, natsBin, "buffer:\n  page_size: 16KiB\n  commit_delay: 0s\n  ack_delay: 100ms\n")
		b.ReportMetric(base, "baseline-msgs/s")
		b.ReportMetric(viaMosquitto, "via-mosquitto-msgs/s")
		b.ReportMetric(embedded, "embedded-msgs/s")
		b.ReportMetric(viaMosquitto/base, "via-mosquitto-x-baseline")
		b.ReportMetric(embedded/base, "embedded-x-baseline")
		b.ReportMetric(embedded/wave2, "embedded-x-wave2-buffer-settings")
	}
}

// BenchmarkEmbeddedLimit puts the embedded path (publisher → edgegw's own
// broker → buffer → forwarder → nats-server, a process, until the stream
// holds every message) beside the publisher's own limit in the same run:
// the same publisher (paho, 100,000 QoS 1 messages of 128 bytes, 1000 in
// flight) against a broker that acks and keeps nothing, no subscriber and
// no persistence: mosquitto (a process of its own), and mochi in the
// benchmark's process, where edgegw's broker runs too.
//
// Each leg is CPU-bound on a 2-core box, so it also reports the CPU each
// message costs: the benchmark's process (publisher and broker, plus
// buffer and forwarder on the embedded leg) and nats-server's (the hub,
// on the same cores here). ceiling-x-limit is the ratio the embedded path
// could reach if edgegw cost nothing beyond mochi: the limit's CPU over
// the limit's plus the hub's.
//
//	EDGEGW_TEST_MOSQUITTO=/usr/sbin/mosquitto go test -run '^$' -bench EmbeddedLimit -benchtime 1x -count 3 ./gateway/
func BenchmarkEmbeddedLimit(b *testing.B) {
	if !mqtttest.Mosquitto() {
		b.Skip("set EDGEGW_TEST_MOSQUITTO=/usr/sbin/mosquitto: the limit is mosquitto as a separate process")
	}
	natsBin := buildNatsServer(b)
	for range b.N {
		limit := func(o mqtttest.Options) float64 {
			broker := mqtttest.Start(b, o)
			defer broker.Shutdown()
			return publishUntil(b, broker.URL(), func() uint64 { return ingestN }) // every PUBACK is in
		}
		mosq := limit(mqtttest.Options{})
		self, hub := cpuUsed()
		mochi := limit(mqtttest.Options{InProcess: true})
		self2, _ := cpuUsed()
		embedded := intoStreamEmbedded(b, natsBin, "")
		self3, hub3 := cpuUsed()
		perMsg := func(d time.Duration) float64 { return float64(d.Microseconds()) / ingestN }
		limitCPU, gwCPU, hubCPU := perMsg(self2-self), perMsg(self3-self2), perMsg(hub3-hub)
		b.ReportMetric(mosq, "limit-mosquitto-msgs/s")
		b.ReportMetric(mochi, "limit-mochi-msgs/s")
		b.ReportMetric(embedded, "embedded-msgs/s")
		b.ReportMetric(embedded/max(mosq, mochi), "embedded-x-limit")
		b.ReportMetric(limitCPU, "limit-cpu-us/msg")
		b.ReportMetric(gwCPU, "embedded-cpu-us/msg")
		b.ReportMetric(hubCPU, "hub-cpu-us/msg")
		b.ReportMetric(limitCPU/(limitCPU+hubCPU), "ceiling-x-limit")
	}
}

// cpuUsed is the CPU time (user and system) this process has used, and
// its children that have ended.
func cpuUsed() (self, children time.Duration) {
	sum := func(who int) time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(who, &ru); err != nil {
			return 0
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return sum(syscall.RUSAGE_SELF), sum(syscall.RUSAGE_CHILDREN)
}

// intoStreamEmbedded is ingestRun with edgegw as the broker; extra is
// more of its config.
func intoStreamEmbedded(b *testing.B, natsBin, extra string) float64 {
	natsURL, stopNats := startNatsProcess(b, natsBin)
	cfg, url := serverConfigFor(b, natsURL, "    allow_anonymous: true", extra)
	count, stop := gatewayIntoStream(b, cfg, natsURL, stopNats)
	defer stop()
	return publishUntil(b, url, count)
}

// gatewayIntoStream runs a gateway with cfg; count is what the stream
// holds.
func gatewayIntoStream(b *testing.B, cfg *config.Config, natsURL string, stopNats func()) (count func() uint64, stop func()) {
	cfg.HTTP.Listen = "off"
	g, err := gateway.New(cfg, gateway.Options{})
	if err != nil {
		b.Fatal(err)
	}
	stopGW := runGateway(b, g)
	nc, err := nats.Connect(natsURL)
	if err != nil {
		b.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	var last atomic.Uint64
	var lastAt time.Time
	count = func() uint64 {
		if time.Since(lastAt) < 10*time.Millisecond {
			return last.Load()
		}
		lastAt = time.Now()
		if s, err := js.Stream(ctx, "TELEMETRY"); err == nil {
			if info, err := s.Info(ctx); err == nil {
				last.Store(info.State.Msgs)
			}
		}
		return last.Load()
	}
	wait.For(b, "the gateway ready", func() bool { return g.Status().Ready })
	return count, func() {
		nc.Close()
		stopGW()
		stopNats()
	}
}

// buildNatsServer builds nats-server from the module cache, for the
// benchmarks that run it as a process of its own.
func buildNatsServer(b *testing.B) string {
	bin := filepath.Join(b.TempDir(), "nats-server")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
		b.Fatalf("build nats-server: %v\n%s", err, out)
	}
	return bin
}

// bareSubscriber is the baselines' consumer: a paho client subscribed to
// sensors/# at QoS 1 that acks each message at once and counts it.
func bareSubscriber(b *testing.B, url string) (count func() uint64, stop func()) {
	var n atomic.Uint64
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("bare").SetCleanSession(false).
		SetDefaultPublishHandler(func(paho.Client, paho.Message) { n.Add(1) }))
	if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		b.Fatal(t.Error())
	}
	if t := c.Subscribe("sensors/#", 1, nil); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		b.Fatal(t.Error())
	}
	return n.Load, func() { c.Disconnect(100) }
}

// startNatsProcess runs nats-server with JetStream as a process of its own
// and waits until it takes connections.
func startNatsProcess(b *testing.B, bin string) (url string, stop func()) {
	n := startNatsNodes(b, bin, 1)[0]
	wait.For(b, "nats-server to take connections", func() bool {
		nc, err := nats.Connect(n.url)
		if err == nil {
			nc.Close()
		}
		return err == nil
	})
	return n.url, n.stop
}

type natsNode struct {
	url  string
	cmd  *exec.Cmd
	stop func() // interrupt and wait; also done at the end of the benchmark
}

// startNatsNodes runs one nats-server with JetStream, or a cluster of n
// routed to each other, as processes; it does not wait for them.
func startNatsNodes(b *testing.B, bin string, n int) []natsNode {
	var routes []string
	for range n {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", natstest.FreePort(b)))
	}
	var nodes []natsNode
	for i := range n {
		port := natstest.FreePort(b)
		args := []string{"-js", "-sd", b.TempDir(), "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-n", fmt.Sprintf("node%d", i)}
		if n > 1 {
			args = append(args, "--cluster_name", "hub", "--cluster", routes[i], "--routes", strings.Join(routes, ","))
		}
		cmd := exec.Command(bin, args...)
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		stop := sync.OnceFunc(func() {
			cmd.Process.Signal(os.Interrupt)
			cmd.Wait()
		})
		b.Cleanup(stop)
		nodes = append(nodes, natsNode{fmt.Sprintf("nats://127.0.0.1:%d", port), cmd, stop})
	}
	return nodes
}

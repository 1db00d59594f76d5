package gateway_test

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/gateway/mqttsource"
	"github.com/edgegw/edgegw/gateway/mqtttest"
	"github.com/edgegw/edgegw/gateway/subject"
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
		base := ingestRun(b, func(b *testing.B, url string) (func() uint64, func()) {
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
		})
		gw := ingestRun(b, func(b *testing.B, url string) (func() uint64, func()) {
			q, err := buffer.Open(filepath.Join(b.TempDir(), "buf.db"), nil)
			if err != nil {
				b.Fatal(err)
			}
			tmpl, _ := subject.ParseTemplate("telemetry.{gateway}.{topic}", "gw1")
			src, err := mqttsource.New(mqttsource.Options{Broker: url, ClientID: "edgegw-gw1",
				Subscriptions: []mqttsource.Subscription{{Topic: "sensors/#", QoS: 1, Subject: tmpl}}})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- src.Run(ctx, gateway.BufferEmitter(q)) }()
			deadline := time.Now().Add(10 * time.Second)
			for !src.Stats().Subscribed { // the broker's SUBACK
				if time.Now().After(deadline) {
					b.Fatal("the source never subscribed")
				}
				time.Sleep(5 * time.Millisecond)
			}
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
	pub := newPublisher(b, broker.URL(), "bench-pub", true)
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

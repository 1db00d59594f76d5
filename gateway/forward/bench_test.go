package forward_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/event"
	"github.com/edgegw/edgegw/gateway/forward"
	"github.com/edgegw/edgegw/gateway/natstest"
)

const benchEvents = 1_000_000

func benchPayload(i int) []byte {
	p := make([]byte, 128)
	copy(p, fmt.Sprintf(`{"i":%d}`, i))
	return p
}

func benchSubject(i int) string { return fmt.Sprintf("telemetry.%s.room%d", gw, i%7) }

// BenchmarkDrain1M drains a 1,000,000-event backlog of 128-byte payloads
// into a local JetStream file stream, and beside it, on a fresh server and
// stream, the baseline: a bare nats.go async publisher with message IDs
// and the same window, no buffer.
//
//	go test -run '^$' -bench Drain1M -benchtime 1x ./gateway/forward/
func BenchmarkDrain1M(b *testing.B) {
	for range b.N {
		base := bareBaseline(b, false)
		baseHdr := bareBaseline(b, true)

		srv := natstest.Start(b, nil)
		q, err := buffer.Open(filepath.Join(b.TempDir(), "buf.db"), nil)
		if err != nil {
			b.Fatal(err)
		}
		batch := make([][]byte, 0, 10_000)
		for i := range benchEvents {
			e := event.Event{Subject: benchSubject(i), Source: "bench", Time: time.Now(), Payload: benchPayload(i)}
			enc, _ := e.Marshal(nil)
			batch = append(batch, enc)
			if len(batch) == cap(batch) {
				if _, err := q.Append(context.Background(), batch...); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
		runtime.GC() // the baseline's garbage is not ours to collect
		nc := connect(b, srv.URL())
		f, err := forward.New(q, nc, options())
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- f.Run(ctx) }()
		for f.Stats().Acked < benchEvents {
			time.Sleep(time.Millisecond)
		}
		el := time.Since(start)
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		q.Close()
		nc.Close()
		srv.Shutdown()
		rate := benchEvents / el.Seconds()
		b.ReportMetric(rate, "events/s")
		b.ReportMetric(base, "baseline-msgs/s")
		b.ReportMetric(rate/base, "x-baseline")
		b.ReportMetric(baseHdr, "baseline-same-headers-msgs/s")
	}
}

// bareBaseline publishes benchEvents with a bare async publisher. With
// headers, each message also carries the three headers the forwarder adds
// (gateway, source, time), to show what their bytes cost the server.
func bareBaseline(b *testing.B, headers bool) float64 {
	srv := natstest.Start(b, nil)
	defer srv.Shutdown() // its store is not to weigh on the next run
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1024))
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "TELEMETRY", Subjects: []string{"telemetry.>"}, Storage: jetstream.FileStorage}); err != nil {
		b.Fatal(err)
	}
	msgs := make([]*nats.Msg, benchEvents)
	for i := range msgs {
		msgs[i] = &nats.Msg{Subject: benchSubject(i), Data: benchPayload(i)}
		if headers {
			msgs[i].Header = nats.Header{
				forward.HeaderGateway: {gw},
				forward.HeaderSource:  {"bench"},
				forward.HeaderTime:    {time.Now().UTC().Format(time.RFC3339Nano)},
			}
		}
	}
	runtime.GC()
	start := time.Now()
	for i, m := range msgs {
		if _, err := js.PublishMsgAsync(m, jetstream.WithMsgID(fmt.Sprintf("%s-%d", gw, i+1))); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		b.Fatal("baseline publishes not acked in 5 minutes")
	}
	return benchEvents / time.Since(start).Seconds()
}

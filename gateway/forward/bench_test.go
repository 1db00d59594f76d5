package forward_test

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
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

// BenchmarkLiveFirst: the uplink comes back (the forwarder starts) to a
// backlog of 1,000,000 priority-5 events; a live reading arrives every
// 10ms (priority 5) and, 2s in, one priority-0 alarm. For live_first and,
// in the same run, oldest_first, it reports the time from the start to
// the first live reading in the stream, the alarm's time from its append
// to the stream, and the backlog's drain rate.
//
//	go test -run '^$' -bench LiveFirst -benchtime 1x ./gateway/forward/
func BenchmarkLiveFirst(b *testing.B) {
	for range b.N {
		live := liveFirstRun(b, forward.LiveFirst)
		oldest := liveFirstRun(b, forward.OldestFirst)
		b.ReportMetric(live.firstLive.Seconds(), "first-live-s")
		b.ReportMetric(oldest.firstLive.Seconds(), "first-live-oldest-first-s")
		b.ReportMetric(live.alarm.Seconds(), "alarm-s")
		b.ReportMetric(oldest.alarm.Seconds(), "alarm-oldest-first-s")
		b.ReportMetric(live.drain, "drain-events/s")
		b.ReportMetric(oldest.drain, "drain-oldest-first-events/s")
		b.ReportMetric(live.drain/oldest.drain, "x-oldest-first-drain")
	}
}

type liveFirstResult struct {
	firstLive, alarm time.Duration
	drain            float64 // backlog events/s
}

func liveFirstRun(b *testing.B, drain forward.Drain) liveFirstResult {
	srv := natstest.Start(b, nil)
	defer srv.Shutdown()
	q, err := buffer.Open(filepath.Join(b.TempDir(), "buf.db"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
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
	runtime.GC()

	sub := connect(b, srv.URL())
	arrived := make(chan string, 1024)
	if _, err := sub.Subscribe("telemetry."+gw+".live.>", func(m *nats.Msg) {
		select {
		case arrived <- m.Subject:
		default:
		}
	}); err != nil {
		b.Fatal(err)
	}
	sub.Flush()

	o := options()
	o.Drain = drain
	f, err := forward.New(q, connect(b, srv.URL()), o)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- f.Run(ctx) }()

	var alarmAt time.Time
	var res liveFirstResult
	appendLive := func(subject string, l buffer.Lane) {
		e := event.Event{Subject: subject, Source: "bench", Time: time.Now(), Payload: []byte(`{"v":1}`)}
		enc, _ := e.Marshal(nil)
		if _, err := q.AppendEntries(ctx, []buffer.Entry{{Data: enc, Lane: l}}); err != nil && ctx.Err() == nil {
			b.Error(err)
		}
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for res.firstLive == 0 || res.alarm == 0 || q.Stats().FirstSeq <= benchEvents {
		select {
		case subj := <-arrived:
			switch {
			case strings.HasSuffix(subj, ".alarm"):
				res.alarm = time.Since(alarmAt)
			case res.firstLive == 0:
				res.firstLive = time.Since(start)
			}
		case <-tick.C:
			appendLive("telemetry."+gw+".live.reading", buffer.DefaultLane)
			if alarmAt.IsZero() && time.Since(start) > 2*time.Second {
				alarmAt = time.Now()
				appendLive("telemetry."+gw+".live.alarm", buffer.Lane{Priority: 0})
			}
		case err := <-done:
			b.Fatalf("Run: %v", err)
		case <-time.After(5 * time.Minute):
			b.Fatal("not drained in 5 minutes")
		}
	}
	res.drain = benchEvents / time.Since(start).Seconds()
	cancel()
	<-done
	return res
}

package forward_test

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/event"
	"github.com/edgegw/edgegw/gateway/forward"
	"github.com/edgegw/edgegw/gateway/natstest"
)

// readingEvent is a sensor-like reading of about 60 bytes of JSON on a
// sensor's subject, as the metered-link issue measured them.
func readingEvent(i int) event.Event {
	return event.Event{
		Subject: "telemetry." + gw + ".sensors.lobby.d3.temp",
		Source:  "sensors/lobby/d3/temp",
		Time:    t0.Add(time.Duration(i) * 10 * time.Second),
		Payload: fmt.Appendf(nil, `{"sensor":"lobby-d3","ts":%d,"values":{"temperature_c":%.2f}}`, 1765000000+10*i, 21+float64(i%37)/10),
	}
}

// wire is what one drain of n readings cost on the wire.
type wire struct {
	up, down int64
	took     time.Duration
}

func (w wire) perReading(n int) float64 { return float64(w.up+w.down) / float64(n) }

// meter drains n readings from a fresh buffer through the forwarder, over
// u, through a counting relay to the server.
func meter(t testing.TB, u uplink, n int) wire {
	t.Helper()
	mod, ca := natstest.WSS(t) // a server with both listeners either way
	srv := natstest.Start(t, mod)
	js, _ := jetstream.New(connect(t, srv.URL()))
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "TELEMETRY", Subjects: []string{"telemetry.>"}}); err != nil {
		t.Fatal(err)
	}
	target, scheme, trust := srv.URL()[len("nats://"):], "nats://", ""
	if u.wss {
		target, scheme, trust = srv.WSURL()[len("wss://"):], "wss://", ca
	}
	r := startRelay(t, target)
	nc := u.connect(t, scheme+r.addr(), trust)
	q, err := buffer.Open(filepath.Join(t.TempDir(), "buf.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	var batch [][]byte
	for i := range n {
		e := readingEvent(i)
		b, _ := e.Marshal(nil)
		batch = append(batch, b)
	}
	if _, err := q.Append(context.Background(), batch...); err != nil {
		t.Fatal(err)
	}
	o := options()
	o.Stream.Create = false
	f, err := forward.New(q, nc, o)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	runForwarder(t, f, q, nil)
	w := wire{up: r.up.Load(), down: r.down.Load(), took: time.Since(start)}
	if st := f.Stats(); st.Acked != uint64(n) {
		t.Fatalf("%s: acked %d of %d", u.name, st.Acked, n)
	}
	return w
}

// TestCompressedUplinkBytes: the same 2,000 readings over plain NATS, over
// wss:// without compression and with it. Compression on costs at most a
// fifth of the bytes of plain NATS (up and down together); off, it does
// not.
func TestCompressedUplinkBytes(t *testing.T) {
	const n = 2000
	plain := meter(t, uplink{name: "nats"}, n)
	off := meter(t, uplink{name: "wss", wss: true}, n)
	on := meter(t, uplink{name: "wss+compression", wss: true, compression: true}, n)
	t.Logf("bytes per reading: nats %.1f (up %d, down %d), wss %.1f, wss+compression %.1f (up %d, down %d)",
		plain.perReading(n), plain.up, plain.down, off.perReading(n), on.perReading(n), on.up, on.down)
	if r := on.perReading(n) / plain.perReading(n); r > 0.2 {
		t.Errorf("wss with compression costs %.2f× plain NATS, want ≤ 0.2", r)
	}
	if r := off.perReading(n) / plain.perReading(n); r < 0.8 {
		t.Errorf("wss without compression costs %.2f× plain NATS: compression is on when it should not be", r)
	}
}

// cpuUsed is the CPU time (user and system) this process has used.
func cpuUsed() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkMeteredUplink is the metered-link figure: 20,000 readings of
// about 60 bytes drained by the forwarder through a counting relay, over
// plain NATS and over wss:// with per-message deflate, in the same run:
// bytes per reading up and down, the drain rate, and the CPU per reading
// of the whole process (the forwarder, the relay and the in-process
// server: both ends of the deflate).
//
//	go test -run '^$' -bench MeteredUplink -benchtime 1x -count 3 ./gateway/forward/
func BenchmarkMeteredUplink(b *testing.B) {
	const n = 20_000
	for range b.N {
		c0 := cpuUsed()
		plain := meter(b, uplink{name: "nats"}, n)
		c1 := cpuUsed()
		on := meter(b, uplink{name: "wss+compression", wss: true, compression: true}, n)
		c2 := cpuUsed()
		b.ReportMetric(float64((c1-c0).Microseconds())/n, "nats-cpu-us/reading")
		b.ReportMetric(float64((c2-c1).Microseconds())/n, "wss-deflate-cpu-us/reading")
		b.ReportMetric(float64(plain.up)/n, "nats-up-B/reading")
		b.ReportMetric(float64(plain.down)/n, "nats-down-B/reading")
		b.ReportMetric(float64(on.up)/n, "wss-deflate-up-B/reading")
		b.ReportMetric(float64(on.down)/n, "wss-deflate-down-B/reading")
		b.ReportMetric(on.perReading(n)/plain.perReading(n), "bytes-x-plain")
		b.ReportMetric(n/plain.took.Seconds(), "nats-readings/s")
		b.ReportMetric(n/on.took.Seconds(), "wss-deflate-readings/s")
		b.ReportMetric(plain.took.Seconds()/on.took.Seconds(), "rate-x-plain")
	}
}

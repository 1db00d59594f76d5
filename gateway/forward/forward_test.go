package forward_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/event"
	"github.com/edgegw/edgegw/gateway/forward"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/wait"
)

const gw = "gw1"

var t0 = time.Date(2026, 11, 24, 5, 0, 0, 0, time.UTC)

// testEvent is the i-th event of a test: its subject, source, time and
// payload all derive from i, so what arrives can be checked.
func testEvent(i int) event.Event {
	return event.Event{
		Subject: fmt.Sprintf("telemetry.%s.room%d", gw, i%7),
		Source:  fmt.Sprintf("sensors/room%d", i%7),
		Time:    t0.Add(time.Duration(i) * time.Millisecond),
		Payload: []byte(fmt.Sprintf(`{"i":%d,"t":%d.5}`, i, i%40)),
	}
}

// fillQueue opens a buffer at path and appends events [from, to).
func fillQueue(t testing.TB, path string, from, to int) *buffer.Queue {
	t.Helper()
	q, err := buffer.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	var batch [][]byte
	for i := from; i < to; i++ {
		e := testEvent(i)
		b, err := e.Marshal(nil)
		if err != nil {
			t.Fatal(err)
		}
		batch = append(batch, b)
		if len(batch) == 5000 || i == to-1 {
			if _, err := q.Append(context.Background(), batch...); err != nil {
				t.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	return q
}

func options() forward.Options {
	return forward.Options{
		GatewayID: gw,
		Stream: forward.StreamOptions{
			Name:     "TELEMETRY",
			Subjects: []string{"telemetry.>"},
			Create:   true,
		},
		Filters:    []string{"telemetry." + gw + ".>"},
		AckTimeout: 2 * time.Second,
	}
}

func connect(t testing.TB, url string) *nats.Conn {
	t.Helper()
	nc, err := forward.Connect(forward.ConnOptions{Servers: []string{url}, ReconnectWait: 50 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// runForwarder runs f until the queue is drained (n events acked), then
// stops it and checks Run returned nil.
func runForwarder(t testing.TB, f *forward.Forwarder, q *buffer.Queue, during func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	if during != nil {
		during()
	}
	deadline := time.After(2 * time.Minute)
	for q.Stats().Events > 0 || q.Flush(context.Background()) != nil || q.Stats().Events > 0 {
		select {
		case err := <-done:
			t.Fatalf("Run returned early: %v", err)
		case <-deadline:
			t.Fatalf("not drained in 2 minutes: buffer %+v, forwarder %+v", q.Stats(), f.Stats())
		case <-time.After(20 * time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// checkStream reads the whole stream with an ordered consumer and checks
// that events [0, n) are there exactly once, in order, byte for byte, with
// their headers.
func checkStream(t testing.TB, url string, n int) { checkStreamOrder(t, url, n, true) }

// checkStreamOrder is checkStream; with inOrder false it checks each event
// is there exactly once, in any order.
func checkStreamOrder(t testing.TB, url string, n int, inOrder bool) {
	t.Helper()
	msgs := natstest.Messages(t, url)
	if len(msgs) != n {
		t.Errorf("stream holds %d messages, want %d", len(msgs), n)
	}
	var firstSeq uint64
	seen := map[uint64]bool{}
	outOfOrder := 0
	for i, m := range msgs {
		h := m.Headers()
		seq, err := strconv.ParseUint(strings.TrimPrefix(h.Get(jetstream.MsgIDHeader), gw+"-"), 10, 64)
		if err != nil {
			t.Fatalf("message %d: msg id %q", i, h.Get(jetstream.MsgIDHeader))
		}
		if i == 0 {
			firstSeq = seq // buffer seqs start at 1 in these tests
		}
		if seen[seq] {
			t.Fatalf("message %d: buffer seq %d is in the stream twice", i, seq)
		}
		seen[seq] = true
		if seq != firstSeq+uint64(i) {
			if inOrder {
				t.Fatalf("message %d has buffer seq %d, want %d: out of order", i, seq, firstSeq+uint64(i))
			}
			outOfOrder++
		}
		want := testEvent(int(seq - 1))
		if m.Subject() != want.Subject || !bytes.Equal(m.Data(), want.Payload) {
			t.Fatalf("message %d (seq %d): %s %q, want %s %q", i, seq, m.Subject(), m.Data(), want.Subject, want.Payload)
		}
		if h.Get(forward.HeaderGateway) != gw || h.Get(forward.HeaderSource) != want.Source ||
			h.Get(forward.HeaderTime) != want.Time.Format(time.RFC3339Nano) {
			t.Fatalf("message %d headers: %v", i, h)
		}
	}
	if outOfOrder > 0 {
		t.Logf("%d messages out of buffer order", outOfOrder)
	}
}

func TestForwards100kOnceInOrderWithHeaders(t *testing.T) {
	const n = 100_000
	srv := natstest.Start(t, nil)
	q := fillQueue(t, filepath.Join(t.TempDir(), "buf.db"), 0, n)
	defer q.Close()
	f, err := forward.New(q, connect(t, srv.URL()), options())
	if err != nil {
		t.Fatal(err)
	}
	runForwarder(t, f, q, nil)
	st := f.Stats()
	if st.Acked != n || st.Rejected != 0 {
		t.Fatalf("forwarder stats: %+v", st)
	}
	checkStream(t, srv.URL(), n)
}

// The server goes away three times mid-drain and comes back on the same
// port and store: every event arrives exactly once, in order, over plain
// NATS and over wss:// with compression.
func TestServerRestartsMidDrain(t *testing.T) {
	for _, u := range uplinks {
		t.Run(u.name, func(t *testing.T) { serverRestartsMidDrain(t, u) })
	}
}

func serverRestartsMidDrain(t *testing.T, u uplink) {
	const n = 60_000
	srv, nc := u.start(t)
	q := fillQueue(t, filepath.Join(t.TempDir(), "buf.db"), 0, n)
	defer q.Close()
	o := options()
	o.RateEvents = 20_000 // slow enough that the restarts land mid-drain
	f, err := forward.New(q, nc, o)
	if err != nil {
		t.Fatal(err)
	}
	runForwarder(t, f, q, func() {
		for k := 1; k <= 3; k++ {
			wait.For(t, "f.Stats().Acked >= uint64(k*n/5)", func() bool { return f.Stats().Acked >= uint64(k*n/5) })
			srv.Shutdown()
			time.Sleep(300 * time.Millisecond) // an outage, not a blip
			srv.Restart()
			t.Logf("restart %d at %d acked", k, f.Stats().Acked)
		}
	})
	st := f.Stats()
	t.Logf("forwarder: %+v", st)
	if st.Resent == 0 && st.Skipped == 0 {
		t.Fatal("no publish was in flight at any restart: the test did not test a restart mid-drain")
	}
	checkStream(t, srv.URL(), n)
}

// A missing stream (create off) never stops Run: a gateway that exits
// buffers nothing. It keeps buffering and says why in Stats (and so
// /status and /readyz) until the stream is there.
func TestMissingStreamWithoutCreateIsAClearError(t *testing.T) {
	srv := natstest.Start(t, nil)
	q := fillQueue(t, filepath.Join(t.TempDir(), "buf.db"), 0, 10)
	defer q.Close()
	o := options()
	o.Stream.Create = false
	nc := connect(t, srv.URL())
	f, err := forward.New(q, nc, o)
	if err != nil {
		t.Fatal(err)
	}
	runForwarder(t, f, q, func() {
		wait.For(t, "a config error naming the missing stream TELEMETRY", func() bool {
			st := f.Stats()
			return st.ConfigError && strings.Contains(st.LastError, "stream TELEMETRY not found")
		})
		if q.Stats().Events != 10 {
			t.Fatal("events left the buffer")
		}
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "TELEMETRY", Subjects: []string{"telemetry.>"}}); err != nil {
			t.Fatal(err)
		}
	})
	checkStream(t, srv.URL(), 10)
}

// A subject the stream does not capture holds only its own events: the
// others flow at once; Stats names the held route and the fix; once the
// stream's subjects are widened the held events arrive, each once and in
// order per subject, without a restart.
func TestUncapturedSubjectHoldsOnlyItsEvents(t *testing.T) {
	srv := natstest.Start(t, nil)
	nc := connect(t, srv.URL())
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The stream captures only room0's subject.
	scfg := jetstream.StreamConfig{Name: "TELEMETRY", Subjects: []string{"telemetry.gw1.room0"}}
	if _, err := js.CreateStream(ctx, scfg); err != nil {
		t.Fatal(err)
	}
	q := fillQueue(t, filepath.Join(t.TempDir(), "buf.db"), 0, 70)
	defer q.Close()
	o := options()
	o.Stream.Create = false
	o.Filters = []string{"telemetry.gw1.room0", "telemetry.gw1.room1"}
	f, err := forward.New(q, nc, o)
	if err != nil {
		t.Fatal(err)
	}
	runForwarder(t, f, q, func() {
		wait.For(t, "10 acked and 60 held on six routes", func() bool {
			h := f.Stats().Held
			// The 60 held stay in the buffer; the acked ones leave it.
			return f.Stats().Acked == 10 && len(h) == 6 && h[0].Route == "telemetry.gw1.room1" && h[0].Events == 10 && q.Stats().Events == 60
		})
		h := f.Stats().Held[0]
		if !strings.Contains(h.Why, "does not capture telemetry.gw1.room1") || !strings.Contains(h.Why, "add telemetry.gw1.room1 to the stream's subjects") {
			t.Fatalf("held: %+v", h)
		}
		scfg.Subjects = []string{"telemetry.>"}
		if _, err := js.UpdateStream(ctx, scfg); err != nil {
			t.Fatal(err)
		}
	})
	if h := f.Stats().Held; len(h) != 0 {
		t.Fatalf("still held after the stream captures every subject: %+v", h)
	}
	checkPerSubjectOrder(t, srv.URL(), 70)
}

// checkPerSubjectOrder checks that events [0, n) are in the stream once
// each, byte for byte, and in order among those of one subject.
func checkPerSubjectOrder(t testing.TB, url string, n int) {
	t.Helper()
	last := map[string]int{}
	seen := map[int]bool{}
	for _, m := range natstest.Messages(t, url) {
		var i int
		if _, err := fmt.Sscanf(string(m.Data()), `{"i":%d`, &i); err != nil {
			t.Fatalf("%q: %v", m.Data(), err)
		}
		if seen[i] {
			t.Fatalf("event %d twice", i)
		}
		seen[i] = true
		e := testEvent(i)
		if m.Subject() != e.Subject || string(m.Data()) != string(e.Payload) {
			t.Fatalf("event %d: %s %q", i, m.Subject(), m.Data())
		}
		if p, ok := last[m.Subject()]; ok && p > i {
			t.Fatalf("on %s event %d after %d", m.Subject(), i, p)
		}
		last[m.Subject()] = i
	}
	if len(seen) != n {
		t.Fatalf("%d events in the stream, want %d", len(seen), n)
	}
}

// An event that can never be published (here: a subject with a wildcard)
// is set aside and counted; the events around it flow.
func TestUnpublishableEventIsSetAside(t *testing.T) {
	srv := natstest.Start(t, nil)
	q, err := buffer.Open(filepath.Join(t.TempDir(), "buf.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for i, subj := range []string{"telemetry.gw1.a", "telemetry.gw1.*", "telemetry.gw1.b"} {
		e := event.Event{Subject: subj, Payload: []byte{byte(i)}}
		b, _ := e.Marshal(nil)
		q.Append(context.Background(), b)
	}
	q.Append(context.Background(), []byte("not an event"))
	f, err := forward.New(q, connect(t, srv.URL()), options())
	if err != nil {
		t.Fatal(err)
	}
	runForwarder(t, f, q, nil)
	if st := f.Stats(); st.Acked != 2 || st.Rejected != 2 {
		t.Fatalf("stats: %+v, want 2 acked and 2 set aside", st)
	}
	dead, err := q.DeadLetters(0, 10)
	if err != nil || len(dead) != 2 {
		t.Fatalf("dead letters: %+v, %v; want the 2 set aside", dead, err)
	}
	if string(dead[1].Data) != "not an event" || !strings.Contains(dead[0].Reason, "telemetry.gw1.*") {
		t.Fatalf("dead letters: %+v", dead)
	}
}

// An event whose bytes changed on disk (bit rot in a file that opens
// fine) fails its checksum at read: it is set aside with the reason, and
// the rest flows, once and in order.
func TestDamagedEventIsSetAside(t *testing.T) {
	srv := natstest.Start(t, nil)
	path := filepath.Join(t.TempDir(), "buf.db")
	fillQueue(t, path, 0, 100).Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	spoiled := 0
	for i := 0; ; {
		j := bytes.Index(b[i:], []byte(`{"i":50,`))
		if j < 0 {
			break
		}
		b[i+j+6] ^= 1 // "50" reads "51": it still decodes, and lies
		i += j + 1
		spoiled++
	}
	if spoiled == 0 {
		t.Fatal("event 50 is not in the file")
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	q, err := buffer.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	f, err := forward.New(q, connect(t, srv.URL()), options())
	if err != nil {
		t.Fatal(err)
	}
	runForwarder(t, f, q, nil)
	if st := f.Stats(); st.Acked != 99 || st.Rejected != 1 {
		t.Fatalf("stats: %+v, want 99 acked and 1 set aside", st)
	}
	dead, err := q.DeadLetters(0, 10)
	if err != nil || len(dead) != 1 || dead[0].Seq != 51 || !strings.HasPrefix(dead[0].Reason, "checksum: ") {
		t.Fatalf("dead letters: %+v, %v; want seq 51 with the reason checksum", dead, err)
	}
	ids := msgIDs(t, srv.URL())
	for i := 1; i <= 100; i++ {
		if want := map[bool]int{true: 0, false: 1}[i == 51]; ids[fmt.Sprintf("%s-%d", gw, i)] != want {
			t.Fatalf("seq %d is in the stream %d times, want %d", i, ids[fmt.Sprintf("%s-%d", gw, i)], want)
		}
	}
}

func TestOptionsValidation(t *testing.T) {
	q, err := buffer.Open(filepath.Join(t.TempDir(), "buf.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	for _, mod := range []func(*forward.Options){
		func(o *forward.Options) { o.GatewayID = "" },
		func(o *forward.Options) { o.GatewayID = "a.b" },
		func(o *forward.Options) { o.Stream.Name = "" },
		func(o *forward.Options) { o.Filters, o.Stream.Subjects = nil, nil },
		func(o *forward.Options) { o.RateEvents = -1 },
	} {
		o := options()
		mod(&o)
		if _, err := forward.New(q, nil, o); err == nil {
			t.Errorf("New(%+v): no error", o)
		}
	}
	if _, err := forward.Connect(forward.ConnOptions{}, nil); err == nil {
		t.Error("Connect with no servers: no error")
	}
	if _, err := forward.Connect(forward.ConnOptions{Servers: []string{"::nope"}}, nil); err == nil {
		t.Error("Connect with a bad URL: no error")
	}
}

// lockedBuffer collects a child's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestEscapeHeader(t *testing.T) {
	for in, want := range map[string]string{
		"sensors/lobby/temp":      "sensors/lobby/temp",
		"a b/ünï":                 "a b/ünï",
		"x\r\nNats-Msg-Id: gw1-1": "x%0D%0ANats-Msg-Id: gw1-1",
		" lead/trail ":            "%20lead/trail%20",
		"100%":                    "100%25",
		"tab\there\x00\x7f":       "tab%09here%00%7F",
	} {
		if got := forward.EscapeHeader(in); got != want {
			t.Errorf("EscapeHeader(%q) = %q, want %q", in, got, want)
		}
	}
}

// The drain rate caps hold. 3,000 events at 2,000 events/s, with a burst
// of a tenth of a second (200), take at least (3000-200)/2000 = 1.4 s; 600
// payloads (their bytes summed below) at 4,000 bytes/s, with a burst of
// one second (4,000 bytes), at least (sum-4000)/4000.
func TestRateLimits(t *testing.T) {
	srv := natstest.Start(t, nil)
	payload := 0
	for i := range 600 {
		payload += len(testEvent(i).Payload)
	}
	tests := []struct {
		name    string
		n       int
		mod     func(*forward.Options)
		atLeast time.Duration
	}{
		{"events per second", 3000, func(o *forward.Options) { o.RateEvents = 2000 }, 1400 * time.Millisecond},
		{"bytes per second", 600, func(o *forward.Options) { o.RateBytes = 4000 }, time.Duration(payload-4000) * time.Second / 4000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := fillQueue(t, filepath.Join(t.TempDir(), "buf.db"), 0, tt.n)
			defer q.Close()
			o := options()
			tt.mod(&o)
			f, err := forward.New(q, connect(t, srv.URL()), o)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			runForwarder(t, f, q, nil)
			if el := time.Since(start); el < tt.atLeast {
				t.Fatalf("drained %d events in %s; the cap allows no less than %s", tt.n, el, tt.atLeast)
			}
		})
	}
}

// Stopping mid-drain: Run returns nil within the stop timeout, what was
// acknowledged left the buffer, and the rest is still there, each event in
// exactly one of the two places.
func TestGracefulStopLeavesTheRestBuffered(t *testing.T) {
	const n = 20_000
	srv := natstest.Start(t, nil)
	q := fillQueue(t, filepath.Join(t.TempDir(), "buf.db"), 0, n)
	defer q.Close()
	o := options()
	o.RateEvents = 10_000
	o.StopTimeout = 2 * time.Second
	f, err := forward.New(q, connect(t, srv.URL()), o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	wait.For(t, "f.Stats().Acked > n/4", func() bool { return f.Stats().Acked > n/4 })
	stopped := time.Now()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	if el := time.Since(stopped); el > o.StopTimeout+time.Second {
		t.Fatalf("stop took %s", el)
	}
	if err := q.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	inStream := streamCount(t, srv.URL())
	held := q.Stats().Events
	if inStream+held != n || inStream == 0 || held == 0 {
		t.Fatalf("%d in the stream + %d still buffered != %d", inStream, held, n)
	}
	t.Logf("stopped with %d delivered and %d buffered", inStream, held)
	// Starting again delivers the rest, once.
	f2, _ := forward.New(q, connect(t, srv.URL()), options())
	runForwarder(t, f2, q, nil)
	checkStream(t, srv.URL(), n)
}

func streamCount(t testing.TB, url string) uint64 {
	t.Helper()
	n, err := natstest.StreamMsgs(url, "TELEMETRY")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// With the server gone the forwarder waits: it publishes nothing (no spin,
// nothing handed to nats.go to hold in memory) and every unacknowledged
// event stays in the buffer; when the server returns, the rest arrives once.
func TestDisconnectedForwarderWaitsWithEverythingBuffered(t *testing.T) {
	const n = 20_000
	srv := natstest.Start(t, nil)
	q := fillQueue(t, filepath.Join(t.TempDir(), "buf.db"), 0, n)
	defer q.Close()
	o := options()
	o.RateEvents = 10_000
	f, err := forward.New(q, connect(t, srv.URL()), o)
	if err != nil {
		t.Fatal(err)
	}
	runForwarder(t, f, q, func() {
		wait.For(t, "f.Stats().Acked > n/4", func() bool { return f.Stats().Acked > n/4 })
		srv.Shutdown()
		wait.For(t, "!f.Stats().Connected", func() bool { return !f.Stats().Connected })
		// An outage reads as one, not as what nats.go says of a publish
		// into a dropped connection.
		wait.For(t, "strings.HasPrefix(f.Stats().LastError, \"uplink down since \")", func() bool { return strings.HasPrefix(f.Stats().LastError, "uplink down since ") })
		if st := f.Stats(); st.DownSince.IsZero() || time.Since(st.DownSince) > time.Minute {
			t.Errorf("DownSince = %v", st.DownSince)
		}
		// The session ended (LastError says so only then), and a new one
		// starts only on a connection: nothing is published meanwhile.
		after := f.Stats()
		if err := q.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
		if st := q.Stats(); st.FirstSeq > after.LastSeq+1 || st.Events != uint64(n)-after.LastSeq {
			t.Errorf("buffer holds seqs %d.. (%d events), but the stream acknowledged only up to %d", st.FirstSeq, st.Events, after.LastSeq)
		}
		srv.Restart()
	})
	checkStream(t, srv.URL(), n)
}

// A stream deleted under a running gateway (the hub changed, not the
// config) does not stop it: Run logs, keeps buffering, and delivers once
// the stream is back.
func TestStreamDeletedUnderARunningForwarder(t *testing.T) {
	srv := natstest.Start(t, nil)
	nc := connect(t, srv.URL())
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := jetstream.StreamConfig{Name: "TELEMETRY", Subjects: []string{"telemetry.>"}}
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	q := fillQueue(t, filepath.Join(t.TempDir(), "buf.db"), 0, 100)
	defer q.Close()
	o := options()
	o.Stream.Create = false
	f, err := forward.New(q, nc, o)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- f.Run(runCtx) }()
	wait.For(t, "the first 100 acked", func() bool { return f.Stats().Acked == 100 })

	if err := js.DeleteStream(ctx, "TELEMETRY"); err != nil {
		t.Fatal(err)
	}
	for i := 100; i < 200; i++ {
		e := testEvent(i)
		b, _ := e.Marshal(nil)
		if _, err := q.Append(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned when the stream went away: %v", err)
	case <-time.After(2 * time.Second):
	}
	if ev := q.Stats().Events; ev != 100 {
		t.Fatalf("buffer holds %d, want the 100 appended since", ev)
	}
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "the next 100 acked", func() bool { return f.Stats().Acked == 200 })
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := streamCount(t, srv.URL()); n != 100 {
		t.Fatalf("new stream holds %d, want 100", n)
	}
}

// An uplink down from the start reads as an outage in LastError too, not
// as nothing: waitConnected says it, whether or not a session ended first.
func TestUplinkDownFromTheStartIsSaid(t *testing.T) {
	port := natstest.FreePort(t) // nothing listens there
	q := fillQueue(t, filepath.Join(t.TempDir(), "buf.db"), 0, 10)
	defer q.Close()
	f, err := forward.New(q, connect(t, fmt.Sprintf("nats://127.0.0.1:%d", port)), options())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	wait.For(t, "LastError to say the uplink is down", func() bool { return strings.HasPrefix(f.Stats().LastError, "uplink down since ") })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.Events != 10 {
		t.Fatalf("the buffer holds %d events, want all 10", st.Events)
	}
}

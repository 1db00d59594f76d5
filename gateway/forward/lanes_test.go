package forward_test

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/forward"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/wait"
)

// stored is one message of the stream, as the lane tests look at it.
type stored struct {
	seq      uint64 // the buffer seq, from Nats-Msg-Id
	priority int
	backfill bool
}

// streamMessages reads the whole stream in stream order.
func streamMessages(t testing.TB, url string) []stored {
	t.Helper()
	var out []stored
	for _, m := range natstest.Messages(t, url) {
		h := m.Headers()
		seq, err := strconv.ParseUint(strings.TrimPrefix(h.Get(jetstream.MsgIDHeader), gw+"-"), 10, 64)
		if err != nil {
			t.Fatalf("msg id %q", h.Get(jetstream.MsgIDHeader))
		}
		p := buffer.DefaultPriority
		if v := h.Get(forward.HeaderPriority); v != "" {
			p, _ = strconv.Atoi(v)
		}
		out = append(out, stored{seq: seq, priority: p, backfill: h.Get(forward.HeaderBackfill) == "true"})
	}
	return out
}

// checkOnceAndLaneOrder checks that seqs 1..n are each in msgs once, and
// that within each lane the live events and the backfill each keep seq
// order.
func checkOnceAndLaneOrder(t testing.TB, msgs []stored, n int) {
	t.Helper()
	seen := map[uint64]int{}
	type class struct {
		priority int
		backfill bool
	}
	last := map[class]uint64{}
	for i, m := range msgs {
		seen[m.seq]++
		k := class{m.priority, m.backfill}
		if m.seq <= last[k] {
			t.Fatalf("message %d: seq %d of priority %d (backfill %v) after seq %d of the same: lane order broken", i, m.seq, m.priority, m.backfill, last[k])
		}
		last[k] = m.seq
	}
	for seq := uint64(1); seq <= uint64(n); seq++ {
		if seen[seq] != 1 {
			t.Errorf("seq %d is in the stream %d times, want once", seq, seen[seq])
		}
	}
	if len(msgs) != n {
		t.Fatalf("stream holds %d messages, want %d", len(msgs), n)
	}
}

func appendTo(t testing.TB, q *buffer.Queue, l buffer.Lane, from, to int) {
	t.Helper()
	var entries []buffer.Entry
	for i := from; i < to; i++ {
		e := testEvent(i)
		b, _ := e.Marshal(nil)
		entries = append(entries, buffer.Entry{Data: b, Lane: l})
	}
	if _, err := q.AppendEntries(context.Background(), entries); err != nil {
		t.Fatal(err)
	}
}

// With live_first, events that arrive while a backlog drains go before
// it: the backlog follows, oldest first, marked as backfill; a priority 0
// event goes before everything.
func TestLiveFirstSendsNewEventsBeforeTheBacklog(t *testing.T) {
	srv := natstest.Start(t, nil)
	q, err := buffer.Open(filepath.Join(t.TempDir(), "buf.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	const backlog = 20_000
	appendTo(t, q, buffer.DefaultLane, 0, backlog)
	o := options()
	o.Drain = forward.LiveFirst
	o.RateEvents = 5000 // about 4s of backlog
	f, err := forward.New(q, connect(t, srv.URL()), o)
	if err != nil {
		t.Fatal(err)
	}
	runForwarder(t, f, q, func() {
		wait.For(t, "f.Stats().Acked > 1000", func() bool { return f.Stats().Acked > 1000 })
		appendTo(t, q, buffer.DefaultLane, backlog, backlog+50)
		appendTo(t, q, buffer.Lane{Priority: 0}, backlog+50, backlog+51)
	})
	msgs := streamMessages(t, srv.URL())
	checkOnceAndLaneOrder(t, msgs, backlog+51)
	var live, lastBackfill, p0 int = -1, -1, -1
	for i, m := range msgs {
		switch {
		case m.seq > backlog && m.backfill:
			t.Fatalf("live seq %d is marked backfill", m.seq)
		case m.seq <= backlog && !m.backfill:
			t.Fatalf("backlog seq %d is not marked backfill", m.seq)
		case m.seq == backlog+51:
			p0 = i
		case m.seq > backlog && live < 0:
			live = i
		case m.backfill:
			lastBackfill = i
		}
	}
	if live > lastBackfill || p0 > lastBackfill {
		t.Fatalf("the first live event is message %d, the priority 0 one %d, and the backlog ends at %d: live events waited for the backlog", live, p0, lastBackfill)
	}
	if st := f.Stats(); st.Backfill != backlog {
		t.Fatalf("stats %+v: want %d sent as backfill", st, backlog)
	}
}

// With lower_share, a lane under a constant flood of a higher one still
// gets its share of the sends.
func TestLowerLaneDoesNotStarve(t *testing.T) {
	srv := natstest.Start(t, nil)
	q, err := buffer.Open(filepath.Join(t.TempDir(), "buf.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	appendTo(t, q, buffer.Lane{Priority: 9}, 0, 2_000)
	appendTo(t, q, buffer.Lane{Priority: 0}, 2_000, 20_000)
	o := options()
	o.RateEvents = 10_000
	f, err := forward.New(q, connect(t, srv.URL()), o)
	if err != nil {
		t.Fatal(err)
	}
	runForwarder(t, f, q, nil)
	msgs := streamMessages(t, srv.URL())
	checkOnceAndLaneOrder(t, msgs, 20_000)
	// While priority 0 still had events, priority 9 had its tenth.
	low := 0
	for _, m := range msgs[:10_000] {
		if m.priority == 9 {
			low++
		}
	}
	if low < 900 || low > 1100 {
		t.Fatalf("priority 9 had %d of the first 10000 sends, want a tenth", low)
	}
	// And strict priority otherwise: no priority 9 event went before the
	// first priority 0 one... except its share.
	if msgs[0].priority != 0 {
		t.Fatalf("first message is priority %d", msgs[0].priority)
	}
}

// Out-of-order acknowledgements and an outage longer than the duplicate
// window: the read-back past the cursor, not the stream's last message,
// says what is already there. Here the stream stores a window of publishes
// whose PubAcks never reach the forwarder (the connection is cut after
// the server stored them), then the duplicate window passes.
func TestReadBackAfterTheDuplicateWindow(t *testing.T) {
	for _, u := range uplinks {
		t.Run(u.name, func(t *testing.T) { readBackAfterTheDuplicateWindow(t, u) })
	}
}

func readBackAfterTheDuplicateWindow(t *testing.T, u uplink) {
	srv, nc := u.start(t)
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "TELEMETRY", Subjects: []string{"telemetry.>"}, Duplicates: 500 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	q, err := buffer.Open(filepath.Join(t.TempDir(), "buf.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	// A backlog in two lanes; live events arrive during the drain.
	appendTo(t, q, buffer.Lane{Priority: 7}, 0, 3000)
	appendTo(t, q, buffer.DefaultLane, 3000, 6000)
	o := options()
	o.Stream.Create = false
	o.Drain = forward.LiveFirst
	o.RateEvents = 4000
	f, err := forward.New(q, nc, o)
	if err != nil {
		t.Fatal(err)
	}
	runForwarder(t, f, q, func() {
		wait.For(t, "f.Stats().Acked > 1000", func() bool { return f.Stats().Acked > 1000 })
		appendTo(t, q, buffer.Lane{Priority: 2}, 6000, 6500)
		wait.For(t, "f.Stats().Acked > 2500", func() bool { return f.Stats().Acked > 2500 })
		// The uplink drops (PubAcks of stored messages lost with it) for
		// longer than the duplicate window.
		srv.Shutdown()
		time.Sleep(time.Second)
		srv.Restart()
	})
	msgs := streamMessages(t, srv.URL())
	checkOnceAndLaneOrder(t, msgs, 6500)
	if st := f.Stats(); st.Skipped == 0 {
		t.Logf("stats %+v: no event was found already in the stream on reconnect", st)
	}
}

// stepClock is a machine clock for the buffer: one boot, the wall clock
// unsynchronized until sync steps it.
type stepClock struct {
	mu sync.Mutex
	s  buffer.Stamp
}

func (c *stepClock) Now() buffer.Stamp {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.s
}

func (c *stepClock) sync(step time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.s.Wall, c.s.Synced = c.s.Wall.Add(step), true
}

// An event taken before the clock synchronized is sent with its time
// corrected by the boot's first sync; one whose boot never synchronized
// says so in Edgegw-Time-Unsynced.
func TestUnsynchronizedTimesCorrectedOrMarked(t *testing.T) {
	srv := natstest.Start(t, nil)
	stale := t0.Add(-400 * 24 * time.Hour) // fake-hwclock's saved time
	clock := &stepClock{s: buffer.Stamp{Boot: "b1", Since: time.Minute, Wall: stale}}
	q, err := buffer.Open(filepath.Join(t.TempDir(), "buf.db"), &buffer.Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	e := testEvent(0)
	e.Time = stale
	b, _ := e.Marshal(nil)
	q.Append(context.Background(), b)

	// Sent before any sync: marked, its time as the clock said.
	f, err := forward.New(q, connect(t, srv.URL()), options())
	if err != nil {
		t.Fatal(err)
	}
	runForwarder(t, f, q, nil)
	m := natstest.Messages(t, srv.URL())[0]
	if m.Headers().Get(forward.HeaderUnsynced) != "true" || m.Headers().Get(forward.HeaderTime) != stale.Format(time.RFC3339Nano) {
		t.Fatalf("before sync: headers %v", m.Headers())
	}

	// Taken unsynchronized, sent after the sync: corrected, not marked.
	e.Time = stale.Add(time.Second)
	b, _ = e.Marshal(nil)
	q.Append(context.Background(), b)
	clock.sync(400 * 24 * time.Hour)
	f, err = forward.New(q, connect(t, srv.URL()), options())
	if err != nil {
		t.Fatal(err)
	}
	runForwarder(t, f, q, nil)
	m = natstest.Messages(t, srv.URL())[1]
	want := stale.Add(time.Second + 400*24*time.Hour).UTC().Format(time.RFC3339Nano)
	if m.Headers().Get(forward.HeaderUnsynced) != "" || m.Headers().Get(forward.HeaderTime) != want {
		t.Fatalf("after sync: headers %v, want time %s unmarked", m.Headers(), want)
	}
}

package forward_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/event"
	"github.com/edgegw/edgegw/gateway/forward"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/wait"
)

// appendEvents appends each event to q, one append each.
func appendEvents(t testing.TB, q *buffer.Queue, events ...event.Event) {
	t.Helper()
	for _, e := range events {
		b, err := e.Marshal(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := q.Append(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
}

func bigEvent(size int) event.Event {
	e := testEvent(1_000_000)
	e.Payload = bytes.Repeat([]byte{'x'}, size)
	return e
}

// checkSetAside checks that exactly one event was set aside, with a reason
// that says want, and that the stream holds testEvent(0..n) once, in order.
func checkSetAside(t *testing.T, q *buffer.Queue, f *forward.Forwarder, url string, n int, want string) {
	t.Helper()
	checkStream(t, url, n)
	if st := f.Stats(); st.Rejected != 1 {
		t.Errorf("forwarder stats %+v: want 1 rejected", st)
	}
	dead, err := q.DeadLetters(0, 10)
	if err != nil || len(dead) != 1 {
		t.Fatalf("dead letters %+v, %v: want 1", dead, err)
	}
	var e event.Event
	if err := e.Unmarshal(dead[0].Data); err != nil || dead[0].Seq != 1 || !bytes.Equal(e.Payload, bigEvent(len(e.Payload)).Payload) {
		t.Fatalf("dead letter seq %d, %d bytes, reason %q: %v; want the big event, whole", dead[0].Seq, dead[0].Size, dead[0].Reason, err)
	}
	if !strings.Contains(dead[0].Reason, want) {
		t.Fatalf("dead letter reason %q does not say %q", dead[0].Reason, want)
	}
	if st := q.Stats(); st.DeadEvents != 1 || st.Events != 0 {
		t.Fatalf("buffer stats %+v: want 1 dead letter and nothing else held", st)
	}
}

// A message the stream refuses for good (over its max_msg_size) is set
// aside in the dead-letter lane, counted, and the 50 behind it are
// delivered: it never blocks them, and it never vanishes unseen.
func TestStreamRefusesOneEventForGood(t *testing.T) {
	srv := natstest.Start(t, nil)
	nc := connect(t, srv.URL())
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "TELEMETRY", Subjects: []string{"telemetry.>"}, MaxMsgSize: 65536}); err != nil {
		t.Fatal(err)
	}
	q, err := buffer.Open(filepath.Join(t.TempDir(), "buf.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	// seq 1 is the big one; seqs 2..51 are testEvent(1..50), as
	// checkStream expects.
	appendEvents(t, q, bigEvent(100<<10))
	appendEventsFrom(t, q, 1, 51)
	o := options()
	o.Stream.Create = false
	f, err := forward.New(q, nc, o)
	if err != nil {
		t.Fatal(err)
	}
	runForwarder(t, f, q, nil)
	checkSetAside(t, q, f, srv.URL(), 50, "size exceeds maximum")

	// A restart does not lose or repeat anything either.
	f2, _ := forward.New(q, nc, o)
	appendEvents(t, q, testEvent(51))
	runForwarder(t, f2, q, nil)
	checkStream(t, srv.URL(), 51)
}

// One event over the server's max_payload (its headers included: a
// 1,048,500-byte payload fits 1 MiB alone, not with them) is set aside;
// the 100 behind it are delivered.
func TestOverServerMaxPayloadIsSetAside(t *testing.T) {
	srv := natstest.Start(t, nil) // max_payload 1 MiB
	q, err := buffer.Open(filepath.Join(t.TempDir(), "buf.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	appendEvents(t, q, bigEvent(1_048_500))
	appendEventsFrom(t, q, 1, 101)
	var logs lockedBuffer
	o := options()
	o.MaxEventBytes = 10 << 20 // mqtt.max_payload: 10MiB
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	f, err := forward.New(q, connect(t, srv.URL()), o)
	if err != nil {
		t.Fatal(err)
	}
	runForwarder(t, f, q, nil)
	checkSetAside(t, q, f, srv.URL(), 100, "max_payload")
	// The mismatch of limits is said once, on connect, with both.
	if n := strings.Count(logs.String(), "server_max_payload=1048576"); n != 1 {
		t.Fatalf("%d warnings naming the server's max_payload, want 1:\n%s", n, logs.String())
	}
}

// A publish that the stream refuses for now (a per-subject limit), twice
// in a row, while later ones are stored: once the limit is lifted it is
// delivered. The stream's last message must not be taken as proof that
// the failed one is there, however many re-sends fail.
func TestRefusedTwiceWhileLaterOnesStored(t *testing.T) {
	srv := natstest.Start(t, nil)
	nc := connect(t, srv.URL())
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := jetstream.StreamConfig{Name: "TELEMETRY", Subjects: []string{"telemetry.>"},
		MaxMsgsPerSubject: 1, Discard: jetstream.DiscardNew, DiscardNewPerSubject: true}
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	q, err := buffer.Open(filepath.Join(t.TempDir(), "buf.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	// seq 2 shares seq 1's subject and is refused; seqs 3..10 are stored.
	const n = 10
	for i := range n {
		e := testEvent(i)
		e.Subject = fmt.Sprintf("telemetry.%s.s%d", gw, max(i, 1))
		appendEvents(t, q, e)
	}
	o := options()
	o.Stream.Create = false
	f, err := forward.New(q, nc, o)
	if err != nil {
		t.Fatal(err)
	}
	runForwarder(t, f, q, func() {
		// A failed window of 9 (seqs 2..10), then the re-send of the gap
		// (seq 2 alone: 3..10 were read back from the stream) failed as
		// well.
		wait.For(t, "f.Stats().Resent >= n", func() bool { return f.Stats().Resent >= n })
		cfg.MaxMsgsPerSubject = 10
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	})
	ids := msgIDs(t, srv.URL())
	for seq := 1; seq <= n; seq++ {
		if c := ids[fmt.Sprintf("%s-%d", gw, seq)]; c != 1 {
			t.Errorf("seq %d is in the stream %d times, want once", seq, c)
		}
	}
	if st := f.Stats(); st.Rejected != 0 {
		t.Fatalf("stats %+v: nothing may be set aside for a limit that can lift", st)
	}
}

// msgIDs counts the stream's messages by Msg-Id.
func msgIDs(t testing.TB, url string) map[string]int {
	t.Helper()
	ids := map[string]int{}
	for _, m := range natstest.Messages(t, url) {
		ids[m.Headers().Get(jetstream.MsgIDHeader)]++
	}
	return ids
}

// The stream the forwarder creates drops a repeated Msg-Id for its whole
// duplicate window (2 minutes by default), not just a moment: re-sends
// after a lost PubAck rest on it.
func TestCreatedStreamDropsARepeatedMsgID(t *testing.T) {
	srv := natstest.Start(t, nil)
	q := fillQueue(t, filepath.Join(t.TempDir(), "buf.db"), 0, 10)
	defer q.Close()
	nc := connect(t, srv.URL())
	f, err := forward.New(q, nc, options())
	if err != nil {
		t.Fatal(err)
	}
	runForwarder(t, f, q, nil)
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := js.Stream(ctx, "TELEMETRY")
	if err != nil {
		t.Fatal(err)
	}
	if d := s.CachedInfo().Config.Duplicates; d != 2*time.Minute {
		t.Fatalf("duplicate window %s, want 2m", d)
	}
	// The window is time: let some pass, then send seq 5 again.
	time.Sleep(500 * time.Millisecond)
	e := testEvent(4)
	ack, err := js.Publish(ctx, e.Subject, e.Payload, jetstream.WithMsgID(gw+"-5"))
	if err != nil {
		t.Fatal(err)
	}
	if !ack.Duplicate {
		t.Fatal("a repeated Msg-Id was stored again")
	}
	checkStream(t, srv.URL(), 10)
}

// A hub that refuses this gateway's password for a while (credentials
// being rotated, a restart with a wrong file) must not cost the gateway its
// uplink: it keeps retrying, and delivers once the password works again.
func TestAuthFailureOnReconnectIsRetried(t *testing.T) {
	srv := natstest.Start(t, func(o *server.Options) { o.Username, o.Password = "edge", "A" })
	nc, err := forward.Connect(forward.ConnOptions{Servers: []string{srv.URL()}, User: "edge", Password: "A", ReconnectWait: 50 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	q := fillQueue(t, filepath.Join(t.TempDir(), "buf.db"), 0, 10)
	defer q.Close()
	f, err := forward.New(q, nc, options())
	if err != nil {
		t.Fatal(err)
	}
	runForwarder(t, f, q, func() {
		wait.For(t, "f.Stats().Acked == 10", func() bool { return f.Stats().Acked == 10 })
		srv.RestartWith(func(o *server.Options) { o.Password = "B" })
		// nats.go gives up after the same auth error twice, unless told
		// otherwise: let it see it many times.
		wait.For(t, "nc.Stats().Reconnects == 0 && !nc.IsConnected()", func() bool { return nc.Stats().Reconnects == 0 && !nc.IsConnected() })
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) {
			if nc.IsClosed() {
				t.Fatal("the connection was closed after auth errors")
			}
			time.Sleep(20 * time.Millisecond)
		}
		appendEventsFrom(t, q, 10, 20)
		srv.RestartWith(func(o *server.Options) { o.Password = "A" })
	})
	checkStream(t, strings.Replace(srv.URL(), "://", "://edge:A@", 1), 20)
}

func appendEventsFrom(t testing.TB, q *buffer.Queue, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		appendEvents(t, q, testEvent(i))
	}
}

package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/subject"
)

type inflight struct {
	seq     uint64
	lane    buffer.Lane
	from    uint64 // its ack covers lane's seqs from..seq: see source
	fut     jetstream.PubAckFuture
	sent    time.Time
	subject string // for the debug line
	held    bool   // not sent: its route is held (see hold)
}

// session publishes until a publish fails or ctx ends. It reports whether
// any event was acknowledged.
func (f *Forwarder) session(ctx context.Context) (progressed bool, err error) {
	js, err := jetstream.New(f.nc,
		jetstream.WithPublishAsyncMaxPending(f.o.Window),
		jetstream.WithPublishAsyncTimeout(f.o.AckTimeout))
	if err != nil {
		return false, err
	}
	defer js.CleanupPublisher()

	r, err := f.resume(ctx, js)
	if err != nil {
		return false, err
	}
	f.sessions.Add(1)
	s := &sess{f: f, js: js, st: r.stream, captured: r.captured, stream: r.cursor, cursorDone: r.cursor.seq,
		window: make([]inflight, 0, f.o.Window), okSubj: map[string]bool{},
		debug: f.log.Enabled(ctx, slog.LevelDebug), dbgLim: rate.NewLimiter(10, 10)}
	s.holdUncovered()
	s.sched = newScheduler(f.q, f.o, r.live)
	defer func() {
		if s.stopT != nil {
			s.stopT.Stop()
		}
		if aerr := s.ackBuffer(); err == nil && aerr != nil {
			err = aerr
		}
		progressed = s.progressed
	}()
	for {
		if err := s.recheck(ctx); err != nil && len(s.window) == 0 {
			return s.progressed, err // the window is in; the next session sends what was held
		}
		if err := s.fill(ctx); err != nil {
			return s.progressed, err
		}
		var stop bool
		if len(s.window) == 0 {
			stop, err = s.idle(ctx)
		} else {
			stop, err = s.awaitHead(ctx)
		}
		if stop || err != nil {
			return s.progressed, err
		}
	}
}

// sess is one session's state, owned by the Run goroutine.
type sess struct {
	f          *Forwarder
	js         jetstream.JetStream
	st         jetstream.Stream
	captured   []string         // the stream's subjects
	held       map[string]*Held // by route: see hold
	checked    time.Time        // when the stream's subjects were last read again for held routes
	widened    error            // set once they cover a held route: fill stops, the session ends
	sched      *scheduler
	window     []inflight      // publishes in the order sent
	toAck      []ackRange      // acknowledged by the stream, not yet handed to the buffer
	stream     cursor          // how far upstream the acks reach
	cursorDone uint64          // stream.seq last handed to the buffer
	okSubj     map[string]bool // subjects known to be captured
	stopT      *time.Timer     // after ctx ends: how long to wait for the window
	progressed bool
	debug      bool
	dbgLim     *rate.Limiter // debug lines per second
}

type ackRange struct {
	lane     buffer.Lane
	from, to uint64
}

// ackBuffer hands the acknowledged ranges to the buffer, then the cursor:
// the buffer commits the cursor only with or after them.
func (s *sess) ackBuffer() error {
	for _, r := range s.toAck {
		if err := s.f.q.AckRange(r.lane, r.from, r.to); err != nil {
			return err
		}
	}
	s.toAck = s.toAck[:0]
	if s.stream.seq != s.cursorDone {
		if err := s.f.q.SetCursor(s.stream.encode()); err != nil {
			return err
		}
		s.cursorDone = s.stream.seq
	}
	return nil
}

// fill publishes events, in the scheduler's order, until the window is
// full, the buffer has no more, or ctx ends.
func (s *sess) fill(ctx context.Context) error {
	f := s.f
	for len(s.window) < f.o.Window && ctx.Err() == nil && s.widened == nil {
		src, err := s.sched.pick()
		if err != nil || src == nil {
			return err
		}
		rec := src.pending[0]
		w, ok, err := s.publish(ctx, rec, src.backfill)
		if err != nil || !ok {
			return err
		}
		if w.held {
			// It stays in the buffer: the next ack range of its lane
			// starts after it.
			src.take()
			continue
		}
		w.lane, w.from = src.lane, src.ackFrom
		src.take()
		s.window = append(s.window, w)
	}
	return nil
}

// publish sends rec, or passes it over (set aside): then its future is
// nil and it is acknowledged in its turn. ok is false when ctx ended
// before it could be sent.
func (s *sess) publish(ctx context.Context, rec buffer.Record, backfill bool) (w inflight, ok bool, err error) {
	f := s.f
	w.seq = rec.Seq
	if rec.Damaged != nil {
		return w, true, f.setAside(ctx, rec.Seq, rec.Damaged)
	}
	msg, expired, bad := f.message(rec, backfill, time.Now())
	if bad != nil {
		return w, true, f.setAside(ctx, rec.Seq, bad)
	}
	if expired {
		// Past its MQTT message expiry: dropped, acknowledged in its turn.
		f.expired.Add(1)
		return w, true, nil
	}
	if !s.okSubj[msg.Subject] {
		if !subject.Covers(s.captured, msg.Subject) {
			s.hold(msg.Subject)
			w.held = true
			return w, true, nil
		}
		if len(s.okSubj) > 10_000 {
			clear(s.okSubj)
		}
		s.okSubj[msg.Subject] = true
	}
	if f.limit(ctx, len(msg.Data)) != nil {
		return w, false, nil // ctx ended; rec stays pending
	}
	fut, err := s.js.PublishMsgAsync(msg)
	if errors.Is(err, nats.ErrMaxPayload) {
		// The server will never take it: set it aside, go on.
		bad := fmt.Errorf("%d bytes with headers is over the upstream server's max_payload of %d (raise max_payload on the server, or lower mqtt.max_payload)", len(msg.Data)+headerSize(msg), f.nc.MaxPayload())
		return w, true, f.setAside(ctx, rec.Seq, bad)
	}
	if err != nil {
		f.resent.Add(uint64(len(s.window)))
		return w, false, fmt.Errorf("publish seq %d: %w", rec.Seq, err)
	}
	f.published.Add(1)
	if backfill {
		f.backfill.Add(1)
	}
	w.fut = fut
	if s.debug {
		w.subject = msg.Subject
	}
	if f.o.OnAck != nil {
		w.sent = time.Now()
	}
	return w, true, nil
}

// idle waits, with nothing in flight, for events to send; stop when the
// session is over.
func (s *sess) idle(ctx context.Context) (stop bool, err error) {
	f := s.f
	if err := s.ackBuffer(); err != nil {
		return true, err
	}
	if ctx.Err() != nil {
		return true, nil
	}
	src, err := s.sched.pick()
	if err != nil || src != nil {
		return false, err
	}
	if s.widened != nil {
		return true, s.widened
	}
	select {
	case <-s.sched.changed:
	case <-ctx.Done():
	case <-time.After(time.Second):
		if !f.nc.IsConnected() {
			return true, errors.New("upstream disconnected")
		}
	}
	return false, nil
}

// awaitHead waits for the oldest publish's PubAck (after ctx ends, for
// StopTimeout at most); stop when the session is over.
func (s *sess) awaitHead(ctx context.Context) (stop bool, err error) {
	f := s.f
	head := s.window[0]
	done := ctx.Done()
	var stopC <-chan time.Time
	if ctx.Err() != nil {
		if s.stopT == nil {
			s.stopT = time.NewTimer(f.o.StopTimeout)
		}
		stopC, done = s.stopT.C, nil
	}
	if head.fut == nil {
		return false, s.acked(head, nil)
	}
	select {
	case pa := <-head.fut.Ok():
		return false, s.acked(head, pa)
	case err := <-head.fut.Err():
		if refusedForGood(err) {
			// The stream refused this message and will refuse it again;
			// the ones after it are unaffected. Set it aside and
			// acknowledge it in its turn.
			if serr := f.setAside(context.WithoutCancel(ctx), head.seq, fmt.Errorf("the stream refused it: %w", err)); serr != nil {
				return true, serr
			}
			s.window[0].fut = nil
			return false, nil
		}
		f.settle(s.window[1:])
		f.resent.Add(uint64(len(s.window)))
		return true, fmt.Errorf("seq %d: %w", head.seq, err)
	case <-stopC:
		f.log.Warn("stopped with publishes unacknowledged; they stay in the buffer", "count", len(s.window), "from_seq", head.seq)
		return true, nil
	case <-done:
		return false, nil // stop filling; wait for the window with the stop timer
	}
}

// acked takes the head of the window off as acknowledged (pa nil: it was
// passed over).
func (s *sess) acked(head inflight, pa *jetstream.PubAck) error {
	f := s.f
	s.window = s.window[1:]
	if n := len(s.toAck); n > 0 && s.toAck[n-1].lane == head.lane && s.toAck[n-1].to+1 == head.from {
		s.toAck[n-1].to = head.seq
	} else {
		s.toAck = append(s.toAck, ackRange{head.lane, head.from, head.seq})
	}
	if pa != nil {
		// PubAcks are taken in the order sent, which is the order stored:
		// every message of this gateway up to this stream seq is now
		// acknowledged (the buffer commits the cursor after the ranges).
		s.stream.seq = max(s.stream.seq, pa.Sequence)
	}
	if head.fut != nil {
		f.acked.Add(1)
		if f.o.OnAck != nil {
			f.o.OnAck(time.Since(head.sent))
		}
		if s.debug && s.dbgLim.Allow() {
			f.log.Debug("event in the stream", "seq", head.seq, "subject", head.subject)
		}
	}
	if head.seq > f.lastSeq.Load() {
		f.lastSeq.Store(head.seq)
	}
	f.lastAck.Store(time.Now().UnixNano())
	if !s.progressed {
		f.lastErr.Store(nil) // moving again
		f.configErr.Store(false)
	}
	s.progressed = true
	if len(s.window) == 0 || len(s.toAck) >= 64 || f.acked.Load()%256 == 0 {
		return s.ackBuffer()
	}
	return nil
}

// settle waits for every publish in a failed window to resolve (each does
// within AckTimeout), so that the next session's resume sees every message
// the stream stored.
func (f *Forwarder) settle(window []inflight) {
	for _, w := range window {
		if w.fut == nil {
			continue
		}
		select {
		case <-w.fut.Ok():
		case <-w.fut.Err():
		case <-time.After(f.o.AckTimeout + time.Second):
		}
	}
}

// setAside moves the event seq to the buffer's dead-letter lane, counts
// and logs it; the caller acknowledges it in its turn. An event the buffer
// no longer holds (dropped meanwhile by a limit) is simply passed over.
func (f *Forwarder) setAside(ctx context.Context, seq uint64, why error) error {
	err := f.q.SetAside(ctx, seq, why.Error())
	if err != nil && !errors.Is(err, buffer.ErrNotHeld) {
		return fmt.Errorf("set aside seq %d: %w", seq, err)
	}
	f.rejected.Add(1)
	f.log.Error("event set aside in the buffer's dead-letter lane: it can never be published; the rest flows on (edgegw buffer dead-letters lists them)", "seq", seq, "err", why)
	return nil
}

// refusedForGood reports a PubAck error that sending the same message
// again cannot fix.
func refusedForGood(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum
}

// headerSize is roughly what msg's headers add on the wire.
func headerSize(msg *nats.Msg) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range msg.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/subject"
)

type inflight struct {
	seq     uint64
	fut     jetstream.PubAckFuture
	sent    time.Time
	subject string // for the debug line
}

// session publishes from the oldest unacknowledged event until a publish
// fails or ctx ends. It reports whether any event was acknowledged.
func (f *Forwarder) session(ctx context.Context) (progressed bool, err error) {
	js, err := jetstream.New(f.nc,
		jetstream.WithPublishAsyncMaxPending(f.o.Window),
		jetstream.WithPublishAsyncTimeout(f.o.AckTimeout))
	if err != nil {
		return false, err
	}
	defer js.CleanupPublisher()

	captured, next, err := f.resume(ctx, js)
	if err != nil {
		return false, err
	}
	s := &sess{f: f, js: js, captured: captured, next: next,
		window: make([]inflight, 0, f.o.Window), okSubj: map[string]bool{},
		debug: f.log.Enabled(ctx, slog.LevelDebug), dbgLim: rate.NewLimiter(10, 10)}
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
	captured   []string        // the stream's subjects
	next       uint64          // the next seq to read
	window     []inflight      // publishes in seq order
	pending    []buffer.Record // read, not yet published
	toAck      uint64          // acknowledged by the stream, not yet in the buffer
	okSubj     map[string]bool // subjects known to be captured
	stopT      *time.Timer     // after ctx ends: how long to wait for the window
	progressed bool
	debug      bool
	dbgLim     *rate.Limiter // debug lines per second
}

func (s *sess) ackBuffer() error {
	if s.toAck == 0 {
		return nil
	}
	err := s.f.q.Ack(s.toAck)
	s.toAck = 0
	return err
}

// fill publishes events, in seq order, until the window is full, the
// buffer has no more, or ctx ends.
func (s *sess) fill(ctx context.Context) error {
	f := s.f
	for len(s.window) < f.o.Window && ctx.Err() == nil {
		if len(s.pending) == 0 {
			// Read a whole window's worth: many small reads cost a read
			// transaction each.
			var err error
			if s.pending, err = f.q.Read(s.next, f.o.Window); err != nil {
				return err
			}
			if len(s.pending) == 0 {
				return nil
			}
			s.next = s.pending[len(s.pending)-1].Seq + 1
		}
		rec := s.pending[0]
		w, ok, err := s.publish(ctx, rec)
		if err != nil || !ok {
			return err
		}
		s.pending = s.pending[1:]
		s.window = append(s.window, w)
	}
	return nil
}

// publish sends rec, or passes it over (stored ahead of a gap, or set
// aside): then its future is nil and it is acknowledged in its turn. ok
// is false when ctx ended before it could be sent.
func (s *sess) publish(ctx context.Context, rec buffer.Record) (w inflight, ok bool, err error) {
	f := s.f
	w.seq = rec.Seq
	msg, bad := f.message(rec)
	switch {
	case f.storedAhead[rec.Seq]:
		// noSkipFrom stays until the gap itself is acknowledged (resume
		// clears it): the stream's last message does not prove the failed
		// seq is there.
		delete(f.storedAhead, rec.Seq)
		f.skipped.Add(1)
		return w, true, nil
	case bad != nil:
		return w, true, f.setAside(ctx, rec.Seq, bad)
	}
	if !s.okSubj[msg.Subject] {
		if !subject.Covers(s.captured, msg.Subject) {
			return w, false, fmt.Errorf("%w: stream %s does not capture subject %q (its subjects: %s); add the subject to the stream or change the subject template", ErrConfig, f.o.Stream.Name, msg.Subject, strings.Join(s.captured, ", "))
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
	changed := f.q.Changed()
	if len(s.pending) > 0 || f.q.Stats().NextSeq > s.next {
		return false, nil
	}
	select {
	case <-changed:
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
	var okC <-chan *jetstream.PubAck
	var errC <-chan error
	if head.fut == nil {
		c := make(chan *jetstream.PubAck, 1)
		c <- nil
		okC = c
	} else {
		okC, errC = head.fut.Ok(), head.fut.Err()
	}
	select {
	case <-okC:
		return false, s.acked(head)
	case err := <-errC:
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
		f.settle(head.seq, s.window[1:])
		f.resent.Add(uint64(len(s.window)))
		return true, fmt.Errorf("seq %d: %w", head.seq, err)
	case <-stopC:
		f.log.Warn("stopped with publishes unacknowledged; they stay in the buffer", "count", len(s.window), "from_seq", head.seq)
		return true, nil
	case <-done:
		return false, nil // stop filling; wait for the window with the stop timer
	}
}

// acked takes the head of the window off as acknowledged.
func (s *sess) acked(head inflight) error {
	f := s.f
	s.window = s.window[1:]
	s.toAck = head.seq
	if head.fut != nil {
		f.acked.Add(1)
		if f.o.OnAck != nil {
			f.o.OnAck(time.Since(head.sent))
		}
		if s.debug && s.dbgLim.Allow() {
			f.log.Debug("event in the stream", "seq", head.seq, "subject", head.subject)
		}
	}
	f.lastSeq.Store(head.seq)
	f.lastAck.Store(time.Now().UnixNano())
	if !s.progressed {
		f.lastErr.Store(nil) // moving again
		f.configErr.Store(false)
	}
	s.progressed = true
	if len(s.window) == 0 || head.seq%256 == 0 {
		return s.ackBuffer()
	}
	return nil
}

// settle waits for every publish in a failed window (each resolves within
// AckTimeout) and records those stored after the first failure.
func (f *Forwarder) settle(failed uint64, window []inflight) {
	for _, w := range window {
		if w.fut == nil {
			continue
		}
		select {
		case <-w.fut.Ok():
			if failed != 0 {
				f.storedAhead[w.seq] = true
			}
		case <-w.fut.Err():
		case <-time.After(f.o.AckTimeout + time.Second):
		}
	}
	if len(f.storedAhead) > 0 {
		if f.noSkipFrom == 0 || failed < f.noSkipFrom {
			f.noSkipFrom = failed
		}
		if len(window) > 0 {
			f.noSkipUntil = max(f.noSkipUntil, window[len(window)-1].seq)
		}
		f.log.Warn("upstream stored publishes after one that failed: the failed ones are re-sent and will follow them in the stream", "first_failed_seq", failed, "stored_after", len(f.storedAhead))
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

// Package forward drains the buffer into a NATS JetStream stream: exactly
// once, in order, through outages.
//
// Each event is published asynchronously with Nats-Msg-Id
// "<gateway id>-<seq>", so the stream's duplicate window drops re-sends; the
// buffer is acknowledged only on the stream's PubAck, in seq order. On any
// failure the forwarder goes back to the lowest unacknowledged seq (go-back-N)
// after asking the stream for the highest seq of this gateway it already
// holds, so a message stored before a crash is not sent again even after the
// duplicate window has passed.
package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/event"
)

// Header names set on every published message.
const (
	HeaderGateway = "Edgegw-Gateway"
	HeaderSource  = "Edgegw-Source"
	HeaderTime    = "Edgegw-Time" // RFC 3339 with nanoseconds
	// HeaderRetained is "true" on an MQTT retained copy forwarded because
	// a subscription asked for them (mqtt.subscriptions[].retained): the
	// broker's last known value, sent again on every (re)subscribe.
	HeaderRetained = "Edgegw-Retained"
)

// StreamOptions describe the upstream stream.
type StreamOptions struct {
	Name string
	// Subjects the stream captures when the forwarder creates it.
	Subjects []string
	// Create makes the forwarder create the stream (file storage) when it
	// is missing. Without it a missing stream is an error.
	Create bool
	// Duplicates is the duplicate window of a created stream (default 2m).
	Duplicates time.Duration
	// Replicas of a created stream (default 1).
	Replicas int
}

// Options configure a Forwarder.
type Options struct {
	GatewayID string
	Stream    StreamOptions
	// Filters match every subject this gateway publishes to and no other
	// gateway's (e.g. "telemetry.lobby-pi-01.>"). The forwarder reads the
	// last message on them to learn what the stream already holds.
	// Default: Stream.Subjects.
	Filters []string
	// Window is the number of publishes awaiting a PubAck (default 1024).
	Window int
	// AckTimeout bounds the wait for one PubAck (default 5s).
	AckTimeout time.Duration
	// RateEvents and RateBytes cap the drain rate per second, for metered
	// links. 0 means no cap.
	RateEvents float64
	RateBytes  float64
	// StopTimeout bounds how long Run waits for in-flight PubAcks when its
	// context ends (default 5s).
	StopTimeout time.Duration
	// MaxEventBytes is the largest payload this gateway's sources may
	// produce (mqtt.max_payload). On each connect it is checked against
	// the server's max_payload: larger events would be set aside.
	MaxEventBytes int
	// OnAck, if set, is called with the time from publish to PubAck of each
	// acknowledged publish (the gateway's latency histogram). It must not
	// block.
	OnAck  func(time.Duration)
	Logger *slog.Logger
}

// Stats are the forwarder's counters since New.
type Stats struct {
	Connected bool
	Published uint64 // publishes sent, re-sends included
	Acked     uint64 // events the stream acknowledged
	Resent    uint64 // publishes sent again after a go-back
	Skipped   uint64 // events found already in the stream on (re)connect
	Rejected  uint64 // events the stream can never take, set aside
	LastSeq   uint64 // highest seq acknowledged
	LastError string // why the last session ended, until one makes progress again
	// ConfigError: the last session ended with an ErrConfig error (the
	// stream is missing or refuses this gateway): retrying will not help
	// until someone changes the hub or the config.
	ConfigError bool
	// DownSince is when the uplink was found down; zero while it is up.
	DownSince time.Time
	// LastAck is when the stream last acknowledged an event.
	LastAck time.Time
}

// Forwarder moves events from a buffer.Queue to a JetStream stream.
type Forwarder struct {
	q    *buffer.Queue
	nc   *nats.Conn
	o    Options
	log  *slog.Logger
	evLm *rate.Limiter
	byLm *rate.Limiter

	published, acked, resent, skipped, rejected, lastSeq atomic.Uint64
	lastErr                                              atomic.Pointer[string]
	configErr                                            atomic.Bool
	downSince, lastAck                                   atomic.Int64 // UnixNano; 0: none

	// Owned by the Run goroutine. After a failure that left a gap (a later
	// publish stored, an earlier one not, as when a cluster's stream leader
	// dies with publishes in flight), storedAhead holds the seqs known to be
	// stored beyond the gap and noSkipFrom the first seq of the gap: the
	// last message upstream no longer proves that everything below it is
	// there, so the gap is re-sent and the stored ones are not.
	storedAhead map[uint64]bool
	noSkipFrom  uint64
	noSkipUntil uint64 // the last seq of the failed windows

	gwHeader []string // shared by every message; nobody modifies it

	// worked is set once a session found the stream (Run's goroutine).
	worked bool
	// warnedMaxPayload is the server max_payload last warned about.
	warnedMaxPayload int64
}

// ErrConfig wraps errors that retrying cannot fix: a missing stream, a
// subject no stream captures. Run returns them when they come before the
// forwarder ever reached its stream (a wrong config at install); after
// that they mean the hub changed under a running gateway, and Run logs
// them as errors and retries, buffering meanwhile.
var ErrConfig = errors.New("upstream misconfigured")

// New checks o and returns a Forwarder; it starts nothing.
func New(q *buffer.Queue, nc *nats.Conn, o Options) (*Forwarder, error) {
	if o.GatewayID == "" || strings.ContainsAny(o.GatewayID, " \t\r\n.*>") {
		return nil, fmt.Errorf("forward: gateway id %q must be non-empty without spaces, '.', '*' or '>'", o.GatewayID)
	}
	if o.Stream.Name == "" {
		return nil, errors.New("forward: upstream.stream.name is empty")
	}
	if len(o.Filters) == 0 {
		o.Filters = o.Stream.Subjects
	}
	if len(o.Filters) == 0 {
		return nil, errors.New("forward: no subject filter for this gateway's messages; set upstream.stream.subjects")
	}
	if o.Window <= 0 {
		o.Window = 1024
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 5 * time.Second
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 5 * time.Second
	}
	if o.Stream.Duplicates <= 0 {
		o.Stream.Duplicates = 2 * time.Minute
	}
	if o.Stream.Replicas <= 0 {
		o.Stream.Replicas = 1
	}
	if o.RateEvents < 0 || o.RateBytes < 0 {
		return nil, errors.New("forward: rate limits must not be negative")
	}
	f := &Forwarder{q: q, nc: nc, o: o, log: o.Logger, storedAhead: map[uint64]bool{}, gwHeader: []string{o.GatewayID}}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	f.log = f.log.With("component", "forward")
	if o.RateEvents > 0 {
		f.evLm = rate.NewLimiter(rate.Limit(o.RateEvents), max(1, int(o.RateEvents/10)))
	}
	if o.RateBytes > 0 {
		// A one-second burst; larger messages wait in burst-sized steps.
		f.byLm = rate.NewLimiter(rate.Limit(o.RateBytes), max(int(o.RateBytes), 1))
	}
	return f, nil
}

// Stats returns the forwarder's counters.
func (f *Forwarder) Stats() Stats {
	s := Stats{
		Connected: f.nc.IsConnected(),
		Published: f.published.Load(),
		Acked:     f.acked.Load(),
		Resent:    f.resent.Load(),
		Skipped:   f.skipped.Load(),
		Rejected:  f.rejected.Load(),
		LastSeq:   f.lastSeq.Load(),
	}
	if e := f.lastErr.Load(); e != nil {
		s.LastError = *e
	}
	s.ConfigError = f.configErr.Load()
	if ns := f.downSince.Load(); ns != 0 && !s.Connected {
		s.DownSince = time.Unix(0, ns)
	}
	if ns := f.lastAck.Load(); ns != 0 {
		s.LastAck = time.Unix(0, ns)
	}
	return s
}

// Run forwards until ctx ends, then waits (up to StopTimeout) for in-flight
// PubAcks and returns nil; what is not acknowledged stays in the buffer.
// It returns early only for a closed buffer, or an ErrConfig error before
// it ever reached the stream.
func (f *Forwarder) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for {
		if err := f.waitConnected(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		progressed, err := f.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		msg := err.Error()
		if !f.nc.IsConnected() {
			// What a publish into a dropped connection says ("outbound
			// buffer limit exceeded") is not the news: the outage is.
			f.noteDown()
			msg = fmt.Sprintf("uplink down since %s (%s)", time.Unix(0, f.downSince.Load()).UTC().Format(time.RFC3339), msg)
		}
		f.lastErr.Store(&msg)
		f.configErr.Store(errors.Is(err, ErrConfig))
		if errors.Is(err, ErrConfig) && !f.worked || errors.Is(err, buffer.ErrClosed) {
			return err
		}
		if progressed {
			backoff = 100 * time.Millisecond
		}
		if errors.Is(err, ErrConfig) {
			backoff = max(backoff, 5*time.Second)
			f.log.Error("the upstream changed and refuses this gateway's events; buffering and retrying", "err", err, "retry_in", backoff)
		} else {
			f.log.Warn("upstream publish failed; going back to the oldest unacknowledged event", "err", err, "retry_in", backoff)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff + rand.N(backoff/2+1)):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// waitConnected returns when the connection is up, checking every 100ms.
func (f *Forwarder) waitConnected(ctx context.Context) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for !f.nc.IsConnected() {
		f.noteDown()
		if f.nc.IsClosed() {
			return errors.New("upstream connection closed")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	f.downSince.Store(0)
	return nil
}

// noteDown records when the uplink was first found down.
func (f *Forwarder) noteDown() {
	f.downSince.CompareAndSwap(0, time.Now().UnixNano())
}

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
		if !Covers(s.captured, msg.Subject) {
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

// resume starts a session: it finds the stream, asks it for this gateway's
// last message, and acknowledges in the buffer what the stream already
// holds. It returns the stream's subjects and the first seq to send.
func (f *Forwarder) resume(ctx context.Context, js jetstream.JetStream) (captured []string, next uint64, err error) {
	reqCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	stream, err := f.ensureStream(reqCtx, js)
	if err != nil {
		cancel()
		return nil, 0, err
	}
	held, err := f.heldUpstream(reqCtx, stream)
	cancel()
	if err != nil {
		return nil, 0, err
	}
	f.worked = true
	captured = stream.CachedInfo().Config.Subjects
	if mp := f.nc.MaxPayload(); f.o.MaxEventBytes > 0 && int64(f.o.MaxEventBytes)+maxHeaderBytes > mp && mp != f.warnedMaxPayload {
		f.warnedMaxPayload = mp
		f.log.Error("the upstream server's max_payload cannot take every message the sources may produce: larger ones will be set aside in the dead-letter lane; lower mqtt.max_payload or raise max_payload on the server", "mqtt_max_payload", f.o.MaxEventBytes, "headroom", maxHeaderBytes, "server_max_payload", mp)
	}

	st := f.q.Stats()
	next = max(st.FirstSeq, f.lastSeq.Load()+1)
	for seq := range f.storedAhead {
		if seq < next {
			delete(f.storedAhead, seq)
		}
	}
	if f.noSkipFrom != 0 && f.lastSeq.Load() >= f.noSkipUntil {
		// Every event of the failed windows has been acknowledged: the
		// stream's last message is proof again.
		f.noSkipFrom, f.noSkipUntil = 0, 0
	}
	if f.noSkipFrom != 0 && held >= f.noSkipFrom {
		held = f.noSkipFrom - 1
	}
	switch {
	case held >= st.NextSeq:
		f.log.Error("the stream holds a later seq of this gateway than its buffer has ever had: another gateway uses the same id, or this buffer was replaced; forwarding everything held", "stream_seq", held, "buffer_next_seq", st.NextSeq)
	case held >= next:
		if err := f.q.Ack(held); err != nil {
			return nil, 0, err
		}
		f.skipped.Add(held - next + 1)
		f.lastSeq.Store(held)
		f.log.Info("events already in the stream skipped", "up_to_seq", held, "count", held-next+1)
		next = held + 1
	}
	return captured, next, nil
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

// maxHeaderBytes is what the headers of one message may add to its
// payload: Msg-Id, gateway, time, and the source (an MQTT topic, escaped).
const maxHeaderBytes = 4 << 10

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

// message builds the NATS message for rec; an error means the event can
// never be published.
func (f *Forwarder) message(rec buffer.Record) (*nats.Msg, error) {
	var e event.Event
	if err := e.Unmarshal(rec.Data); err != nil {
		return nil, err
	}
	if !validSubject(e.Subject) {
		return nil, fmt.Errorf("subject %q is not a valid NATS subject to publish to", e.Subject)
	}
	// The keys are already in canonical form: no need for Header.Set.
	h := make(nats.Header, 4)
	h[jetstream.MsgIDHeader] = []string{f.o.GatewayID + "-" + strconv.FormatUint(rec.Seq, 10)}
	h[HeaderGateway] = f.gwHeader
	if e.Source != "" {
		h[HeaderSource] = []string{EscapeHeader(e.Source)}
	}
	if !e.Time.IsZero() {
		h[HeaderTime] = []string{e.Time.UTC().Format(time.RFC3339Nano)}
	}
	if e.Retained {
		h[HeaderRetained] = []string{"true"}
	}
	return &nats.Msg{Subject: e.Subject, Header: h, Data: e.Payload}, nil
}

func (f *Forwarder) limit(ctx context.Context, size int) error {
	if f.evLm != nil {
		if err := f.evLm.Wait(ctx); err != nil {
			return err
		}
	}
	if f.byLm != nil {
		for size > 0 {
			n := min(size, f.byLm.Burst())
			if err := f.byLm.WaitN(ctx, n); err != nil {
				return err
			}
			size -= n
		}
	}
	return nil
}

// ensureStream finds the stream, or creates it when allowed.
func (f *Forwarder) ensureStream(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, f.o.Stream.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if !f.o.Stream.Create {
			return nil, fmt.Errorf("%w: stream %s not found on the upstream server; create it (see deploy/) or set upstream.stream.create: true", ErrConfig, f.o.Stream.Name)
		}
		if len(f.o.Stream.Subjects) == 0 {
			return nil, fmt.Errorf("%w: cannot create stream %s: upstream.stream.subjects is empty", ErrConfig, f.o.Stream.Name)
		}
		s, err = js.CreateStream(ctx, jetstream.StreamConfig{
			Name:       f.o.Stream.Name,
			Subjects:   f.o.Stream.Subjects,
			Storage:    jetstream.FileStorage,
			Duplicates: f.o.Stream.Duplicates,
			Replicas:   f.o.Stream.Replicas,
		})
		if err == nil {
			f.log.Info("stream created", "stream", f.o.Stream.Name, "subjects", f.o.Stream.Subjects)
		}
	}
	if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
		return nil, fmt.Errorf("%w: JetStream is not enabled on the upstream server for this account", ErrConfig)
	}
	if le := f.nc.LastError(); err != nil && le != nil && strings.Contains(le.Error(), "Permissions Violation") && strings.Contains(le.Error(), "."+f.o.Stream.Name) {
		// A hub that grants each gateway its stream by name (deploy/
		// upstream/hub.conf) answers a wrong name with silence and a
		// permission error: the name is the likelier mistake.
		return nil, fmt.Errorf("%w: stream %s: the upstream refused this gateway's user the stream's API (%v): check upstream.stream.name, then that the hub grants this user what deploy/upstream/hub.conf grants", ErrConfig, f.o.Stream.Name, le)
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", f.o.Stream.Name, err)
	}
	for _, flt := range f.o.Filters {
		if !Covers(s.CachedInfo().Config.Subjects, flt) {
			return nil, fmt.Errorf("%w: stream %s does not capture subject %q (its subjects: %s)", ErrConfig, f.o.Stream.Name, flt, strings.Join(s.CachedInfo().Config.Subjects, ", "))
		}
	}
	return s, nil
}

// heldUpstream returns the highest seq of this gateway the stream holds,
// from the last message on each filter subject.
func (f *Forwarder) heldUpstream(ctx context.Context, s jetstream.Stream) (uint64, error) {
	var held uint64
	prefix := f.o.GatewayID + "-"
	for _, flt := range f.o.Filters {
		m, err := s.GetLastMsgForSubject(ctx, flt)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("last message on %s in stream %s: %w", flt, f.o.Stream.Name, err)
		}
		id := m.Header.Get(jetstream.MsgIDHeader)
		seq, err := strconv.ParseUint(strings.TrimPrefix(id, prefix), 10, 64)
		if !strings.HasPrefix(id, prefix) || err != nil {
			f.log.Warn("last message on this gateway's subjects was not sent by it; check that filters match only this gateway", "subject", m.Subject, "msg_id", id)
			continue
		}
		held = max(held, seq)
	}
	return held, nil
}

// EscapeHeader makes s safe as a NATS header value: control bytes (CR and
// LF would start a new header line), '%', and leading or trailing spaces
// become %XX. Printable text, spaces inside and UTF-8 pass unchanged, so a
// normal MQTT topic reads as itself.
func EscapeHeader(s string) string {
	esc := func(i int) bool {
		c := s[i]
		return c < 0x20 || c == 0x7f || c == '%' || c == ' ' && (i == 0 || i == len(s)-1)
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if esc(i) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		if esc(i) {
			b = append(b, '%', hex[s[i]>>4], hex[s[i]&15])
		} else {
			b = append(b, s[i])
		}
	}
	return string(b)
}

// validSubject reports whether s can be published to: non-empty tokens, no
// wildcards, no whitespace or control bytes.
func validSubject(s string) bool {
	if s == "" || len(s) > 4096 {
		return false
	}
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "" || tok == "*" || tok == ">" {
			return false
		}
		for i := 0; i < len(tok); i++ {
			if c := tok[i]; c <= ' ' || c == 0x7f {
				return false
			}
		}
	}
	return true
}

// Covers reports whether some stream subject pattern matches every subject
// that filter matches.
func Covers(patterns []string, filter string) bool {
	for _, p := range patterns {
		if subsumes(p, filter) {
			return true
		}
	}
	return false
}

func subsumes(pattern, filter string) bool {
	pt, ft := strings.Split(pattern, "."), strings.Split(filter, ".")
	for i, p := range pt {
		if p == ">" {
			return len(ft) > i
		}
		if i >= len(ft) {
			return false
		}
		switch {
		case p == "*":
			if ft[i] == ">" {
				return false
			}
		case p != ft[i]:
			return false
		}
	}
	return len(pt) == len(ft)
}

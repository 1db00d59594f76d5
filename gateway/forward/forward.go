// Package forward drains the buffer into a NATS JetStream stream: exactly
// once, through outages, by priority, and (with LiveFirst) what arrives
// during a backlog before the backlog.
//
// Each event is published asynchronously with Nats-Msg-Id
// "<gateway id>-<seq>", so the stream's duplicate window drops re-sends; an
// event is acknowledged in the buffer only on the stream's PubAck, and
// with the acks the buffer keeps a cursor: the stream sequence up to which
// every message of this gateway is acknowledged in the buffer. On any
// failure the forwarder reads back this gateway's messages stored after
// the cursor, acknowledges them, and sends the rest again: a message
// stored before a crash is not sent again even after the duplicate window
// has passed. docs/forwarder.md has the argument.
package forward

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/time/rate"

	"github.com/edgegw/edgegw/buffer"
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
	// HeaderBackfill is "true" on an event sent, with LiveFirst, behind
	// events that arrived after it: it was in the backlog when the uplink
	// came back. Its seq (in Nats-Msg-Id) and time restore the order.
	HeaderBackfill = "Edgegw-Backfill"
	// HeaderUnsynced is "true" when the event's time comes from a wall
	// clock that was not synchronized then and has not been since, in
	// that boot (a box without a real-time clock, before NTP).
	HeaderUnsynced = "Edgegw-Time-Unsynced"
	// HeaderPriority is the priority of the event's lane.
	HeaderPriority = "Edgegw-Priority"
)

// Headers of a message that came with MQTT 5 properties (docs/mqtt-server.md,
// "MQTT 5"). Values are escaped as EscapeHeader does.
const (
	HeaderContentType   = "Mqtt-Content-Type"
	HeaderPayloadFormat = "Mqtt-Payload-Format" // "0" (bytes) or "1" (UTF-8), as sent
	// HeaderMessageExpiry is the seconds left of the message's expiry
	// interval when it was sent upstream.
	HeaderMessageExpiry = "Mqtt-Message-Expiry"
	// HeaderUserProperty has one value per user property, in order:
	// the escaped name (its '=' escaped too), '=', the escaped value.
	// UserProperty reads one back.
	HeaderUserProperty = "Mqtt-User-Property"
)

// Drain is the order in which the forwarder sends what the buffer holds.
type Drain int

const (
	// OldestFirst sends each lane in seq order.
	OldestFirst Drain = iota
	// LiveFirst sends what arrives while a backlog drains first, and the
	// backlog behind it oldest first, marked with HeaderBackfill.
	LiveFirst
)

func (d Drain) String() string {
	if d == LiveFirst {
		return "live_first"
	}
	return "oldest_first"
}

// ParseDrain parses the config spelling of a Drain; "" is LiveFirst.
func ParseDrain(s string) (Drain, error) {
	switch s {
	case "", "live_first":
		return LiveFirst, nil
	case "oldest_first":
		return OldestFirst, nil
	}
	return 0, fmt.Errorf("drain %q is not live_first or oldest_first", s)
}

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
	// Drain: OldestFirst (the zero value) or LiveFirst.
	Drain Drain
	// LowerShare is the share of sends that goes to lanes below the
	// highest one waiting (lower priorities; with LiveFirst, the backlog
	// behind live events), so that none starves: 0 means the default,
	// 0.1; at most 0.5.
	LowerShare float64
	// OnAck, if set, is called with the time from publish to PubAck of each
	// acknowledged publish (the gateway's latency histogram). It must not
	// block.
	OnAck  func(time.Duration)
	Logger *slog.Logger
}

// Stats are the forwarder's counters since New.
type Stats struct {
	Connected bool
	// Sessions counts the sessions that found the stream and resumed:
	// the upstream answers for it.
	Sessions  uint64
	Published uint64 // publishes sent, re-sends included
	Acked     uint64 // events the stream acknowledged
	Resent    uint64 // publishes sent again after a go-back
	Skipped   uint64 // events found already in the stream on (re)connect
	Rejected  uint64 // events the stream can never take, set aside
	Expired   uint64 // events past their MQTT 5 message expiry, not sent
	LastSeq   uint64 // highest seq acknowledged
	Backfill  uint64 // events sent behind live ones (LiveFirst)
	LastError string // why the last session ended, until one makes progress again
	// ConfigError: the last session ended with an ErrConfig error (the
	// stream is missing or refuses this gateway): retrying will not help
	// until someone changes the hub or the config.
	ConfigError bool
	// Held lists the routes whose events the stream does not capture:
	// they stay in the buffer, in order, while every other route flows,
	// and are sent once the stream captures them (no restart needed).
	Held []Held
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

	published, acked, resent, skipped, rejected, expired, lastSeq, backfill atomic.Uint64
	lastErr                                                                 atomic.Pointer[string]
	configErr                                                               atomic.Bool
	downSince, lastAck                                                      atomic.Int64 // UnixNano; 0: none
	sessions                                                                atomic.Uint64
	held                                                                    atomic.Pointer[[]Held]

	gwHeader []string // shared by every message; nobody modifies it

	// warnedMaxPayload is the server max_payload last warned about.
	warnedMaxPayload int64
	// heldLogged: when each held route was last logged (Run's goroutine).
	heldLogged map[string]time.Time
}

// ErrConfig wraps errors that retrying alone cannot fix: a missing stream,
// a stream API this gateway may not use. Run never returns them (a
// gateway that exits buffers nothing): it says them in Stats (LastError,
// ConfigError), logs them as errors and retries, buffering meanwhile,
// until someone fixes the hub or the config.
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
	if o.LowerShare < 0 || o.LowerShare > 0.5 {
		return nil, fmt.Errorf("forward: lower share %g is outside 0..0.5", o.LowerShare)
	}
	if o.LowerShare == 0 {
		o.LowerShare = 0.1
	}
	f := &Forwarder{q: q, nc: nc, o: o, log: o.Logger, gwHeader: []string{o.GatewayID}, heldLogged: map[string]time.Time{}}
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
		Sessions:  f.sessions.Load(),
		Published: f.published.Load(),
		Acked:     f.acked.Load(),
		Resent:    f.resent.Load(),
		Skipped:   f.skipped.Load(),
		Rejected:  f.rejected.Load(),
		Expired:   f.expired.Load(),
		LastSeq:   f.lastSeq.Load(),
		Backfill:  f.backfill.Load(),
	}
	if e := f.lastErr.Load(); e != nil {
		s.LastError = *e
	}
	s.ConfigError = f.configErr.Load()
	if h := f.held.Load(); h != nil {
		s.Held = *h
	}
	if ns := f.downSince.Load(); ns != 0 && !s.Connected {
		s.DownSince = time.Unix(0, ns)
	}
	if ns := f.lastAck.Load(); ns != 0 {
		s.LastAck = time.Unix(0, ns)
	}
	return s
}

// RTT is the round trip to the upstream server (a PING), or an error
// when it is down.
func (f *Forwarder) RTT() (time.Duration, error) { return f.nc.RTT() }

// Run forwards until ctx ends, then waits (up to StopTimeout) for in-flight
// PubAcks and returns nil; what is not acknowledged stays in the buffer.
// It returns early only for a closed buffer: whatever the upstream
// refuses, it keeps buffering, says why in Stats, and retries.
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
		if errors.Is(err, errStreamWidened) {
			f.log.Info("the stream now captures a held route: sending its events", "err", err)
			continue
		}
		msg := err.Error()
		f.lastErr.Store(&msg)
		if !f.nc.IsConnected() {
			f.sayDown()
		}
		f.configErr.Store(errors.Is(err, ErrConfig))
		if errors.Is(err, buffer.ErrClosed) {
			return err
		}
		if progressed {
			backoff = 100 * time.Millisecond
		}
		if errors.Is(err, ErrConfig) {
			backoff = max(backoff, 5*time.Second)
			f.log.Error("the upstream refuses this gateway's events; buffering and retrying", "err", err, "retry_in", backoff)
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

// sayDown notes the outage and makes LastError say so, the last session's
// error after it: what a publish into a dropped connection says ("outbound
// buffer limit exceeded", a PubAck timeout) is not the news, the outage
// is. A session can end a moment before nats.go sees the connection gone;
// waitConnected then says it.
func (f *Forwarder) sayDown() {
	f.noteDown()
	head := downPrefix + time.Unix(0, f.downSince.Load()).UTC().Format(time.RFC3339)
	prev := f.lastErr.Load()
	if prev != nil && strings.HasPrefix(*prev, head) {
		return
	}
	msg := head
	if prev != nil {
		cause := *prev
		if strings.HasPrefix(cause, downPrefix) { // an earlier outage's: keep its cause
			_, cause, _ = strings.Cut(cause, " (")
			cause = strings.TrimSuffix(cause, ")")
		}
		if cause != "" {
			msg += " (" + cause + ")"
		}
	}
	f.lastErr.Store(&msg)
}

const downPrefix = "uplink down since "

// waitConnected returns when the connection is up, checking every 100ms.
func (f *Forwarder) waitConnected(ctx context.Context) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for !f.nc.IsConnected() {
		f.sayDown()
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

// maxHeaderBytes is what the headers of one message may add to its
// payload: Msg-Id, gateway, time, and the source (an MQTT topic, escaped).
const maxHeaderBytes = 4 << 10

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

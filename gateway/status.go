package gateway

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/event"
	"github.com/edgegw/edgegw/gateway/mqttbroker"
	"github.com/edgegw/edgegw/gateway/mqttsource"
	"github.com/edgegw/edgegw/gateway/secret"
	"github.com/edgegw/edgegw/sensors"
)

// Source kinds, as in /status and the source_up metric.
const (
	KindMQTT = "mqtt"
	// KindMQTTServer is the embedded broker (mqtt.server).
	KindMQTTServer = "mqtt-server"
	KindSensor     = "sensor" // a polled I²C, 1-Wire or simulated sensor
	KindGPIO       = "gpio"   // an edge source or a pulse counter
)

// Status is what /status serves: one snapshot of the whole gateway.
type Status struct {
	Gateway       string         `json:"gateway"`
	Version       string         `json:"version"`
	Started       time.Time      `json:"started,omitzero"`
	UptimeSeconds float64        `json:"uptime_seconds"`
	Ready         bool           `json:"ready"`
	NotReady      string         `json:"not_ready,omitempty"` // why not, when not
	Buffer        BufferStatus   `json:"buffer"`
	Upstream      UpstreamStatus `json:"upstream"`
	Sources       []SourceStatus `json:"sources"`
	Storage       StorageStatus  `json:"storage"` // bytes written (SD wear)
}

// BufferStatus is the buffer part of Status.
type BufferStatus struct {
	Open             bool    `json:"open"`
	Path             string  `json:"path"`
	Events           uint64  `json:"events"`
	Bytes            int64   `json:"bytes"`
	MaxBytes         int64   `json:"max_bytes"`
	FileBytes        int64   `json:"file_bytes"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	FirstSeq         uint64  `json:"first_seq"`
	NextSeq          uint64  `json:"next_seq"`
	Appended         uint64  `json:"appended"`
	Acked            uint64  `json:"acked"`
	DroppedFull      uint64  `json:"dropped_full"`
	DroppedAge       uint64  `json:"dropped_age"`
	Rejected         uint64  `json:"rejected"`
	// The dead-letter lane: events set aside (edgegw buffer dead-letters).
	DeadLetters uint64 `json:"dead_letters"`
	DeadBytes   int64  `json:"dead_letter_bytes"`
	DeadTotal   uint64 `json:"dead_letters_total"`
	DeadDropped uint64 `json:"dead_letters_dropped"`
	// Damaged files moved aside at open, and the last one in words.
	Quarantined    uint64 `json:"quarantined"`
	LastQuarantine string `json:"last_quarantine,omitempty"`
	// CommitError: the last commit failed (a full disk, an I/O error).
	CommitError      string    `json:"commit_error,omitempty"`
	CommitErrorSince time.Time `json:"commit_error_since,omitzero"`
	DroppedTTL       uint64    `json:"dropped_ttl"`
	// ClockSynced: the wall clock is synchronized now (docs/lanes.md).
	ClockSynced bool `json:"clock_synced"`
	// Lanes: one per priority and TTL that holds or has counted events.
	Lanes []LaneStatus `json:"lanes"`
}

// LaneStatus is one lane of the buffer in Status.
type LaneStatus struct {
	Priority         int     `json:"priority"`
	TTL              string  `json:"ttl,omitempty"`
	Events           uint64  `json:"events"`
	Bytes            int64   `json:"bytes"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	Acked            uint64  `json:"acked"`
	DroppedFull      uint64  `json:"dropped_full"`
	DroppedAge       uint64  `json:"dropped_age"`
	DroppedTTL       uint64  `json:"dropped_ttl"`
}

// UpstreamStatus is the JetStream side of Status.
type UpstreamStatus struct {
	Connected  bool    `json:"connected"`
	Stream     string  `json:"stream"`
	Published  uint64  `json:"published"`
	Acked      uint64  `json:"acked"`
	Resent     uint64  `json:"resent"`
	Skipped    uint64  `json:"skipped"`
	Rejected   uint64  `json:"rejected"`
	LastSeq    uint64  `json:"last_acked_seq"`
	LagEvents  uint64  `json:"lag_events"`  // buffered, not yet acknowledged upstream
	LagSeconds float64 `json:"lag_seconds"` // age of the oldest of those
	LastError  string  `json:"last_error,omitempty"`
	Drain      string  `json:"drain"`    // live_first or oldest_first
	Backfill   uint64  `json:"backfill"` // events sent behind live ones
	// ConfigError: the stream is missing or refuses this gateway; retrying
	// will not help until the hub or the config changes.
	ConfigError bool `json:"config_error,omitempty"`
	// Held: routes whose events the stream does not capture; they wait
	// in the buffer while the others flow.
	Held      []HeldRoute `json:"held,omitempty"`
	DownSince time.Time   `json:"down_since,omitzero"`
	LastAck   time.Time   `json:"last_ack,omitzero"`
}

// HeldRoute is a route the stream does not capture, in UpstreamStatus.
type HeldRoute struct {
	Route   string    `json:"route"`   // its subject filter
	Subject string    `json:"subject"` // the first subject held
	Events  uint64    `json:"events"`  // passed over since the forwarder's session began; they wait in the buffer
	Since   time.Time `json:"since"`
	Why     string    `json:"why"` // and the fix
}

// SourceStatus is one source in Status.
type SourceStatus struct {
	Name        string `json:"name"`
	Kind        string `json:"kind"` // mqtt, sensor, gpio
	Up          bool   `json:"up"`
	Ingested    uint64 `json:"ingested"`     // events committed to the buffer
	Duplicates  uint64 `json:"duplicates"`   // redelivered copies of stored events, dropped
	StoreErrors uint64 `json:"store_errors"` // commits the buffer refused (each retried)
	SetAside    uint64 `json:"set_aside"`    // events too large to store, put in the dead-letter lane
	// MQTT only.
	TooLarge   uint64 `json:"too_large,omitempty"`
	Unmappable uint64 `json:"unmappable,omitempty"`
	Clients    *int64 `json:"clients,omitempty"` // the embedded broker: devices connected
	// The embedded broker's limits (docs/mqtt-server.md): connections
	// not logged in yet, connections and logins refused by reason,
	// retained messages kept and their bytes, the sessions file's size.
	Pending       *int              `json:"pending_logins,omitempty"`
	Refused       map[string]uint64 `json:"refused_connections,omitempty"`
	RetainedKept  *int              `json:"retained_kept,omitempty"`
	RetainedBytes *int64            `json:"retained_bytes,omitempty"`
	SessionsBytes *int64            `json:"sessions_file_bytes,omitempty"`
	// SessionsWritten estimates the bytes written to the sessions file
	// since start (Status.Storage).
	SessionsWritten *int64 `json:"sessions_file_written,omitempty"`
	Retained        uint64 `json:"retained_skipped,omitempty"` // retained copies on (re)subscribe, skipped
	// Sensors and pins only.
	NotStored uint64 `json:"not_stored,omitempty"` // readings skipped because the buffer refused them
	Errors    uint64 `json:"errors,omitempty"`     // failed opens and reads
	LastError string `json:"last_error,omitempty"`

	LastValue      string    `json:"last_value,omitempty"` // the last reading's payload, at most 120 bytes
	LastReading    time.Time `json:"last_reading,omitzero"`
	LastReadingAge *float64  `json:"last_reading_age_seconds,omitempty"`
}

// source is a running source with the counters the gateway keeps for it:
// every event passes through its emit.
type source struct {
	event.Source
	kind                              string
	ingested, duplicates, storeErrors atomic.Uint64
	setAside                          atomic.Uint64          // too large to store: in the dead-letter lane
	last                              atomic.Int64           // UnixNano of the last commit
	lastValue                         atomic.Pointer[string] // the last event's payload, cut short
}

// emit commits events to the buffer qr holds and counts them for this
// source.
func (s *source) emit(qr *queueRef) event.EmitFunc {
	return func(ctx context.Context, events ...event.Event) error {
		qr.mu.RLock()
		defer qr.mu.RUnlock()
		if qr.q == nil {
			s.storeErrors.Add(1)
			return fmt.Errorf("%w (it failed to reopen after a config change)", buffer.ErrClosed)
		}
		stored, dups, dead, err := store(ctx, qr.q, events)
		if err != nil {
			// Once per failed commit: a source retries the same events
			// until they are stored, and they are not counted again.
			s.storeErrors.Add(1)
			return err
		}
		s.duplicates.Add(uint64(dups))
		s.setAside.Add(uint64(dead))
		if stored > 0 {
			s.ingested.Add(uint64(stored))
			s.last.Store(time.Now().UnixNano())
			v := displayValue(events[len(events)-1].Payload)
			s.lastValue.Store(&v)
		}
		return nil
	}
}

func (s *source) status(now time.Time) SourceStatus {
	st := SourceStatus{
		Name:        s.Name(),
		Kind:        s.kind,
		Ingested:    s.ingested.Load(),
		Duplicates:  s.duplicates.Load(),
		StoreErrors: s.storeErrors.Load(),
		SetAside:    s.setAside.Load(),
	}
	if v := s.lastValue.Load(); v != nil {
		st.LastValue = *v
	}
	if ns := s.last.Load(); ns != 0 {
		st.LastReading = time.Unix(0, ns).UTC()
		age := now.Sub(st.LastReading).Seconds()
		st.LastReadingAge = &age
	}
	switch src := s.Source.(type) {
	case *mqttsource.Source:
		m := src.Stats()
		st.Up = m.Connected && m.Subscribed
		st.TooLarge, st.Unmappable, st.Retained = m.TooLarge, m.Unmappable, m.Retained
		if !m.Connected {
			st.LastError = "not connected to the broker"
		} else if !m.Subscribed {
			st.LastError = "connected, waiting for the broker to grant the subscriptions"
		}
	case *mqttbroker.Broker:
		m := src.Stats()
		st.Up = m.Listening
		st.TooLarge, st.Unmappable, st.Clients = m.TooLarge, m.Unmappable, &m.Clients
		st.Pending, st.Refused, st.RetainedKept, st.RetainedBytes, st.SessionsBytes = &m.Pending, m.RefusedConnections, &m.Retained, &m.RetainedBytes, &m.SessionsBytes
		st.SessionsWritten = &m.SessionsWritten
		if !m.Listening {
			st.LastError = "not listening yet"
		}
	case interface{ Stats() sensors.Stats }:
		ss := src.Stats()
		st.Up = ss.Available
		st.NotStored, st.Errors, st.LastError = ss.NotStored, ss.Failures, ss.LastError
		if !ss.Available && st.LastError == "" {
			st.LastError = "not opened yet"
		}
	}
	return st
}

// Status returns a snapshot for /status and the metrics; parts that are
// not running are zero.
func (g *Gateway) Status() Status {
	g.mu.Lock()
	q, fwd, srcs, started, c := g.q, g.fwd, g.srcs, g.started, g.cfg
	g.mu.Unlock()
	now := time.Now()
	st := Status{
		Gateway: c.Gateway.ID,
		Version: g.o.Version,
		Started: started,
		Buffer:  BufferStatus{Path: c.Buffer.Path, MaxBytes: int64(c.Buffer.MaxBytes)},
		Upstream: UpstreamStatus{
			Stream: c.Upstream.Stream.Name,
			Drain:  c.Upstream.Drain,
		},
		Sources: make([]SourceStatus, 0, len(srcs)),
	}
	if g.o.Version == "" {
		st.Version = "(devel)"
	}
	if !started.IsZero() {
		st.UptimeSeconds = now.Sub(started).Seconds()
	}
	for _, s := range srcs {
		st.Sources = append(st.Sources, s.status(now))
	}
	var bs buffer.Stats
	if q != nil {
		bs = q.Stats()
		b := &st.Buffer
		b.Open = true
		b.Events, b.Bytes, b.FileBytes = bs.Events, bs.Bytes, bs.FileBytes
		b.OldestAgeSeconds = bs.OldestAge.Seconds()
		b.FirstSeq, b.NextSeq = bs.FirstSeq, bs.NextSeq
		b.Appended, b.Acked, b.DroppedFull, b.DroppedAge, b.Rejected = bs.Appended, bs.Acked, bs.DroppedFull, bs.DroppedAge, bs.Rejected
		b.DeadLetters, b.DeadBytes, b.DeadTotal, b.DeadDropped = bs.DeadEvents, bs.DeadBytes, bs.DeadTotal, bs.DeadDropped
		b.Quarantined, b.LastQuarantine = bs.Quarantined, bs.LastQuarantine
		b.CommitError, b.CommitErrorSince = bs.CommitError, bs.CommitErrorSince
		b.DroppedTTL, b.ClockSynced = bs.DroppedTTL, bs.ClockSynced
		b.Lanes = make([]LaneStatus, 0, len(bs.Lanes))
		for _, l := range bs.Lanes {
			ls := LaneStatus{Priority: l.Priority, Events: l.Events, Bytes: l.Bytes, OldestAgeSeconds: l.OldestAge.Seconds(),
				Acked: l.Acked, DroppedFull: l.DroppedFull, DroppedAge: l.DroppedAge, DroppedTTL: l.DroppedTTL}
			if l.TTL > 0 {
				ls.TTL = l.TTL.String()
			}
			b.Lanes = append(b.Lanes, ls)
		}
	}
	if fwd != nil {
		fs := fwd.Stats()
		u := &st.Upstream
		u.Connected = fs.Connected
		u.Published, u.Acked, u.Resent, u.Skipped, u.Rejected, u.LastSeq = fs.Published, fs.Acked, fs.Resent, fs.Skipped, fs.Rejected, fs.LastSeq
		u.LastError, u.ConfigError, u.DownSince, u.LastAck = fs.LastError, fs.ConfigError, fs.DownSince, fs.LastAck
		u.Backfill = fs.Backfill
		for _, h := range fs.Held {
			u.Held = append(u.Held, HeldRoute{Route: h.Route, Subject: h.Subject, Events: h.Events, Since: h.Since, Why: h.Why})
		}
		if q != nil {
			// Events held (acked ones leave the buffer within ackDelay:
			// the writer deletes them in batches).
			u.LagEvents, u.LagSeconds = bs.Events, bs.OldestAge.Seconds()
		}
	}
	var readings uint64
	if q != nil {
		readings = bs.AppendedSinceOpen
	}
	st.Storage = storageStatus(c.Gateway.Storage, storageFiles(c, q != nil, bs, st.Sources), readings, now.Sub(started), g.history.snapshot())
	st.Ready, st.NotReady = ready(st)
	return st
}

// ready: the buffer is open and commits, the upstream does not refuse
// this gateway's events, and at least one source can deliver. An uplink
// that is down does not make the gateway unready: buffering through
// outages is its job.
func ready(st Status) (bool, string) {
	if !st.Buffer.Open {
		return false, "buffer not open"
	}
	if b := st.Buffer; b.CommitError != "" {
		return false, fmt.Sprintf("buffer cannot commit since %s: %s", b.CommitErrorSince.UTC().Format(time.RFC3339), b.CommitError)
	}
	if u := st.Upstream; u.ConfigError {
		return false, "upstream refuses this gateway's events: " + u.LastError
	}
	if h := st.Upstream.Held; len(h) > 0 {
		why := make([]string, len(h))
		for i, r := range h {
			why[i] = fmt.Sprintf("route %s held since %s (%d events waiting): %s", r.Route, r.Since.UTC().Format(time.RFC3339), r.Events, r.Why)
		}
		return false, strings.Join(why, "; ")
	}
	var why []string
	for _, s := range st.Sources {
		if s.Up {
			return true, ""
		}
		why = append(why, fmt.Sprintf("%s: %s", s.Name, s.LastError))
	}
	if len(why) == 0 {
		return false, "no source running"
	}
	return false, "no source running (" + strings.Join(why, "; ") + ")"
}

// watch logs a warning when the uplink or the MQTT broker has been down
// for after (a minute), and again every again (ten minutes) while it stays
// down: one line an operator can find, not one per retry. It looks every
// tick.
func (g *Gateway) watch(ctx context.Context, tick, after, again time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	type down struct{ since, warned time.Time }
	var up, mqtt, disk down
	check := func(d *down, ok bool, now time.Time, warn func(time.Duration)) {
		switch {
		case ok:
			*d = down{}
		case d.since.IsZero():
			d.since = now
		case now.Sub(d.since) >= after && (d.warned.IsZero() || now.Sub(d.warned) >= again):
			d.warned = now
			warn(now.Sub(d.since).Round(time.Second))
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			st := g.Status()
			check(&up, st.Upstream.Connected, now, func(d time.Duration) {
				g.log.Warn("uplink still down; buffering", "for", d, "buffered", st.Buffer.Events, "oldest_age", time.Duration(st.Buffer.OldestAgeSeconds*float64(time.Second)).Round(time.Second), "servers", secret.URLs(g.config().Upstream.Servers))
			})
			check(&disk, st.Buffer.CommitError == "", now, func(d time.Duration) {
				g.log.Error("the buffer still cannot commit; sources are held back or their readings skipped", "for", d, "err", st.Buffer.CommitError)
			})
			for _, s := range st.Sources {
				if s.Kind == KindMQTT {
					check(&mqtt, s.Up, now, func(d time.Duration) {
						g.log.Warn("MQTT broker still unavailable; devices' messages wait at the broker", "for", d, "state", s.LastError, "broker", secret.URL(g.config().MQTT.Broker))
					})
				}
			}
		}
	}
}

// displayValue is a payload as a person may read it: at most 120 bytes,
// control bytes and invalid UTF-8 shown as '·'.
func displayValue(p []byte) string {
	p = p[:min(len(p), 120)]
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || unicode.IsControl(r) {
			return '·'
		}
		return r
	}, string(p))
}

package gateway

import (
	"context"
	"time"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/forward"
	"github.com/edgegw/edgegw/gateway/secret"
	"github.com/edgegw/edgegw/gateway/status"
	"github.com/edgegw/edgegw/gateway/web"
)

// A reporter is a source that fills in its own part of its status.
type reporter interface {
	Report(st *status.SourceStatus)
}

func (s *source) status(now time.Time) status.SourceStatus {
	st := status.SourceStatus{
		Name:        s.Name(),
		Kind:        s.kind,
		Ingested:    s.ingested.Load(),
		Duplicates:  s.duplicates.Load(),
		StoreErrors: s.storeErrors.Load(),
		SetAside:    s.setAside.Load(),
	}
	if v := s.lastValue.Load(); v != nil {
		st.LastFrom, st.LastValue = v.from, v.value
	}
	if ns := s.last.Load(); ns != 0 {
		st.LastReading = time.Unix(0, ns).UTC()
		age := now.Sub(st.LastReading).Seconds()
		st.LastReadingAge = &age
	}
	if r, ok := s.Source.(reporter); ok {
		r.Report(&st)
	}
	return st
}

// Status returns a snapshot for /status and the metrics; parts that are
// not running are zero.
func (g *Gateway) Status() status.Status {
	g.mu.Lock()
	q, fwd, srcs, started, c := g.q, g.fwd, g.srcs, g.started, g.cfg
	g.mu.Unlock()
	now := time.Now()
	st := status.Status{
		Gateway: c.Gateway.ID,
		Version: g.o.Version,
		Started: started,
		Buffer:  status.BufferStatus{Path: c.Buffer.Path, MaxBytes: int64(c.Buffer.MaxBytes)},
		Upstream: status.UpstreamStatus{
			Stream:  c.Upstream.Stream.Name,
			Drain:   c.Upstream.Drain,
			Servers: secret.URLs(c.Upstream.Servers),
		},
		Sources: make([]status.SourceStatus, 0, len(srcs)),
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
	if free, ok := diskFree(c.Buffer.Path); ok {
		st.Buffer.DiskFree = &free
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
		b.Lanes = make([]status.LaneStatus, 0, len(bs.Lanes))
		for _, l := range bs.Lanes {
			ls := status.LaneStatus{Priority: l.Priority, Events: l.Events, Bytes: l.Bytes, OldestAgeSeconds: l.OldestAge.Seconds(),
				Acked: l.Acked, DroppedFull: l.DroppedFull, DroppedAge: l.DroppedAge, DroppedTTL: l.DroppedTTL}
			if l.TTL > 0 {
				ls.TTL = l.TTL.String()
			}
			b.Lanes = append(b.Lanes, ls)
		}
	}
	if fwd != nil {
		g.upstreamStatus(&st, fwd.Stats(), q != nil, bs)
	}
	var readings uint64
	if q != nil {
		readings = bs.AppendedSinceOpen
	}
	st.Storage = storageStatus(c.Gateway.Storage, storageFiles(c, q != nil, bs, st.Sources), readings, now.Sub(started), g.history())
	st.Ready, st.NotReady = status.Ready(st)
	return st
}

// upstreamStatus fills st's upstream part from the forwarder's stats and
// the wire counter; open says the buffer is, bs its stats.
func (g *Gateway) upstreamStatus(st *status.Status, fs forward.Stats, open bool, bs buffer.Stats) {
	u := &st.Upstream
	u.Connected = fs.Connected
	u.Published, u.Acked, u.Resent, u.Skipped, u.Rejected, u.Expired, u.LastSeq = fs.Published, fs.Acked, fs.Resent, fs.Skipped, fs.Rejected, fs.Expired, fs.LastSeq
	u.LastError, u.ConfigError, u.DownSince, u.LastAck = fs.LastError, fs.ConfigError, fs.DownSince, fs.LastAck
	u.Backfill = fs.Backfill
	for _, h := range fs.Held {
		u.Held = append(u.Held, status.HeldRoute{Route: h.Route, Subject: h.Subject, Events: h.Events, Since: h.Since, Why: h.Why})
	}
	u.WireUp, u.WireDown = g.wire.Bytes()
	if fs.Acked > 0 {
		u.WirePerReading = float64(u.WireUp+u.WireDown) / float64(fs.Acked)
	}
	if st.UptimeSeconds > 0 {
		u.WirePerDay = float64(u.WireUp+u.WireDown) / st.UptimeSeconds * 86400
	}
	if open {
		// Events held (acked ones leave the buffer within ackDelay:
		// the writer deletes them in batches).
		u.LagEvents, u.LagSeconds = bs.Events, bs.OldestAge.Seconds()
	}
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
				if s.Kind == status.KindMQTT {
					check(&mqtt, s.Up, now, func(d time.Duration) {
						g.log.Warn("MQTT broker still unavailable; devices' messages wait at the broker", "for", d, "state", s.LastError, "broker", secret.URL(g.config().MQTT.Broker))
					})
				}
			}
		}
	}
}

// history is the page's history, none before the web exists (New
// registers the metrics, which reads the status once).
func (g *Gateway) history() []web.Sample {
	if g.web == nil {
		return nil
	}
	return g.web.History().Snapshot()
}

package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/secret"
	"github.com/edgegw/edgegw/gateway/status"
)

func (a *fleetAgent) statusFor(state string, want map[string]kvValue, msg string) status.FleetStatus {
	st := a.currentStatus()
	st.State, st.Error, st.At = state, msg, time.Now().UTC()
	st.Desired, st.Applied = revisions(want), revisions(a.saved.Applied)
	st.DesiredRevision, st.AppliedRevision = maxRevision(want), maxRevision(a.saved.Applied)
	return st
}

func (a *fleetAgent) setStatus(st status.FleetStatus) {
	a.mu.Lock()
	a.status = st
	a.mu.Unlock()
}

func (a *fleetAgent) currentStatus() status.FleetStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.status
	st.Desired, st.Applied = maps.Clone(st.Desired), maps.Clone(st.Applied)
	return st
}

func revisions(vs map[string]kvValue) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range vs {
		if v.Revision > 0 {
			out[k] = v.Revision
		}
	}
	return out
}

func maxRevision(vs map[string]kvValue) uint64 {
	var m uint64
	for _, v := range vs {
		m = max(m, v.Revision)
	}
	return m
}

func sameRevisions(x, y map[string]kvValue) bool {
	for _, m := range []map[string]kvValue{x, y} {
		for k := range m {
			if x[k] != y[k] {
				return false
			}
		}
	}
	return true
}

// unhealthy says what a config just started (at since) has not shown
// yet, or "" when it passes: the stream answered and acknowledged what
// was waiting (upstream), the MQTT sources are connected and subscribed
// or listening (mqtt).
func (g *Gateway) unhealthy(h config.HealthConfig, since time.Time) string {
	g.mu.Lock()
	q, fwd, srcs := g.q, g.fwd, g.srcs
	g.mu.Unlock()
	if q == nil || fwd == nil {
		return "not started yet"
	}
	if *h.Upstream {
		fs := fwd.Stats()
		if fs.Sessions == 0 {
			why := fs.LastError
			if !fs.Connected {
				why = "not connected to " + secret.URLs(g.config().Upstream.Servers)
			}
			if why == "" {
				why = "no answer yet"
			}
			return "upstream: the stream has not answered (" + why + ")"
		}
		if q.Stats().Events > 0 && fs.LastAck.Before(since) {
			return "upstream: no PubAck yet for the waiting events"
		}
	}
	if *h.MQTT {
		now := time.Now()
		for _, s := range srcs {
			if s.kind != status.KindMQTT && s.kind != status.KindMQTTServer {
				continue
			}
			if st := s.status(now); !st.Up {
				return fmt.Sprintf("mqtt: %s: %s", st.Name, st.LastError)
			}
		}
	}
	return ""
}

// heartbeat publishes edgegw.status.<id> and refreshes the status entry.
func (a *fleetAgent) heartbeat(ctx context.Context) {
	st := a.g.Status()
	fs := a.currentStatus()
	hb := &status.Heartbeat{Gateway: a.local.Gateway.ID, At: time.Now().UTC(), Uplink: st.Upstream.Connected,
		Backlog: st.Buffer.Events, BacklogBytes: st.Buffer.Bytes, OldestAgeSeconds: st.Buffer.OldestAgeSeconds,
		ClockSynced: st.Buffer.ClockSynced, Version: st.Version, GoVersion: runtime.Version(),
		AppliedRevision: fs.AppliedRevision, State: fs.State, NotReady: st.NotReady}
	for _, l := range st.Buffer.Lanes {
		hb.Lanes = append(hb.Lanes, status.HeartbeatLane{Priority: l.Priority, TTL: l.TTL, Events: l.Events, OldestAgeSeconds: l.OldestAgeSeconds})
	}
	if free, ok := diskFree(a.local.Buffer.Path); ok {
		hb.DiskFreeBytes = free
	}
	a.mu.Lock()
	a.status.Heartbeat = hb
	a.mu.Unlock()
	if data, err := json.Marshal(hb); err == nil && a.nc.IsConnected() {
		a.nc.Publish("edgegw.status."+a.local.Gateway.ID, data)
	}
	a.putStatus(ctx)
}

// putStatus writes the status entry; the bucket is made if this gateway
// may (a hub with per-gateway permissions makes it beforehand).
func (a *fleetAgent) putStatus(ctx context.Context) {
	if !a.nc.IsConnected() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if a.statKV == nil {
		js, err := jetstream.New(a.nc)
		if err != nil {
			return
		}
		kv, err := js.KeyValue(ctx, a.f.StatusBucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: a.f.StatusBucket, Description: "edgegw gateways' state (docs/fleet.md)"})
		}
		if err != nil {
			if msg := err.Error(); msg != a.statErr {
				a.statErr = msg // once until it changes: this is tried every heartbeat
				a.log.Warn("the status bucket is not usable; the hub's operator makes it (edgegw fleet set does)", "bucket", a.f.StatusBucket, "err", err)
			}
			return
		}
		a.statKV, a.statErr = kv, ""
	}
	data, err := json.Marshal(a.currentStatus())
	if err != nil {
		return
	}
	if _, err := a.statKV.Put(ctx, "gw."+a.local.Gateway.ID, data); err != nil {
		a.log.Warn("the status entry was not written", "bucket", a.f.StatusBucket, "err", err)
		if errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrNoStreamResponse) {
			a.statKV = nil // recreated or gone: look it up again
		}
	}
}

// FleetStatus is the fleet state, and false without a fleet section.
func (g *Gateway) FleetStatus() (status.FleetStatus, bool) {
	g.mu.Lock()
	a := g.fleet
	g.mu.Unlock()
	if a == nil {
		return status.FleetStatus{}, false
	}
	return a.currentStatus(), true
}

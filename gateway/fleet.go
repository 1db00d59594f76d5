package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/status"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegw/edgegw/gateway/forward"
	"github.com/edgegw/edgegw/gateway/secret"
)

// kvValue is one key's overlay at a revision; !Present: no overlay (the
// key is absent or deleted).
type kvValue struct {
	Revision uint64 `json:"revision"`
	Present  bool   `json:"present"`
	Data     string `json:"data,omitempty"`
}

// fleetSaved is <data_dir>/fleet.json: the last known good overlays and
// what the watch has seen, so that a box that reboots offline runs its
// last applied config and does not retry a change it refused.
type fleetSaved struct {
	Bucket  string             `json:"bucket"`
	Created time.Time          `json:"bucket_created"` // the bucket's identity: recreated, it differs
	Seen    map[string]uint64  `json:"seen"`
	Applied map[string]kvValue `json:"applied"`
	Status  status.FleetStatus `json:"status"`
}

// kvUpdate is what the watch saw of one key.
type kvUpdate struct {
	key     string
	created time.Time // the bucket's
	absent  bool      // the key has no value at all in the bucket
	v       kvValue
	// caughtUp: a new watch has delivered every key's current value
	// (the updates before it); nothing else is set.
	caughtUp bool
}

// fleetAgent runs the gateway under config from the fleet's bucket: one
// goroutine (run) owns the generations and the state; the watch goroutine
// only reports what it sees.
type fleetAgent struct {
	g     *Gateway
	local *config.Config
	f     *config.FleetConfig
	nc    *nats.Conn // the control connection, on the local file's upstream
	path  string
	keys  []string // "defaults", "gw.<id>": the order overlays are laid
	log   *slog.Logger

	mu     sync.Mutex // guards status, read by the command endpoints
	status status.FleetStatus
	// caughtUp counts the watches whose current values run has noted: a
	// fact tests wait for ("the new watch saw it and did nothing").
	caughtUp atomic.Uint64

	// Owned by run.
	saved   fleetSaved
	desired map[string]kvValue
	trying  map[string]kvValue // being health-checked
	gen     *generation
	prev    *config.Config // the last known good while trying
	http    func()
	httpCfg config.HTTPConfig
	statKV  jetstream.KeyValue
	statErr string // the last problem with the status bucket, logged once
}

// generation is one runConfigs, which takes new configs through
// reconfigure; cfg and started are the agent's (run's goroutine).
type generation struct {
	cfg     *config.Config
	started time.Time // when cfg was started or taken
	cancel  context.CancelFunc
	conf    chan reconfig
	done    chan struct{}
	err     error
}

func (g *Gateway) startGeneration(ctx context.Context, c *config.Config) *generation {
	ctx, cancel := context.WithCancel(ctx)
	gen := &generation{cfg: c, started: time.Now(), cancel: cancel, conf: make(chan reconfig), done: make(chan struct{})}
	go func() {
		defer close(gen.done)
		gen.err = g.runConfigs(ctx, c, false, gen.conf)
	}()
	return gen
}

// reconfigure moves the running generation to c; errGenerationDone if it
// has stopped.
func (gen *generation) reconfigure(c *config.Config) error {
	reply := make(chan error, 1)
	select {
	case gen.conf <- reconfig{c, reply}:
	case <-gen.done:
		return errGenerationDone
	}
	gen.cfg, gen.started = c, time.Now()
	select {
	case err := <-reply:
		return err
	case <-gen.done:
		return errGenerationDone
	}
}

// errGenerationDone: the generation ended before it took a new config.
var errGenerationDone = errors.New("the running config has stopped")

func (gen *generation) stop() error {
	gen.cancel()
	<-gen.done
	return gen.err
}

// fleetFile is where the last known good config is kept.
const fleetFile = "fleet.json"

// runFleet is Run with a fleet section: docs/fleet.md.
func (g *Gateway) runFleet(ctx context.Context) error {
	a, err := g.newFleetAgent()
	if err != nil {
		return err
	}
	defer a.nc.Close()
	g.mu.Lock()
	g.fleet = a
	g.mu.Unlock()
	return a.run(ctx)
}

func (g *Gateway) newFleetAgent() (*fleetAgent, error) {
	local := g.local
	id := local.Gateway.ID
	a := &fleetAgent{g: g, local: local, f: local.Fleet, log: g.log.With("component", "fleet"),
		path: filepath.Join(local.Gateway.DataDir, fleetFile),
		keys: []string{"defaults", "gw." + id}}
	if err := os.MkdirAll(local.Gateway.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	if err := a.load(); err != nil {
		return nil, err
	}
	o := connOptions(local)
	o.Name = "edgegw " + id + " fleet"
	nc, err := forward.Connect(o, g.log.With("component", "fleet-connection"))
	if err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	a.nc = nc
	return a, nil
}

// load reads fleet.json; a missing file is a first start.
func (a *fleetAgent) load() error {
	a.saved = fleetSaved{Bucket: a.f.ConfigBucket, Seen: map[string]uint64{}, Applied: map[string]kvValue{}}
	data, err := os.ReadFile(a.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	var s fleetSaved
	if err := json.Unmarshal(data, &s); err != nil {
		a.log.Error("the last known good fleet config is unreadable; starting from the local file", "file", a.path, "err", err)
		return nil
	}
	if s.Bucket != a.f.ConfigBucket {
		a.log.Warn("fleet.config_bucket changed; the last known good from the old bucket is dropped", "was", s.Bucket)
		return nil
	}
	if s.Seen == nil {
		s.Seen = map[string]uint64{}
	}
	if s.Applied == nil {
		s.Applied = map[string]kvValue{}
	}
	a.saved = s
	return nil
}

// save writes fleet.json whole and durably: a temporary file, fsync,
// rename, fsync of the directory.
func (a *fleetAgent) save() error {
	data, err := json.MarshalIndent(a.saved, "", "  ")
	if err != nil {
		return err
	}
	tmp := a.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, a.path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(a.path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// overlays are vs's values in the order they are laid.
func (a *fleetAgent) overlays(vs map[string]kvValue) []config.Overlay {
	var out []config.Overlay
	for _, k := range a.keys {
		if v := vs[k]; v.Present {
			out = append(out, config.Overlay{Name: k, Revision: v.Revision, Data: []byte(v.Data)})
		}
	}
	return out
}

// lastKnownGood is the local file with the saved overlays; the local file
// alone if they no longer fit it (the file was edited since).
func (a *fleetAgent) lastKnownGood() *config.Config {
	ovs := a.overlays(a.saved.Applied)
	if len(ovs) == 0 {
		return a.local
	}
	c, err := a.local.WithOverlays(ovs...)
	if err != nil {
		a.log.Error("the last known good overlays do not fit the local file any more; running the local file alone", "err", err)
		a.saved.Applied = map[string]kvValue{}
		return a.local
	}
	return c
}

func (a *fleetAgent) run(ctx context.Context) error {
	cfg := a.lastKnownGood()
	a.desired = maps.Clone(a.saved.Applied)
	st := a.saved.Status
	st.Gateway = a.local.Gateway.ID
	if st.State == "" || st.State == status.StateApplying {
		st.State = status.StateApplied
	}
	a.setStatus(st)

	stopHTTP, err := a.g.startHTTP(cfg)
	if err != nil {
		return err
	}
	a.http, a.httpCfg = stopHTTP, cfg.HTTP
	defer func() { a.http() }()
	if svc, err := a.g.serveCommands(a.nc); err != nil {
		a.log.Warn("the command endpoints are not served", "err", err)
	} else {
		defer svc.Stop()
	}
	a.gen = a.g.startGeneration(ctx, cfg)

	wctx, stopWatch := context.WithCancel(ctx)
	updates := make(chan kvUpdate)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		a.watch(wctx, updates)
	}()
	defer func() {
		stopWatch()
		<-watched
	}()

	hb := time.NewTicker(a.f.Heartbeat)
	defer hb.Stop()
	a.heartbeat(ctx)
	var settle <-chan time.Time // a change seen: apply once the burst settles
	var check <-chan time.Time  // trying a config: check its health
	var deadline time.Time
	dirty := false
	for {
		select {
		case <-ctx.Done():
			return a.gen.stop()
		case <-a.gen.done:
			if a.trying != nil {
				a.rollBack(ctx, fmt.Sprintf("it stopped: %v", a.gen.err))
				check = nil
				continue
			}
			if a.gen.err == nil {
				return errors.New("gateway stopped")
			}
			return a.gen.err
		case u := <-updates:
			if u.caughtUp {
				a.caughtUp.Add(1)
				continue
			}
			if a.note(u) {
				dirty = true
				settle = time.After(200 * time.Millisecond)
			}
		case <-settle:
			settle = nil
			if a.trying == nil && dirty {
				dirty = false
				if a.apply(ctx) {
					deadline = time.Now().Add(a.f.Health.Timeout)
					check = time.After(100 * time.Millisecond)
				}
			}
		case <-check:
			problem := a.g.unhealthy(a.f.Health, a.gen.started)
			switch {
			case problem == "":
				a.kept()
				check = nil
			case time.Now().After(deadline):
				a.rollBack(ctx, fmt.Sprintf("health check failed after %s: %s", a.f.Health.Timeout, problem))
				check = nil
			default:
				check = time.After(100 * time.Millisecond)
			}
			if check == nil && dirty {
				settle = time.After(0) // a change arrived meanwhile
			}
		case <-hb.C:
			a.heartbeat(ctx)
		}
	}
}

// note records an update from the watch and says whether the desired
// config changed. An update at or below the revision last seen of the
// same bucket is a replay and changes nothing.
func (a *fleetAgent) note(u kvUpdate) bool {
	if !u.created.Equal(a.saved.Created) {
		if !a.saved.Created.IsZero() {
			a.log.Warn("the config bucket was recreated; its revisions start again", "bucket", a.f.ConfigBucket)
		}
		a.saved.Created = u.created
		a.saved.Seen = map[string]uint64{}
	}
	cur := a.desired[u.key]
	if u.absent {
		if !cur.Present {
			return false
		}
		a.desired[u.key] = kvValue{}
		return true
	}
	if u.v.Revision <= a.saved.Seen[u.key] {
		return false
	}
	a.saved.Seen[u.key] = u.v.Revision
	a.desired[u.key] = u.v
	return true
}

// apply lays the desired overlays over the local file, checks the result
// and runs it; it says whether a health check is due.
func (a *fleetAgent) apply(ctx context.Context) bool {
	want := maps.Clone(a.desired)
	if sameRevisions(want, a.saved.Applied) {
		return false
	}
	cfg, err := a.local.WithOverlays(a.overlays(want)...)
	if err != nil {
		a.log.Error("fleet config rejected; the running config stays", "desired_revision", maxRevision(want), "err", err)
		a.done(status.StateRejected, want, err.Error())
		return false
	}
	if cfg.Summary() == a.gen.cfg.Summary() { // e.g. a value set to what it was
		a.saved.Applied = want
		a.done(status.StateApplied, want, "")
		return false
	}
	a.log.Info("applying fleet config", "desired_revision", maxRevision(want))
	a.prev, a.trying = a.gen.cfg, want
	a.setStatus(a.statusFor(status.StateApplying, want, ""))
	a.putStatus(ctx)
	if err := a.switchTo(ctx, cfg); err != nil {
		a.rollBack(ctx, err.Error())
		return false
	}
	return true
}

// switchTo moves the running generation to cfg (it restarts only what
// changed), or starts a new one if it has stopped; the HTTP listener
// moves only when its section changed.
func (a *fleetAgent) switchTo(ctx context.Context, cfg *config.Config) error {
	if !reflect.DeepEqual(cfg.HTTP, a.httpCfg) {
		a.http()
		a.http, a.httpCfg = func() {}, config.HTTPConfig{}
		stop, err := a.g.startHTTP(cfg)
		if err != nil {
			return err
		}
		a.http, a.httpCfg = stop, cfg.HTTP
	}
	err := a.gen.reconfigure(cfg)
	if errors.Is(err, errGenerationDone) {
		a.log.Warn("the running config had stopped; starting the new one afresh", "err", a.gen.err)
		a.gen = a.g.startGeneration(ctx, cfg)
		return nil
	}
	return err
}

// kept: the config being tried passed its health check.
func (a *fleetAgent) kept() {
	a.saved.Applied = a.trying
	a.log.Info("fleet config applied", "applied_revision", maxRevision(a.trying))
	a.done(status.StateApplied, a.trying, "")
	a.trying, a.prev = nil, nil
}

// rollBack returns to the last known good.
func (a *fleetAgent) rollBack(ctx context.Context, why string) {
	tried := a.trying
	a.log.Error("fleet config rolled back to the last known good", "desired_revision", maxRevision(tried), "applied_revision", maxRevision(a.saved.Applied), "err", why)
	if err := a.switchTo(ctx, a.prev); err != nil {
		a.log.Error("the last known good config cannot run either", "err", err)
	}
	a.trying, a.prev = nil, nil
	a.done(status.StateRolledBack, tried, why)
}

// done records an outcome for the desired revisions want, durably, and
// reports it.
func (a *fleetAgent) done(state string, want map[string]kvValue, msg string) {
	a.setStatus(a.statusFor(state, want, msg))
	a.saved.Status = a.currentStatus()
	a.saved.Status.Heartbeat = nil
	if err := a.save(); err != nil {
		a.log.Error("the fleet state cannot be saved; after a restart the last change may be tried again", "file", a.path, "err", err)
	}
	a.putStatus(context.Background())
}

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

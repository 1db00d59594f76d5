package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/forward"
	"github.com/edgegw/edgegw/gateway/status"
)

// kvValue is one key's overlay at a revision; !Present: no overlay (the
// key is absent or deleted).
type kvValue struct {
	Revision uint64 `json:"revision"`
	Present  bool   `json:"present"`
	Data     string `json:"data,omitempty"`
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

// startGeneration runs c, serving the command endpoints on nc.
func (g *Gateway) startGeneration(ctx context.Context, c *config.Config, nc *nats.Conn) *generation {
	ctx, cancel := context.WithCancel(ctx)
	gen := &generation{cfg: c, started: time.Now(), cancel: cancel, conf: make(chan reconfig), done: make(chan struct{})}
	go func() {
		defer close(gen.done)
		gen.err = g.runConfigs(ctx, c, nc, gen.conf)
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
	a.gen = a.g.startGeneration(ctx, a.resume(), a.nc)

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

// resume takes up where the saved state left off: the overlays last
// applied are the desired ones, a status a restart left at "applying"
// reads "applied" again, and the config to start is the last known good.
func (a *fleetAgent) resume() *config.Config {
	cfg := a.lastKnownGood()
	a.desired = maps.Clone(a.saved.Applied)
	st := a.saved.Status
	st.Gateway = a.local.Gateway.ID
	if st.State == "" || st.State == status.StateApplying {
		st.State = status.StateApplied
	}
	a.setStatus(st)
	return cfg
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
// changed), or starts a new one if it has stopped.
func (a *fleetAgent) switchTo(ctx context.Context, cfg *config.Config) error {
	err := a.gen.reconfigure(cfg)
	if errors.Is(err, errGenerationDone) {
		a.log.Warn("the running config had stopped; starting the new one afresh", "err", a.gen.err)
		a.gen = a.g.startGeneration(ctx, cfg, a.nc)
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
	// A heartbeat with the outcome, so that the fleet's table shows the
	// uplink as it is now, not as the last beat before the change saw it.
	a.heartbeat(context.Background())
}

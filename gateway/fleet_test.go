package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/forward"
	"github.com/edgegw/edgegw/gateway/mqtttest"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/status"
	"github.com/edgegw/edgegw/gateway/wait"
)

// fleetFile writes a gateway config with a fleet section and a simulated
// sensor every 10ms (so there is always something to forward), and
// loads it.
func fleetFile(t testing.TB, dir, natsURL, extra string) *config.Config {
	t.Helper()
	return fleetFileWith(t, dir, natsURL, extra)
}

// fleetFileWith is fleetFile with each old string of the text replaced by
// its new one (strings.NewReplacer's pairs).
func fleetFileWith(t testing.TB, dir, natsURL, extra string, oldnew ...string) *config.Config {
	t.Helper()
	text := fmt.Sprintf(`
gateway:
  id: gw1
  data_dir: %s
sensors:
  - name: room
    driver: sim
    interval: 10ms
upstream:
  servers: [%s]
  ack_timeout: 2s
  stream:
    name: TELEMETRY
    subjects: [telemetry.>]
    create: true
http:
  listen: 127.0.0.1:0
fleet:
  heartbeat: 1s
  health:
    timeout: %s
%s`, dir, natsURL, healthTimeout(), extra)
	text = strings.NewReplacer(oldnew...).Replace(text)
	path := filepath.Join(dir, "edgegw.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// healthTimeout is short, so that rollbacks are quick to see; under
// -short (CI's run under qemu, where a reconnect is slow) the default.
func healthTimeout() string {
	if testing.Short() {
		return "30s"
	}
	return "3s"
}

// skipShort skips a fleet test that restarts servers, cuts links or
// waits out health checks: CI runs them natively and under the race
// detector; its 32-bit run under qemu (-short) keeps the rest.
func skipShort(t *testing.T) {
	if testing.Short() {
		t.Skip("slow under emulation; runs without -short")
	}
}

// fleetHub is the operator's side: the config and status buckets.
type fleetHub struct {
	t      testing.TB
	nc     *nats.Conn
	js     jetstream.JetStream
	config jetstream.KeyValue
}

func newFleetHub(t testing.TB, url string) *fleetHub {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	h := &fleetHub{t: t, nc: nc, js: js}
	h.makeBuckets()
	return h
}

func (h *fleetHub) makeBuckets() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := h.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: config.DefaultConfigBucket, History: 5})
	if err != nil {
		h.t.Fatal(err)
	}
	h.config = kv
	if _, err := h.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: config.DefaultStatusBucket}); err != nil {
		h.t.Fatal(err)
	}
}

// put sets a key of the config bucket and returns its revision. Right
// after a server restart the operator's own connection may not be back
// yet: it tries again for up to 30s (a try that timed out may have
// stored a revision too; the gateway applies the newest either way).
func (h *fleetHub) put(key, yaml string) uint64 {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		rev, err := h.config.PutString(ctx, key, yaml)
		cancel()
		if err == nil {
			return rev
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("put %s: %v", key, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// status reads gw1's status entry.
func (h *fleetHub) status() (status.FleetStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var st status.FleetStatus
	kv, err := h.js.KeyValue(ctx, config.DefaultStatusBucket)
	if err != nil {
		return st, err
	}
	e, err := kv.Get(ctx, "gw.gw1")
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(e.Value(), &st)
}

// waitState waits until gw1 reports state for desired revision rev.
func (h *fleetHub) waitState(state string, rev uint64) status.FleetStatus {
	h.t.Helper()
	return h.waitStateWithin(time.Minute, state, rev)
}

func (h *fleetHub) waitStateWithin(limit time.Duration, state string, rev uint64) status.FleetStatus {
	h.t.Helper()
	var st status.FleetStatus
	var err error
	wait.For(h.t, fmt.Sprintf("state %s at revision %d", state, rev), func() bool {
		st, err = h.status()
		return err == nil && st.State == state && st.DesiredRevision == rev
	})
	return st
}

// A gateway applies the defaults and its own key in that order, live: a
// sensor added by its key appears upstream without a restart; a list in
// an overlay replaces the file's; the status entry and the config endpoint
// show the revisions.
func TestFleetAppliesOverlaysLive(t *testing.T) {
	srv := natstest.Start(t, nil)
	hub := newFleetHub(t, srv.URL())
	cfg := fleetFile(t, t.TempDir(), srv.URL(), "")
	g := startFleetGateway(t, cfg)
	hub.waitState(status.StateApplied, 0)

	hub.put("defaults", "upstream:\n  window: 64\nsensors:\n  - {name: hall, driver: sim, interval: 10ms}\n")
	rev := hub.put("gw.gw1", "upstream:\n  window: 32\n")
	st := hub.waitState(status.StateApplied, rev)
	if st.AppliedRevision != rev || st.Applied["defaults"] == 0 || st.Applied["gw.gw1"] != rev {
		t.Fatalf("status %+v", st)
	}
	eff := g.Config()
	if eff.Upstream.Window != 32 {
		t.Errorf("window %d: gw.gw1 is laid over defaults and should win", eff.Upstream.Window)
	}
	if len(eff.Sensors) != 1 || eff.Sensors[0].Name != "hall" {
		t.Errorf("sensors %+v: a list in an overlay replaces the file's", eff.Sensors)
	}
	wait.For(t, "the hall sensor's readings upstream", func() bool {
		n, _ := subjectCount(srv.URL(), "telemetry.gw1.hall")
		return n > 0
	})
	m, err := hub.nc.Request("edgegw.gw1.config", nil, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var reply gateway.ConfigReply
	if err := json.Unmarshal(m.Data, &reply); err != nil || reply.Fleet == nil || reply.Fleet.AppliedRevision != rev || !strings.Contains(reply.Config, "hall") {
		t.Fatalf("config endpoint: %v %.300s", err, m.Data)
	}

	// A null removes the key from every layer below: the built-in default.
	rev = hub.put("gw.gw1", "upstream:\n  window: null\n")
	hub.waitState(status.StateApplied, rev)
	if w := g.Config().Upstream.Window; w != config.DefaultWindow {
		t.Errorf("window %d after gw.gw1 set it to null, want the default %d", w, config.DefaultWindow)
	}
}

// subjectCount is how many messages the stream holds on subj (a filter).
func subjectCount(url, subj string) (uint64, error) {
	nc, err := nats.Connect(url)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "TELEMETRY")
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n, nil
}

// startFleetGateway runs g and waits for it to serve.
func startFleetGateway(t testing.TB, cfg *config.Config) *gateway.Gateway {
	t.Helper()
	g, err := gateway.New(cfg, gateway.Options{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(runGateway(t, g))
	wait.For(t, "the forwarder to reach the stream", func() bool { return g.Status().Upstream.Connected })
	return g
}

// An overlay that fails the checks is rejected with its key path and the
// overlay's line, and the running config keeps working.
func TestFleetRejectsAnInvalidOverlay(t *testing.T) {
	srv := natstest.Start(t, nil)
	hub := newFleetHub(t, srv.URL())
	g := startFleetGateway(t, fleetFile(t, t.TempDir(), srv.URL(), ""))
	hub.waitState(status.StateApplied, 0)
	rev := hub.put("gw.gw1", "upstream:\n  window: 2\n  lower_share: 0.9\n")
	st := hub.waitState(status.StateRejected, rev)
	if !strings.Contains(st.Error, "upstream.lower_share (gw.gw1 line 3)") || st.AppliedRevision != 0 {
		t.Fatalf("status %+v: want the key path and line of the bad value, nothing applied", st)
	}
	if w := g.Config().Upstream.Window; w == 2 {
		t.Fatal("the rejected overlay's window is running")
	}
	before, _ := subjectCount(srv.URL(), "telemetry.gw1.room")
	wait.For(t, "readings to keep flowing", func() bool {
		n, _ := subjectCount(srv.URL(), "telemetry.gw1.room")
		return n > before+20
	})

	// The box's identity and data are refused, with the reason.
	for key, overlay := range map[string]string{
		"gateway.id":       "gateway:\n  id: gw2\n",
		"gateway.data_dir": "gateway:\n  data_dir: /tmp/elsewhere\n",
		"buffer.path":      "buffer:\n  path: /tmp/other.db\n",
		"fleet":            "fleet:\n  config_bucket: other\n",
	} {
		rev := hub.put("gw.gw1", overlay)
		st := hub.waitState(status.StateRejected, rev)
		if !strings.Contains(st.Error, key) || !strings.Contains(st.Error, "cannot be changed remotely") {
			t.Errorf("%s: status error %q", key, st.Error)
		}
	}
}

// An overlay that points upstream at a dead server fails its health check
// and is rolled back: readings reach the stream again, the status says
// why, and the change is not tried again until a new revision.
func TestFleetRollsBackADeadUpstream(t *testing.T) {
	skipShort(t)
	srv := natstest.Start(t, nil)
	hub := newFleetHub(t, srv.URL())
	dir := t.TempDir()
	g := startFleetGateway(t, fleetFile(t, dir, srv.URL(), ""))
	hub.waitState(status.StateApplied, 0)
	good := hub.put("gw.gw1", "upstream:\n  window: 100\n")
	hub.waitState(status.StateApplied, good)

	dead := fmt.Sprintf("nats://127.0.0.1:%d", natstest.FreePort(t))
	rev := hub.put("gw.gw1", "upstream:\n  servers: ["+dead+"]\n")
	st := hub.waitState(status.StateRolledBack, rev)
	if st.AppliedRevision != good || !strings.Contains(st.Error, "health check failed") || !strings.Contains(st.Error, "upstream") {
		t.Fatalf("status %+v", st)
	}
	if s := g.Config().Upstream.Servers; len(s) != 1 || s[0] != srv.URL() || g.Config().Upstream.Window != 100 {
		t.Fatalf("after the rollback it runs %v window %d, want the last known good", s, g.Config().Upstream.Window)
	}
	before, _ := subjectCount(srv.URL(), "telemetry.gw1.room")
	wait.For(t, "readings upstream after the rollback", func() bool {
		n, _ := subjectCount(srv.URL(), "telemetry.gw1.room")
		return n > before+20
	})
	// A reconnect makes a new watch, which reports the bad revision again:
	// it is not tried a second time.
	watches := g.FleetCaughtUp()
	srv.Restart()
	wait.For(t, "the gateway back on the restarted server", func() bool { return g.Status().Upstream.Connected })
	wait.For(t, "a new watch to report the bad revision again", func() bool { return g.FleetCaughtUp() > watches })
	if again, err := hub.status(); err != nil || again.State != status.StateRolledBack || !again.At.Equal(st.At) {
		t.Fatalf("after a reconnect: %+v %v; the rolled back revision was tried again", again, err)
	}
	saved, err := os.ReadFile(filepath.Join(dir, "fleet.json"))
	var lkg struct {
		Applied map[string]struct{ Data string }
	}
	if err == nil {
		err = json.Unmarshal(saved, &lkg)
	}
	if d := lkg.Applied["gw.gw1"].Data; err != nil || !strings.Contains(d, "window: 100") || strings.Contains(d, dead) {
		t.Fatalf("fleet.json keeps the last known good: %v\n%s", err, saved)
	}
}

// The last known good is in data_dir: a box restarted while the hub is
// down runs its last applied config.
func TestFleetLastKnownGoodAfterARestartOffline(t *testing.T) {
	skipShort(t)
	srv := natstest.Start(t, nil)
	hub := newFleetHub(t, srv.URL())
	dir := t.TempDir()
	cfg := fleetFile(t, dir, srv.URL(), "")
	g, err := gateway.New(cfg, gateway.Options{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	stop := runGateway(t, g)
	rev := hub.put("gw.gw1", "upstream:\n  window: 77\nsensors:\n  - {name: cellar, driver: sim, interval: 10ms}\n")
	hub.waitState(status.StateApplied, rev)
	stop()

	srv.Shutdown()
	g2, err := gateway.New(fleetFile(t, dir, srv.URL(), ""), gateway.Options{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer runGateway(t, g2)()
	wait.For(t, "the cellar sensor to read, offline", func() bool {
		for _, s := range g2.Status().Sources {
			if s.Name == "cellar" && s.Ingested > 0 {
				return true
			}
		}
		return false
	})
	if g2.Config().Upstream.Window != 77 {
		t.Fatalf("window %d, want the last applied 77", g2.Config().Upstream.Window)
	}
	st, _ := g2.FleetStatus()
	if st.AppliedRevision != rev || st.State != status.StateApplied {
		t.Fatalf("fleet status after the restart: %+v", st)
	}
}

// The watch survives a server restart and a recreated bucket, and a
// change made while the gateway was away is applied when it is back: the
// latest wins, and an older revision is never applied again.
func TestFleetWatchSurvivesRestartsAndRecreation(t *testing.T) {
	skipShort(t)
	srv := natstest.Start(t, nil)
	hub := newFleetHub(t, srv.URL())
	dir := t.TempDir()
	g := startFleetGateway(t, fleetFile(t, dir, srv.URL(), ""))
	r1 := hub.put("gw.gw1", "upstream:\n  window: 11\n")
	hub.waitState(status.StateApplied, r1)

	srv.Restart()
	r2 := hub.put("gw.gw1", "upstream:\n  window: 12\n")
	// Soon: the watch is remade on the reconnect, not when the old one's
	// missed heartbeats give it away (about 20s here).
	hub.waitStateWithin(15*time.Second, status.StateApplied, r2)
	if w := g.Config().Upstream.Window; w != 12 {
		t.Fatalf("window %d after the server restart, want 12", w)
	}

	// Recreated: revisions start again at 1, below what the gateway saw.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hub.js.DeleteKeyValue(ctx, config.DefaultConfigBucket); err != nil {
		t.Fatal(err)
	}
	hub.makeBuckets()
	r3 := hub.put("gw.gw1", "upstream:\n  window: 13\n")
	if r3 >= r2 {
		t.Fatalf("recreated bucket's revision %d, expected below %d", r3, r2)
	}
	hub.waitState(status.StateApplied, r3)
	if w := g.Config().Upstream.Window; w != 13 {
		t.Fatalf("window %d after the bucket was recreated, want 13", w)
	}
}

// Changes made while the gateway is down: the latest is applied once, and
// an intermediate one (invalid here) is never tried.
func TestFleetOfflineChangesLatestWins(t *testing.T) {
	skipShort(t)
	srv := natstest.Start(t, nil)
	hub := newFleetHub(t, srv.URL())
	dir := t.TempDir()
	g, _ := gateway.New(fleetFile(t, dir, srv.URL(), ""), gateway.Options{Logger: testLogger()})
	stop := runGateway(t, g)
	r1 := hub.put("gw.gw1", "upstream:\n  window: 21\n")
	hub.waitState(status.StateApplied, r1)
	stop()

	hub.put("gw.gw1", "upstream:\n  window: -1\n") // never seen
	hub.put("defaults", "upstream:\n  rate: {events_per_second: 5000}\n")
	r4 := hub.put("gw.gw1", "upstream:\n  window: 24\n")
	g2 := startFleetGateway(t, fleetFile(t, dir, srv.URL(), ""))
	st := hub.waitState(status.StateApplied, r4)
	if c := g2.Config(); c.Upstream.Window != 24 || c.Upstream.Rate.EventsPerSecond != 5000 {
		t.Fatalf("window %d rate %v, want both offline changes", c.Upstream.Window, c.Upstream.Rate.EventsPerSecond)
	}
	if st.Error != "" {
		t.Fatalf("status %+v: the intermediate revision should not have been tried", st)
	}
}

// Heartbeats arrive on edgegw.status.<id> with the backlog, and refresh
// the status entry.
func TestFleetHeartbeat(t *testing.T) {
	srv := natstest.Start(t, nil)
	hub := newFleetHub(t, srv.URL())
	sub, err := hub.nc.SubscribeSync("edgegw.status.gw1")
	if err != nil {
		t.Fatal(err)
	}
	startFleetGateway(t, fleetFile(t, t.TempDir(), srv.URL(), ""))
	var hb status.Heartbeat
	for range 2 {
		m, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(m.Data, &hb); err != nil {
			t.Fatal(err)
		}
	}
	if hb.Gateway != "gw1" || !hb.Uplink || hb.DiskFreeBytes <= 0 || hb.GoVersion == "" || len(hb.Lanes) == 0 {
		t.Fatalf("heartbeat %+v", hb)
	}
	wait.For(t, "the status entry to carry a heartbeat", func() bool {
		st, err := hub.status()
		return err == nil && st.Heartbeat != nil && st.Heartbeat.At.After(time.Now().Add(-3*time.Second))
	})
}

// testLogger logs to stderr when EDGEGW_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("EDGEGW_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// The hub's per-gateway permissions (deploy/upstream): a gateway watches
// and applies its own config and writes its own status, and cannot read
// another's config, write another's status or heartbeat.
func TestFleetPermissionsFromDeploy(t *testing.T) {
	skipShort(t)
	srv := natstest.StartHub(t, "../deploy/upstream/hub.conf")
	opsURL := strings.Replace(srv.URL(), "nats://", "nats://ops:ops-pw@", 1)
	hub := newFleetHub(t, opsURL)
	data, err := os.ReadFile("../deploy/upstream/telemetry-stream.json")
	if err != nil {
		t.Fatal(err)
	}
	var sc jetstream.StreamConfig
	if err := json.Unmarshal(data, &sc); err != nil {
		t.Fatal(err)
	}
	sc.Replicas = 1
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := hub.js.CreateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	hub.put("gw.van-07", "upstream:\n  window: 7\n")
	rev := hub.put("gw.lobby-pi-01", "upstream:\n  window: 101\n")

	cfg := fleetFileWith(t, t.TempDir(), srv.URL(), "", "id: gw1", "id: lobby-pi-01", "create: true", "create: false",
		"ack_timeout: 2s", "ack_timeout: 2s\n  user: lobby-pi-01\n  password: lobby-pw")
	g := startFleetGateway(t, cfg)
	wait.For(t, "lobby-pi-01 to apply its own key", func() bool {
		st, ok := g.FleetStatus()
		return ok && st.State == status.StateApplied && st.AppliedRevision == rev
	})
	if w := g.Config().Upstream.Window; w != 101 {
		t.Fatalf("window %d", w)
	}
	wait.For(t, "its status entry", func() bool {
		kv, err := hub.js.KeyValue(ctx, config.DefaultStatusBucket)
		if err != nil {
			return false
		}
		e, err := kv.Get(ctx, "gw.lobby-pi-01")
		return err == nil && strings.Contains(string(e.Value()), `"state":"applied"`)
	})

	// As lobby-pi-01: another gateway's config and status are out of reach.
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	denied := make(chan error, 64)
	nc, err := nats.Connect(srv.URL(), nats.UserInfo("lobby-pi-01", "lobby-pw"), nats.CustomInboxPrefix(forward.InboxPrefix("lobby-pi-01")),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case denied <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, config.DefaultConfigBucket)
	if err != nil {
		t.Fatal(err)
	}
	// A denied request gets no answer at all: each waits out a short ctx.
	short := func() context.Context {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		t.Cleanup(cancel)
		return c
	}
	if e, err := kv.Get(short(), "gw.van-07"); err == nil {
		t.Fatalf("lobby-pi-01 read van-07's config: %q", e.Value())
	}
	if w, err := kv.Watch(short(), "gw.van-07"); err == nil {
		select {
		case e := <-w.Updates():
			if e != nil {
				t.Fatalf("lobby-pi-01 watched van-07's config: %q", e.Value())
			}
		case <-time.After(2 * time.Second):
		}
		w.Stop()
	}
	if w, err := kv.Watch(short(), ">"); err == nil {
		select {
		case e := <-w.Updates():
			if e != nil {
				t.Fatalf("lobby-pi-01 watched the whole bucket: %s %q", e.Key(), e.Value())
			}
		case <-time.After(2 * time.Second):
		}
		w.Stop()
	}
	own, err := kv.Watch(ctx, "gw.lobby-pi-01")
	if err != nil {
		t.Fatalf("its own key: %v", err)
	}
	if e := <-own.Updates(); e == nil || e.Revision() != rev {
		t.Fatalf("its own key: %v", e)
	}
	own.Stop()
	// The replies to others' requests (van-07's watch, an operator's
	// fleet call) are out of reach: a gateway may subscribe to its own
	// inbox prefix only.
	waitDenied := func(what string) {
		t.Helper()
		nc.Flush()
		for {
			select {
			case err := <-denied:
				if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), what) {
					return
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("lobby-pi-01 was not refused: %s", what)
			}
		}
	}
	for _, subj := range []string{"_INBOX.>", "_INBOX_van-07.>"} {
		if _, err := nc.Subscribe(subj, func(m *nats.Msg) { t.Errorf("lobby-pi-01 read a reply on %s", m.Subject) }); err != nil {
			t.Fatal(err)
		}
		waitDenied("Subscription to \"" + subj + "\"")
	}
	// No consumer deletes at all: van-07's watch, anyone's.
	nc.Publish("$JS.API.CONSUMER.DELETE.KV_edgegw_config.anyones", nil)
	waitDenied(`Publish to "$JS.API.CONSUMER.DELETE.KV_edgegw_config.anyones"`)
	skv, err := js.KeyValue(ctx, config.DefaultStatusBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := skv.Put(short(), "gw.van-07", []byte(`{"state":"applied"}`)); err == nil {
		t.Fatal("lobby-pi-01 wrote van-07's status")
	}
	nc.Publish("edgegw.status.van-07", []byte("{}"))
	nc.Flush()
	select {
	case err := <-denied:
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Fatalf("want permission violations: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no permission violation")
	}
}

// Ten config changes while a device publishes and a sensor reads: every
// change applied live, and the stream gets every event the gateway stored
// exactly once, in order (oldest_first), and every message the broker
// accepted.
func TestFleetTenChangesUnderLoad(t *testing.T) {
	skipShort(t)
	broker := mqtttest.Start(t, mqtttest.Options{})
	srv := natstest.Start(t, nil)
	hub := newFleetHub(t, srv.URL())
	dir := t.TempDir()
	mqttPart := fmt.Sprintf(`mqtt:
  broker: %s
  subscriptions:
    - topic: sensors/#
      qos: 1
`, broker.URL())
	cfg := fleetFileWith(t, dir, srv.URL(), mqttPart, "create: true", "create: true\n    duplicates: 1s\n  drain: oldest_first")
	g := startFleetGateway(t, cfg)
	wait.For(t, "the gateway to subscribe", func() bool { return g.Stats().MQTT.Subscribed })

	const n = 4000
	pub := newPublisher(t, broker.URL(), "device", false)
	published := make(chan struct{})
	go func() {
		defer close(published)
		pub.publish(0, n, 50, time.Millisecond)
	}()
	changes := []string{
		"upstream:\n  window: 50\n",
		"sensors:\n  - {name: room, driver: sim, interval: 10ms}\n  - {name: hall, driver: sim, interval: 5ms}\n",
		"mqtt:\n  subscriptions:\n    - {topic: sensors/#, qos: 1}\n    - {topic: other/#, qos: 1}\n",
		"upstream:\n  rate: {events_per_second: 3000}\n",
		"buffer:\n  max_bytes: 64MiB\n",
		"sensors:\n  - {name: room, driver: sim, interval: 7ms}\n",
		"upstream:\n  window: 8\n",
		"mqtt:\n  max_payload: 128KiB\n",
		"upstream:\n  lower_share: 0.2\n",
		"upstream:\n  window: 1024\n  rate: null\nsensors: []\n", // no sensors: the buffer can drain
	}
	for i, c := range changes {
		rev := hub.put("gw.gw1", c)
		st := hub.waitState(status.StateApplied, rev)
		if st.Error != "" {
			t.Fatalf("change %d: %+v", i+1, st)
		}
	}
	<-published
	accepted := pub.acceptedSet()
	if len(accepted) != n {
		t.Fatalf("the broker accepted %d of %d", len(accepted), n)
	}
	deadline := time.Now().Add(time.Minute)
	for c, _ := subjectCount(srv.URL(), "telemetry.gw1.sensors.>"); c < n; c, _ = subjectCount(srv.URL(), "telemetry.gw1.sensors.>") {
		if time.Now().After(deadline) {
			count := map[int]int{}
			for _, m := range natstest.Messages(t, srv.URL()) {
				var i, tt int
				if _, err := fmt.Sscanf(string(m.Data()), `{"n":%d,"t":%d.25}`, &i, &tt); err == nil {
					count[i]++
				}
			}
			var missing []int
			for i := range n {
				if count[i] == 0 {
					missing = append(missing, i)
				}
			}
			t.Fatalf("%d of %d device messages upstream, missing %v; gateway: %+v", c, n, missing, g.Status())
		}
		time.Sleep(50 * time.Millisecond)
	}
	wait.For(t, "the buffer to drain", func() bool { return g.Status().Buffer.Events == 0 })

	seen := map[uint64]int{}
	var maxSeq uint64
	minSeq := uint64(1<<64 - 1)
	count := map[int]int{}
	last := -1
	for _, m := range natstest.Messages(t, srv.URL()) {
		var seq uint64
		if _, err := fmt.Sscanf(m.Headers().Get("Nats-Msg-Id"), "gw1-%d", &seq); err != nil {
			t.Fatalf("message id %q", m.Headers().Get("Nats-Msg-Id"))
		}
		seen[seq]++
		maxSeq, minSeq = max(maxSeq, seq), min(minSeq, seq)
		if !strings.HasPrefix(m.Subject(), "telemetry.gw1.sensors.") {
			continue
		}
		var i, tt int
		if _, err := fmt.Sscanf(string(m.Data()), `{"n":%d,"t":%d.25}`, &i, &tt); err != nil {
			t.Fatalf("message %q", m.Data())
		}
		count[i]++
		if i <= last {
			t.Fatalf("device message %d after %d: out of order", i, last)
		}
		last = i
	}
	for i := range n {
		if count[i] != 1 {
			t.Fatalf("device message %d is in the stream %d times", i, count[i])
		}
	}
	for s := minSeq; s <= maxSeq; s++ {
		if seen[s] != 1 {
			t.Fatalf("event %d is in the stream %d times (events %d..%d)", s, seen[s], minSeq, maxSeq)
		}
	}
	if next := g.Status().Buffer.NextSeq; maxSeq != next-1 {
		t.Fatalf("the stream ends at event %d, the buffer stored up to %d", maxSeq, next-1)
	}
	if st := g.Status().Buffer; maxSeq-minSeq+1 != st.Appended {
		t.Fatalf("the stream holds events %d..%d, the buffer stored %d", minSeq, maxSeq, st.Appended)
	}
	t.Logf("%d events (%d from the device) through 10 changes: each once, in order", maxSeq-minSeq+1, n)
}

// The acting endpoints: sensors.read takes a reading now through the
// running poller, mqtt.publish reaches a device subscribed to the
// embedded broker, gpio.set drives an output declared in config; bad
// requests get a 4xx that says what is wrong.
func TestFleetCommands(t *testing.T) {
	srv := natstest.Start(t, nil)
	hub := newFleetHub(t, srv.URL())
	dir := t.TempDir()
	port := natstest.FreePort(t)
	cfg := fleetFile(t, dir, srv.URL(), fmt.Sprintf(`mqtt:
  server:
    listen: 127.0.0.1:%d
    allow_anonymous: true
  subscriptions:
    - topic: sensors/#
outputs:
  - name: relay
    pin: GPIO23
`, port))
	pin := &gpiotest.Pin{N: "GPIO23", L: gpio.High}
	g, err := gateway.New(cfg, gateway.Options{Logger: testLogger(), OpenOutput: func(name string) (gpio.PinOut, error) {
		if name != "GPIO23" {
			return nil, fmt.Errorf("no pin %s", name)
		}
		return pin, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(runGateway(t, g))
	// Each part the test uses, ready: the endpoints, the output (opened
	// at its initial level, low), the broker's listener.
	wait.For(t, "the service", func() bool {
		_, err := hub.nc.Request("edgegw.gw1.status", nil, time.Second)
		return err == nil
	})
	wait.For(t, "the output at its initial level (low)", func() bool { return pin.Read() == gpio.Low })
	wait.For(t, "the broker to listen", func() bool {
		for _, s := range g.Status().Sources {
			if s.Kind == status.KindMQTTServer {
				return s.Up
			}
		}
		return false
	})
	call := func(endpoint, body string) (*nats.Msg, string) {
		t.Helper()
		m, err := hub.nc.Request("edgegw.gw1."+endpoint, []byte(body), 10*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", endpoint, err)
		}
		return m, m.Header.Get("Nats-Service-Error-Code")
	}

	m, code := call("sensors.read", `{"sensor":"room"}`)
	var reading gateway.SensorsReadReply
	if err := json.Unmarshal(m.Data, &reading); err != nil || code != "" || len(reading.Readings) != 1 || reading.Readings[0].Sensor != "room" || len(reading.Readings[0].Values) == 0 {
		t.Fatalf("sensors.read: %s %s %v", code, m.Data, err)
	}
	if _, code := call("sensors.read", `{"sensor":"attic"}`); code != "404" {
		t.Fatalf("sensors.read of an unknown sensor: code %q", code)
	}

	device := paho.NewClient(paho.NewClientOptions().AddBroker(fmt.Sprintf("tcp://127.0.0.1:%d", port)).SetClientID("valve"))
	if tok := device.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer device.Disconnect(100)
	got := make(chan string, 1)
	if tok := device.Subscribe("cmd/valve", 1, func(_ paho.Client, m paho.Message) { got <- string(m.Payload()) }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	if m, code := call("mqtt.publish", `{"topic":"cmd/valve","payload":"open","qos":1}`); code != "" {
		t.Fatalf("mqtt.publish: %s %s", code, m.Data)
	}
	select {
	case p := <-got:
		if p != "open" {
			t.Fatalf("the device got %q", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the device got no downlink")
	}
	if _, code := call("mqtt.publish", `{"topic":"cmd/#","payload":"x"}`); code != "400" {
		t.Fatalf("publish to a wildcard: code %q", code)
	}
	if _, code := call("mqtt.publish", `{"topic":"cmd/x","qos":3}`); code != "400" {
		t.Fatalf("qos 3: code %q", code)
	}

	if m, code := call("gpio.set", `{"name":"relay","level":"high"}`); code != "" || pin.Read() != gpio.High {
		t.Fatalf("gpio.set: %s %s, pin %s", code, m.Data, pin.Read())
	}
	if _, code := call("gpio.set", `{"name":"pump","level":"high"}`); code != "404" {
		t.Fatalf("gpio.set of an undeclared output: code %q", code)
	}
	if _, code := call("gpio.set", `{"name":"relay","level":"on"}`); code != "400" {
		t.Fatalf("gpio.set level on: code %q", code)
	}
	if _, code := call("gpio.set", `{"name":"relay","levle":"low"}`); code != "400" {
		t.Fatalf("gpio.set with a misspelt field: code %q", code)
	}

	// A config change keeps the output where the fleet set it.
	rev := hub.put("gw.gw1", "upstream:\n  window: 99\n")
	hub.waitState(status.StateApplied, rev)
	if pin.Read() != gpio.High {
		t.Fatal("a config change reset the output")
	}
}

// The MQTT half of the health check: an overlay that points mqtt.broker
// at nothing is rolled back, and the client is back on the site's broker.
func TestFleetRollsBackADeadBroker(t *testing.T) {
	skipShort(t)
	broker := mqtttest.Start(t, mqtttest.Options{})
	srv := natstest.Start(t, nil)
	hub := newFleetHub(t, srv.URL())
	cfg := fleetFile(t, t.TempDir(), srv.URL(), fmt.Sprintf("mqtt:\n  broker: %s\n  subscriptions:\n    - topic: sensors/#\n", broker.URL()))
	g := startFleetGateway(t, cfg)
	wait.For(t, "the gateway to subscribe", func() bool { return g.Stats().MQTT.Subscribed })
	rev := hub.put("gw.gw1", fmt.Sprintf("mqtt:\n  broker: tcp://127.0.0.1:%d\n", natstest.FreePort(t)))
	st := hub.waitState(status.StateRolledBack, rev)
	if !strings.Contains(st.Error, "mqtt") || st.AppliedRevision != 0 {
		t.Fatalf("status %+v", st)
	}
	if g.Config().MQTT.Broker != broker.URL() {
		t.Fatalf("broker %s after the rollback", g.Config().MQTT.Broker)
	}
	wait.For(t, "the client back on the site's broker", func() bool { return g.Stats().MQTT.Subscribed })
	deliverOne(t, paho.NewClientOptions().AddBroker(broker.URL()).SetClientID("pub"), srv.URL())
}

// The box's link goes down while the hub stays up, and the operator
// changes its config twice meanwhile: when the link is back, the latest
// is applied (the first never) and the status names it.
func TestFleetChangesWhileTheLinkIsDown(t *testing.T) {
	skipShort(t)
	srv := natstest.Start(t, nil)
	hub := newFleetHub(t, srv.URL())
	link := natstest.NewLink(t, srv.URL())
	g := startFleetGateway(t, fleetFile(t, t.TempDir(), link.URL(), ""))
	r1 := hub.put("gw.gw1", "upstream:\n  window: 31\n")
	hub.waitState(status.StateApplied, r1)

	link.Cut()
	wait.For(t, "the gateway to see the link down", func() bool { return !g.Status().Upstream.Connected })
	hub.put("gw.gw1", "upstream:\n  window: 32\n")
	r3 := hub.put("gw.gw1", "upstream:\n  window: 33\n")
	// The cut link closed every connection and refuses new ones: nothing
	// of the puts can have reached the gateway.
	if w := g.Config().Upstream.Window; w != 31 {
		t.Fatalf("window %d while the link is down", w)
	}
	link.Restore()
	st := hub.waitState(status.StateApplied, r3)
	if st.AppliedRevision != r3 || g.Config().Upstream.Window != 33 {
		t.Fatalf("after the link came back: %+v, window %d", st, g.Config().Upstream.Window)
	}
}

// nats micro ls finds every gateway: each is an instance of the service
// edgegw, answering the discovery PING with its id in the metadata.
func TestFleetServiceDiscovery(t *testing.T) {
	srv := natstest.Start(t, nil)
	hub := newFleetHub(t, srv.URL())
	ids := map[string]bool{}
	for _, id := range []string{"gw1", "gw2"} {
		startFleetGateway(t, fleetFileWith(t, t.TempDir(), srv.URL(), "", "id: gw1", "id: "+id))
		ids[id] = true
	}
	wait.For(t, "both gateways to answer the discovery ping", func() bool {
		inbox := nats.NewInbox()
		sub, err := hub.nc.SubscribeSync(inbox)
		if err != nil {
			return false
		}
		defer sub.Unsubscribe()
		hub.nc.PublishRequest("$SRV.INFO.edgegw", inbox, nil)
		seen := map[string]bool{}
		for {
			m, err := sub.NextMsg(500 * time.Millisecond)
			if err != nil {
				break
			}
			var info struct {
				Name        string            `json:"name"`
				Description string            `json:"description"`
				Metadata    map[string]string `json:"metadata"`
			}
			// Each instance names its gateway in its metadata and in the
			// description nats micro ls shows.
			if json.Unmarshal(m.Data, &info) == nil && info.Name == "edgegw" && info.Description == "edgegw gateway "+info.Metadata["gateway"] {
				seen[info.Metadata["gateway"]] = true
			}
		}
		return len(seen) == len(ids) && seen["gw1"] && seen["gw2"]
	})
}

// An apply's outcome carries a heartbeat taken after it: the fleet's
// table shows the uplink as it is, not as a beat an hour old saw it.
func TestFleetApplyBeats(t *testing.T) {
	srv := natstest.Start(t, nil)
	hub := newFleetHub(t, srv.URL())
	startFleetGateway(t, fleetFileWith(t, t.TempDir(), srv.URL(), "", "heartbeat: 1s", "heartbeat: 1h"))
	wait.For(t, "the first heartbeat in the status entry", func() bool {
		st, err := hub.status()
		return err == nil && st.Heartbeat != nil
	})
	before := time.Now()
	rev := hub.put("gw.gw1", "upstream:\n  window: 77\n")
	st := hub.waitState(status.StateApplied, rev)
	if hb := st.Heartbeat; hb == nil || hb.At.Before(before) || !hb.Uplink || hb.AppliedRevision != rev {
		t.Fatalf("the applied status carries heartbeat %+v (the change was put at %s)", hb, before)
	}
}

// After a change the log names the sections that changed; it does not say
// "edgegw running" again as if it had restarted.
func TestChangedSections(t *testing.T) {
	a := fleetFile(t, t.TempDir(), "nats://127.0.0.1:4222", "")
	b := *a
	b.Upstream.Window = a.Upstream.Window + 1
	b.Sensors = append([]config.SensorConfig(nil), a.Sensors...)
	b.Sensors[0].Interval *= 2
	if got := gateway.ChangedSections(a, &b); !slices.Equal(got, []string{"upstream", "sensors"}) {
		t.Fatalf("changed sections %v, want [upstream sensors] (in the config's order)", got)
	}
	if got := gateway.ChangedSections(a, a); len(got) != 0 {
		t.Fatalf("no change: %v", got)
	}
}

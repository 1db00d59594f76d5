package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/status"
	"github.com/edgegw/edgegw/gateway/wait"
)

// The fleet commands against a real hub and a real gateway: set checks an
// overlay before it is stored, status shows the gateway applying it, call
// reaches its endpoints.
func TestFleetCommands(t *testing.T) {
	srv := natstest.Start(t, nil)
	hub := []string{"--server", srv.URL()}
	fleet := func(args ...string) (code int, stdout, stderr string) {
		var out, errb bytes.Buffer
		code = run(append(append([]string{"fleet"}, args...), hub...), &out, &errb)
		return code, out.String(), errb.String()
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("upstream:\n  window: -1\n"), 0o600)
	if code, _, errb := fleet("set", "gw1", bad); code != 1 || !strings.Contains(errb, "upstream.window (gw.gw1 line 2)") || !strings.Contains(errb, "not set") {
		t.Fatalf("a bad overlay: exit %d\n%s", code, errb)
	}
	refused := filepath.Join(dir, "refused.yaml")
	os.WriteFile(refused, []byte("gateway:\n  data_dir: /elsewhere\n"), 0o600)
	if code, _, errb := fleet("set", "defaults", refused); code != 1 || !strings.Contains(errb, "gateway.data_dir") {
		t.Fatalf("a refused key: exit %d\n%s", code, errb)
	}
	if code, _, _ := fleet("set", "a.b", bad); code != 2 {
		t.Fatalf("a bad gateway id: exit %d", code)
	}
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("upstream:\n  window: 42\n"), 0o600)
	code, out, errb := fleet("set", "gw1", good)
	if code != 0 || !strings.Contains(out, "gw.gw1 set at revision 1") {
		t.Fatalf("set: exit %d\n%s%s", code, out, errb)
	}

	cfgPath := filepath.Join(dir, "edgegw.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf("gateway:\n  id: gw1\n  data_dir: %s\nsensors:\n  - {name: room, driver: sim, interval: 50ms}\nupstream:\n  servers: [%s]\n  stream:\n    create: true\nhttp:\n  listen: 127.0.0.1:0\nfleet:\n  heartbeat: 1s\n", dir, srv.URL())), 0o600)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(cfg, gateway.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	wait.For(t, "fleet status showing gw1 applied with a heartbeat", func() bool {
		code, out, errb = fleet("status")
		return code == 0 && gatewayRow(out, "gw1", "applied", "1", "1", "up")
	})
	if !strings.HasPrefix(out, "GATEWAY") || !strings.Contains(out, " ago") {
		t.Fatalf("status table:\n%s", out)
	}
	if g.Config().Upstream.Window != 42 {
		t.Fatalf("window %d", g.Config().Upstream.Window)
	}

	code, out, errb = fleet("status", "--json")
	var rows []status.FleetStatus
	if err := json.Unmarshal([]byte(out), &rows); code != 0 || err != nil || len(rows) != 1 || rows[0].Gateway != "gw1" || rows[0].State != status.StateApplied || rows[0].Heartbeat == nil {
		t.Fatalf("status --json: exit %d %v\n%s%s", code, err, out, errb)
	}
	// The config's YAML as itself, not as one escaped JSON string.
	code, out, errb = fleet("call", "gw1", "config")
	if code != 0 || !strings.Contains(out, `"applied_revision": 1`) || !strings.Contains(out, "\nconfig:\n") || !strings.Contains(out, "\n  window: 42\n") || strings.Contains(out, `\n`) {
		t.Fatalf("call config: exit %d\n%s%s", code, out, errb)
	}
	code, out, _ = fleet("call", "gw1", "sensors.read", `{"sensor":"room"}`)
	if code != 0 || !strings.Contains(out, `"temperature_c"`) {
		t.Fatalf("call sensors.read: exit %d\n%s", code, out)
	}
	// No request reads every sensor, as docs/fleet.md says.
	code, out, errb = fleet("call", "gw1", "sensors.read")
	if code != 0 || !strings.Contains(out, `"sensor": "room"`) {
		t.Fatalf("call sensors.read without a request: exit %d\n%s%s", code, out, errb)
	}
	if code, _, errb := fleet("call", "gw1", "gpio.set", `{"name":"pump","level":"high"}`); code != 1 || !strings.Contains(errb, "404") {
		t.Fatalf("call gpio.set of no output: exit %d %s", code, errb)
	}
	if code, _, errb := fleet("call", "gw9", "status"); code != 1 || !strings.Contains(errb, "offline") {
		t.Fatalf("call an absent gateway: exit %d %s", code, errb)
	}
	if code, _, _ := fleet("call", "gw1", "status", "{not json"); code != 2 {
		t.Fatalf("call with a body that is not JSON: exit %d", code)
	}
	if code, out, errb := fleet("unset", "gw1"); code != 0 {
		t.Fatalf("unset: %d %s%s", code, out, errb)
	}
	wait.For(t, "the default window back after unset", func() bool { return g.Config().Upstream.Window == config.DefaultWindow })
}

// gatewayRow reports whether the status table has a row for id whose
// next columns are want.
func gatewayRow(table, id string, want ...string) bool {
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) > len(want) && f[0] == id {
			for i, w := range want {
				if f[i+1] != w {
					return false
				}
			}
			return true
		}
	}
	return false
}

// --help never prints a secret: $NATS_URL (which may carry the hub's
// password) used to be the --server flag's printed default.
func TestFleetHelpPrintsNoSecret(t *testing.T) {
	t.Setenv("NATS_URL", "nats://ops:hunter2-secret@127.0.0.1:4222")
	for _, sub := range []string{"status", "set", "unset", "call"} {
		var out, errb bytes.Buffer
		run([]string{"fleet", sub, "--help"}, &out, &errb)
		if strings.Contains(out.String()+errb.String(), "hunter2") {
			t.Fatalf("edgegw fleet %s --help prints the password:\n%s%s", sub, out.String(), errb.String())
		}
	}
}

// --context NAME takes the hub's URL and credentials from a nats CLI
// context, as nats --context does: here a user and password the hub
// requires.
func TestFleetNATSContext(t *testing.T) {
	srv := natstest.Start(t, func(o *server.Options) { o.Username, o.Password = "ops", "ctx-pw" })
	cfgHome := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", cfgHome)
	t.Setenv("NATS_URL", "")
	dir := filepath.Join(cfgHome, "nats", "context")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ctxFile := fmt.Sprintf(`{"description":"the hub","url":%q,"user":"ops","password":"ctx-pw"}`, srv.URL())
	if err := os.WriteFile(filepath.Join(dir, "hub.json"), []byte(ctxFile), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run([]string{"fleet", "status", "--server", srv.URL()}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "Authorization Violation") {
		t.Fatalf("without the context's credentials: exit %d\n%s", code, errb.String())
	}
	out.Reset()
	errb.Reset()
	// Logged in: the hub answers that it has no status bucket yet.
	if code := run([]string{"fleet", "status", "--context", "hub"}, &out, &errb); !strings.Contains(out.String()+errb.String(), "no gateway has reported yet") {
		t.Fatalf("fleet status --context hub: exit %d\n%s%s", code, out.String(), errb.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"fleet", "status", "--context", "nope"}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "nats context ls") {
		t.Fatalf("a missing context: exit %d\n%s", code, errb.String())
	}
}

// The fleet table never cuts the reason a config was refused.
func TestFleetTableKeepsTheReason(t *testing.T) {
	why := "upstream.lower_share (gw.gw1 line 5): 0.9 is outside 0..0.5; the share of the uplink lower lanes may take"
	var out bytes.Buffer
	printFleetTable(&out, []status.FleetStatus{{Gateway: "gw1", State: status.StateRejected, DesiredRevision: 3, AppliedRevision: 2, Error: why}}, time.Now())
	if !strings.Contains(out.String(), why) {
		t.Fatalf("the reason is cut:\n%s", out.String())
	}
}

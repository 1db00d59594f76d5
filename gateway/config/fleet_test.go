package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgegw/edgegw/gateway/config"
)

const overlayBase = `gateway:
  id: gw1
  data_dir: /var/lib/edgegw
mqtt:
  broker: tcp://127.0.0.1:1883
  subscriptions:
    - topic: sensors/#
      qos: 1
upstream:
  servers: [nats://127.0.0.1:4222]
  window: 100
  rate:
    events_per_second: 50
`

func loadBase(t testing.TB) *config.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "edgegw.yaml")
	if err := os.WriteFile(path, []byte(overlayBase), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// How overlays merge (docs/fleet.md): maps key by key, the later layer
// wins, a list replaces, a null removes the key (the built-in default),
// and ${VAR} is expanded from the gateway's environment.
func TestOverlaysMerge(t *testing.T) {
	base := loadBase(t)
	t.Setenv("EDGEGW_TEST_SUBJECT", "site7")
	c, err := base.WithOverlays(
		config.Overlay{Name: "defaults", Data: []byte("upstream:\n  window: 200\n  rate:\n    bytes_per_second: 1MiB\nmqtt:\n  subscriptions:\n    - topic: a/#\n    - topic: b/#\n")},
		config.Overlay{Name: "gw.gw1", Data: []byte("upstream:\n  window: 300\n  rate:\n    events_per_second: null\nmqtt:\n  subscriptions:\n    - topic: c/#\n      subject: ${EDGEGW_TEST_SUBJECT}.{gateway}.{topic}\n")},
	)
	if err != nil {
		t.Fatal(err)
	}
	if c.Upstream.Window != 300 {
		t.Errorf("window %d: the gateway's key is laid last", c.Upstream.Window)
	}
	if c.Upstream.Rate.BytesPerSecond != 1<<20 || c.Upstream.Rate.EventsPerSecond != 0 {
		t.Errorf("rate %+v: maps merge key by key, null removes", c.Upstream.Rate)
	}
	if s := c.MQTT.Subscriptions; len(s) != 1 || s[0].Topic != "c/#" || s[0].Subject != "site7.{gateway}.{topic}" {
		t.Errorf("subscriptions %+v: a list replaces, ${VAR} expands", s)
	}
	if c.MQTT.Broker != "tcp://127.0.0.1:1883" {
		t.Errorf("broker %q: an absent key keeps the lower value", c.MQTT.Broker)
	}
	if base.Upstream.Window != 100 {
		t.Error("the local config changed under the overlays")
	}
	// An empty or null overlay is no overlay.
	for _, data := range []string{"", "null\n", "# nothing\n"} {
		if c, err := base.WithOverlays(config.Overlay{Name: "gw.gw1", Data: []byte(data)}); err != nil || c.Summary() != base.Summary() {
			t.Errorf("overlay %q: %v", data, err)
		}
	}
}

// A bad overlay names its key path and its own line; one that is not a
// mapping, or is not YAML, says so.
func TestOverlayProblems(t *testing.T) {
	base := loadBase(t)
	for _, tt := range []struct{ data, want string }{
		{"upstream:\n  window: -1\n", "upstream.window (gw.gw1 line 2)"},
		{"upstream:\n  windw: 5\n", "upstream.windw (gw.gw1 line 2): unknown key"},
		{"upstream:\n  ack_timeout: soon\n", "upstream.ack_timeout (gw.gw1 line 2): \"soon\" is not a duration"},
		{"- a\n- b\n", "(gw.gw1): an overlay is a YAML mapping"},
		{"upstream: [\n", "(gw.gw1): yaml"},
		{"gateway:\n  id: gw2\n", "gateway.id (fleet): cannot be changed remotely"},
	} {
		_, err := base.WithOverlays(config.Overlay{Name: "defaults", Data: []byte("log:\n  level: debug\n")}, config.Overlay{Name: "gw.gw1", Data: []byte(tt.data)})
		var ce *config.Error
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("overlay %q: %v, want %q", tt.data, err, tt.want)
		}
		if err != nil && !strings.Contains(err.Error(), "+ defaults + gw.gw1") {
			t.Errorf("the error should name the layers: %v", err)
		}
	}
}

// No overlay, however malformed, panics, or changes what names the box.
func FuzzOverlay(f *testing.F) {
	for _, s := range []string{"upstream:\n  window: 5\n", "gateway:\n  id: x\n", "a: [1, {b: null}]\n", "mqtt: null\n", "sensors:\n  - {name: a, driver: sim}\n", "*a\n", "&a [*a]\n"} {
		f.Add([]byte(s))
	}
	base := loadBase(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := base.WithOverlays(config.Overlay{Name: "gw.gw1", Data: data})
		if err != nil {
			return
		}
		if c.Gateway != base.Gateway || c.Buffer.Path != base.Buffer.Path {
			t.Fatalf("overlay %q changed the gateway section: %+v", data, c.Gateway)
		}
	})
}

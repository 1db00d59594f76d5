package config_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/mqttbroker"
)

var testEnv = map[string]string{"EDGEGW_ID": "van-07", "MQTT_PASSWORD": "p@ss: #not a comment", "UPSTREAM_PASSWORD": "x", "EDGEGW_HTTP_USERS": "../../deploy/http-users.example.yaml"}

func lookup(k string) (string, bool) { v, ok := testEnv[k]; return v, ok }

// Every file in configs/ loads: none can rot.
func TestExampleConfigsLoad(t *testing.T) {
	files, _ := filepath.Glob("../../configs/*.yaml")
	if len(files) < 4 {
		t.Fatalf("found %d example configs", len(files))
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Parse(f, data, lookup)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		t.Logf("%s: gateway %s, stream %s %v", filepath.Base(f), cfg.Gateway.ID, cfg.Upstream.Stream.Name, cfg.Upstream.Stream.Subjects)
	}
}

func TestDefaultsAndExpansion(t *testing.T) {
	data, _ := os.ReadFile("../../configs/minimal.yaml")
	cfg, err := config.Parse("minimal.yaml", data, lookup)
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.MQTT.Subscriptions[0]
	wantMax := config.ByteSize(1 << 30)
	if strconv.IntSize == 32 {
		wantMax = 512 << 20 // bbolt maps the whole file
	}
	if cfg.Buffer.Path != "/var/lib/edgegw/buffer.db" || cfg.Buffer.MaxBytes != wantMax || cfg.Buffer.MaxAge != 168*time.Hour ||
		cfg.Buffer.WhenFull != "drop_oldest" || cfg.MQTT.ClientID != "edgegw-shed-01" || *s.QoS != 1 ||
		s.Subject != "telemetry.{gateway}.{topic}" || cfg.Upstream.Stream.Name != "TELEMETRY" ||
		strings.Join(cfg.Upstream.Stream.Subjects, ",") != "telemetry.>" || cfg.Log.Level != "info" ||
		cfg.HTTP.Listen != "127.0.0.1:9180" {
		t.Fatalf("defaults: %+v", cfg)
	}
	data, _ = os.ReadFile("../../configs/fleet-secure.yaml")
	cfg, err = config.Parse("fleet-secure.yaml", data, lookup)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Gateway.ID != "van-07" || cfg.MQTT.Password != testEnv["MQTT_PASSWORD"] || cfg.Upstream.CredsFile != "/etc/edgegw/van-07.creds" ||
		cfg.Upstream.Rate.BytesPerSecond != 64<<10 || cfg.MQTT.MaxPayload != 64<<10 ||
		cfg.Fleet == nil || cfg.Fleet.ConfigBucket != config.DefaultConfigBucket || cfg.Fleet.Health.Timeout != config.DefaultHealthTimeout || !*cfg.Fleet.Health.Upstream {
		t.Fatalf("expansion: id %q password %q creds %q", cfg.Gateway.ID, cfg.MQTT.Password, cfg.Upstream.CredsFile)
	}
	if strings.Contains(cfg.Summary(), testEnv["MQTT_PASSWORD"]) {
		t.Fatal("Summary shows a secret")
	}
}

// One test per validation rule: the problem names the key, the line and
// the fix.
func TestBadConfigs(t *testing.T) {
	const good = `gateway:
  id: gw1
mqtt:
  broker: tcp://127.0.0.1:1883
  subscriptions:
    - topic: sensors/#
      qos: 1
upstream:
  servers: [nats://127.0.0.1:4222]
`
	tests := []struct {
		name, yaml, path string
		line             int
		msg              string
	}{
		{"missing id", strings.Replace(good, "id: gw1", "id: \"\"", 1), "gateway.id", 2, "missing"},
		{"bad id", strings.Replace(good, "id: gw1", "id: lobby.pi", 1), "gateway.id", 2, "letters, digits"},
		{"unknown key", good + "  sever: x\n", "upstream.sever", 10, "unknown key"},
		{"when_full", good + "buffer:\n  when_full: drop_newest\n", "buffer.when_full", 11, "drop_oldest or reject"},
		{"max_bytes unit", good + "buffer:\n  max_bytes: 1 gigabyte\n", "buffer.max_bytes", 11, "not a size"},
		{"duration", good + "sensors:\n  - name: a\n    driver: sim\n    interval: 5 minutes\n", "sensors[0].interval", 13, "not a duration like 30s"},
		{"typo", strings.Replace(good, "subscriptions:", "subscriptons:", 1), "mqtt.subscriptons", 5, "did you mean subscriptions?"},
		{"typo without a missing key", strings.Replace(good, "broker:", "usename: x\n  broker:", 1), "mqtt.usename", 4, "did you mean username?"},
		{"unknown key far from any", good + "  colour: red\n", "upstream.colour", 10, "the keys here are servers,"},
		{"days and a unit yaml does not know", good + "buffer:\n  max_age: 7 days\n", "buffer.max_age", 11, `"7 days" is not a duration like 30s, 5m, 2h or 7d`},
		{"a number that is not", strings.Replace(good, "qos: 1", "qos: one", 1), "mqtt.subscriptions[0].qos", 7, `"one" is not a number`},
		{"same I2C address", good + "sensors:\n  - name: a\n    driver: ads1115\n    address: 0x48\n    channels: [{input: \"0\", name: v}]\n  - name: b\n    driver: ads1115\n    address: 0x48\n    channels: [{input: \"0\", name: v}]\n", "sensors[1].address", 17, "also sensors[0]"},
		{"negative max_age", good + "buffer:\n  max_age: -1h\n", "buffer.max_age", 11, "negative"},
		{"card without endurance", strings.Replace(good, "id: gw1", "id: gw1\n  storage: {size: 32GB}", 1), "gateway.storage.rated_writes", 0, "full writes the card is rated for"},
		{"card without size", strings.Replace(good, "id: gw1", "id: gw1\n  storage:\n    rated_writes: 3000", 1), "gateway.storage.size", 0, "the card's size"},
		{"max_inflight past the marks", strings.Replace(good, "mqtt:\n", "mqtt:\n  server:\n    listen: 127.0.0.1:1883\n    allow_anonymous: true\n    max_inflight: 5000\n", 1), "mqtt.server.max_inflight", 7, "last 4096 messages"},
		{"broker credentials twice", strings.Replace(good, "tcp://127.0.0.1:1883", "tcp://u:p@127.0.0.1:1883\n  username: u", 1), "mqtt.broker", 4, "one place"},
		{"broker URL", strings.Replace(good, "tcp://127.0.0.1:1883", "127.0.0.1:1883", 1), "mqtt.broker", 4, "broker URL"},
		{"no subscriptions", strings.Replace(good, "  subscriptions:\n    - topic: sensors/#\n      qos: 1\n", "", 1), "mqtt.subscriptions", 0, "at least one"},
		{"qos", strings.Replace(good, "qos: 1", "qos: 3", 1), "mqtt.subscriptions[0].qos", 7, "not 0, 1 or 2"},
		{"topic filter", strings.Replace(good, "sensors/#", "sensors/#/x", 1), "mqtt.subscriptions[0].topic", 6, "'#'"},
		{"subject template", strings.Replace(good, "qos: 1", "qos: 1\n      subject: telemetry.*.{topic}", 1), "mqtt.subscriptions[0].subject", 8, "not a NATS subject token"},
		{"no servers", strings.Replace(good, "servers: [nats://127.0.0.1:4222]", "servers: []", 1), "upstream.servers", 9, "missing"},
		{"server URL", strings.Replace(good, "nats://127.0.0.1:4222", "http://x:1", 1), "upstream.servers[0]", 9, "NATS URL"},
		{"two auth methods", good + "  token: abc\n  creds_file: /x.creds\n", "upstream", 8, "only one"},
		{"stream name", good + "  stream:\n    name: my.stream\n", "upstream.stream.name", 11, "may not contain"},
		{"stream subjects miss", good + "  stream:\n    subjects: [metrics.>]\n", "upstream.stream.subjects", 11, "do not capture"},
		{"tls pair", good + "  tls:\n    cert_file: /c.pem\n", "upstream.tls", 10, "go together"},
		{"window", good + "  window: -5\n", "upstream.window", 10, "negative"},
		{"window too large", good + "  window: 2000000000\n", "upstream.window", 10, "limit of 65536"},
		{"ack_timeout too long", good + "  ack_timeout: 1h\n", "upstream.ack_timeout", 10, "limit of 10m"},
		{"duplicates too long", good + "  stream:\n    duplicates: 8760h\n", "upstream.stream.duplicates", 11, "limit of 168h"},
		{"max_payload too large", strings.Replace(good, "  subscriptions:", "  max_payload: 1GiB\n  subscriptions:", 1), "mqtt.max_payload", 5, "limit of 64MiB"},
		{"max_payload over max_bytes", strings.Replace(good, "  subscriptions:", "  max_payload: 10MiB\n  subscriptions:", 1) + "buffer:\n  max_bytes: 4KiB\n", "mqtt.max_payload", 5, "could not hold one maximal message"},
		{"sensor interval", good + "sensors:\n  - name: a\n    driver: sim\n    interval: 1us\n", "sensors[0].interval", 13, "limit of 1ms"},
		{"http listen", good + "http:\n  listen: 9180\n", "http.listen", 11, "host:port"},
		{"http port", good + "http:\n  listen: 127.0.0.1:99999\n", "http.listen", 11, "host:port"},
		{"log level", good + "log:\n  level: loud\n", "log.level", 11, "debug, info"},
		{"log format", good + "log:\n  format: xml\n", "log.format", 11, "text or json"},
		{"unset env", strings.Replace(good, "id: gw1", "id: ${NOPE}", 1), "gateway.id", 2, "NOPE is not set"},
		{"sensor driver", good + "sensors:\n  - name: s1\n    driver: dht22\n", "sensors[0].driver", 12, "is not one of bme280"},
		{"modbus table", good + modbus("    registers:\n      - {name: a, table: holdings, address: 0, type: uint16}\n"), "sensors[0].registers[0].table", 0, "not holding, input, coil or discrete"},
		{"modbus address", good + modbus("    registers:\n      - {name: a, table: input, address: 65535, type: uint32}\n"), "sensors[0].registers[0].address", 0, "outside 0..65535"},
		{"modbus string length", good + modbus("    registers:\n      - {name: model, table: holding, address: 100, type: string}\n"), "sensors[0].registers[0].length", 0, "a string needs its length"},
		{"modbus scale on bool", good + modbus("    registers:\n      - {name: run, table: holding, address: 1, type: bool, scale: 0.1}\n"), "sensors[0].registers[0].scale", 0, "a bool has no scale"},
		{"modbus overlap", good + modbus("    registers:\n      - {name: e, table: input, address: 10, type: uint32}\n      - {name: f, table: input, address: 11, type: uint16}\n"), "sensors[0].registers[1].address", 0, "overlaps registers[0] (e, 10..11)"},
		{"modbus type", good + modbus("    registers:\n      - {name: a, table: holding, address: 0, type: float}\n"), "sensors[0].registers[0].type", 0, "not one of int16"},
		{"modbus coil type", good + modbus("    registers:\n      - {name: a, table: coil, address: 0, type: uint16}\n"), "sensors[0].registers[0].type", 0, "its type is bool"},
		{"modbus url", good + strings.Replace(modbus("    registers:\n      - {name: a, table: holding, address: 0, type: uint16}\n"), "tcp://127.0.0.1:502", "modbus://x", 1), "sensors[0].url", 0, "not tcp, rtu or rtuovertcp"},
		{"modbus unit", good + strings.Replace(modbus("    registers:\n      - {name: a, table: holding, address: 0, type: uint16}\n"), "unit_id: 1", "unit_id: 300", 1), "sensors[0].unit_id", 0, "outside 1..255"},
		{"modbus unknown key", good + modbus("    registers:\n      - {name: a, table: holding, adress: 0, type: uint16}\n"), "sensors[0].registers[0].adress", 0, "unknown key"},
		{"modbus no registers", good + modbus(""), "sensors[0].registers", 0, "missing"},
		{"modbus serial on tcp", good + modbus("    serial: {baud: 9600}\n    registers:\n      - {name: a, table: holding, address: 0, type: uint16}\n"), "sensors[0].serial", 0, "only an rtu://"},
		{"modbus parity", good + strings.Replace(modbus("    serial: {baud: 9600, parity: mark}\n    registers:\n      - {name: a, table: holding, address: 0, type: uint16}\n"), "tcp://127.0.0.1:502", "rtu:///dev/ttyUSB0", 1), "sensors[0].serial.parity", 0, "not none, even or odd"},
		{"modbus same unit", good + modbus("    registers:\n      - {name: a, table: holding, address: 0, type: uint16}\n") + strings.Replace(modbus("    registers:\n      - {name: a, table: holding, address: 0, type: uint16}\n"), "sensors:\n  - name: meter", "  - name: meter2", 1), "sensors[1].unit_id", 0, "also sensors[0]'s"},
		{"sensor name", good + "sensors:\n  - driver: sim\n", "sensors[0].name", 0, "missing"},
		{"duplicate sensor", good + "sensors:\n  - name: a\n    driver: sim\n  - name: a\n    driver: sim\n", "sensors[1].name", 13, "used by another"},
		{"bme280 address", good + "sensors:\n  - name: a\n    driver: bme280\n", "sensors[0].address", 0, "0x76"},
		{"register length", good + "sensors:\n  - name: a\n    driver: register\n    address: 0x48\n    register:\n      length: 9\n      name: t\n", "sensors[0].register", 14, "1 to 4"},
		{"shared subject", strings.Replace(good, "qos: 1", "qos: 1\n      subject: telemetry.{topic}", 1), "mqtt.subscriptions[0].subject", 8, "subjects of its own"},
		{"shared sensor subject", good + "sensors:\n  - name: a\n    driver: sim\n    subject: telemetry.{sensor}\n", "sensors[0].subject", 13, "subjects of its own"},
		{"sensor subject", good + "sensors:\n  - name: a\n    driver: sim\n    subject: x.{topic}\n", "sensors[0].subject", 13, "{sensor}"},
		{"gpio pin", good + "sensors:\n  - name: door\n    driver: gpio_edge\n", "sensors[0].pin", 0, "GPIO17"},
		{"gpio edge", good + "sensors:\n  - name: door\n    driver: gpio_edge\n    pin: GPIO17\n    edge: up\n", "sensors[0].edge", 14, "rising, falling or both"},
		{"gpio pull", good + "sensors:\n  - name: door\n    driver: gpio_edge\n    pin: GPIO17\n    pull: sideways\n", "sensors[0].pull", 14, "up, down or none"},
		{"priority", strings.Replace(good, "qos: 1", "qos: 1\n      priority: 10", 1), "mqtt.subscriptions[0].priority", 8, "outside 0..9"},
		{"negative priority", strings.Replace(good, "qos: 1", "qos: 1\n      priority: -1", 1), "mqtt.subscriptions[0].priority", 8, "outside 0..9"},
		{"ttl", strings.Replace(good, "qos: 1", "qos: 1\n      ttl: 500ms", 1), "mqtt.subscriptions[0].ttl", 8, "under 1s"},
		{"sensor priority", good + "sensors:\n  - name: a\n    driver: sim\n    priority: 12\n", "sensors[0].priority", 13, "outside 0..9"},
		{"sensor ttl", good + "sensors:\n  - name: a\n    driver: sim\n    ttl: 10ms\n", "sensors[0].ttl", 13, "under 1s"},
		{"drain", good + "  drain: newest_first\n", "upstream.drain", 10, "live_first or oldest_first"},
		{"lower_share", good + "  lower_share: 0.9\n", "upstream.lower_share", 10, "outside 0..0.5"},
		{"server without users", strings.Replace(good, "  subscriptions:", "  server:\n    listen: 0.0.0.0:1883\n  subscriptions:", 1), "mqtt.server.users_file", 0, "allow_anonymous"},
		{"server listen", strings.Replace(good, "  subscriptions:", "  server:\n    listen: \"1883\"\n    allow_anonymous: true\n  subscriptions:", 1), "mqtt.server.listen", 0, "not host:port"},
		{"server tls", strings.Replace(good, "  subscriptions:", "  server:\n    allow_anonymous: true\n    tls:\n      listen: 0.0.0.0:8883\n  subscriptions:", 1), "mqtt.server.tls", 0, "cert_file and key_file"},
		{"server users file", strings.Replace(good, "  subscriptions:", "  server:\n    listen: 0.0.0.0:1883\n    users_file: /nonexistent/users.yaml\n  subscriptions:", 1), "mqtt.server.users_file", 0, "no such file"},
		{"http off loopback", good + "http:\n  listen: 0.0.0.0:9180\n", "http.listen", 11, "reachable from the network"},
		{"no source", "gateway:\n  id: gw1\nupstream:\n  servers: [nats://127.0.0.1:4222]\n", "mqtt", 0, "no source"},
		{"fleet heartbeat", good + "fleet:\n  heartbeat: 10ms\n", "fleet.heartbeat", 0, "under 1s"},
		{"fleet bucket", good + "fleet:\n  config_bucket: my.bucket\n", "fleet.config_bucket", 0, "not a bucket name"},
		{"fleet health timeout", good + "fleet:\n  health:\n    timeout: 1ms\n", "fleet.health.timeout", 0, "under 1s"},
		{"output pin", good + "outputs:\n  - name: relay\n", "outputs[0].pin", 0, "GPIO23"},
		{"output initial", good + "outputs:\n  - name: relay\n    pin: GPIO23\n    initial: on\n", "outputs[0].initial", 0, "low or high"},
		{"output twice", good + "outputs:\n  - {name: relay, pin: GPIO23}\n  - {name: relay, pin: GPIO24}\n", "outputs[1].name", 0, "used twice"},
		{"not yaml", "gateway: [", "(file)", 0, "yaml"},
		{"empty", "", "(file)", 0, "empty config"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse("test.yaml", []byte(tt.yaml), lookup)
			ce, ok := err.(*config.Error)
			if !ok {
				t.Fatalf("err = %v, want a *ConfigError", err)
			}
			for _, p := range ce.Problems {
				if p.Path == tt.path && strings.Contains(p.Msg, tt.msg) && (tt.line == 0 || p.Line == tt.line) {
					return
				}
			}
			t.Fatalf("no problem at %s (line %d) with %q in:\n%v", tt.path, tt.line, tt.msg, err)
		})
	}
}

// modbus is a modbus sensor's config with the registers part given.
func modbus(regs string) string {
	return "sensors:\n  - name: meter\n    driver: modbus\n    url: tcp://127.0.0.1:502\n    unit_id: 1\n" + regs
}

func TestEveryProblemAtOnce(t *testing.T) {
	_, err := config.Parse("x.yaml", []byte("gateway:\n  id: a.b\nlog:\n  level: loud\n  format: xml\n"), lookup)
	ce, ok := err.(*config.Error)
	if !ok || len(ce.Problems) < 4 {
		t.Fatalf("want every problem reported together: %v", err)
	}
}

// One bad value does not stop the rest of the file from being read, and a
// typo is one problem, not a typo and the missing key it meant.
func TestNoKnockOnProblems(t *testing.T) {
	for name, yaml := range map[string]string{
		"bad size": "gateway:\n  id: gw1\nbuffer:\n  max_bytes: lots\nmqtt:\n  broker: tcp://127.0.0.1:1883\n  subscriptions:\n    - topic: a/#\nupstream:\n  servers: [nats://127.0.0.1:4222]\n",
		"typo":     "gateway:\n  id: gw1\nmqtt:\n  broker: tcp://127.0.0.1:1883\n  subscriptons:\n    - topic: a/#\nupstream:\n  servers: [nats://127.0.0.1:4222]\n",
	} {
		_, err := config.Parse("x.yaml", []byte(yaml), lookup)
		ce, ok := err.(*config.Error)
		if !ok || len(ce.Problems) != 1 {
			t.Errorf("%s: want exactly one problem: %v", name, err)
		}
	}
}

// Commands that connect to nothing do not need the secrets of the
// connections; config check and run do.
func TestOfflineLoadNeedsNoSecrets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edgegw.yaml")
	os.WriteFile(path, []byte("gateway:\n  id: gw1\nmqtt:\n  broker: tcp://127.0.0.1:1883\n  username: edgegw\n  password: ${EDGEGW_UNSET_PW}\n  subscriptions:\n    - topic: a/#\nupstream:\n  servers: [nats://127.0.0.1:4222]\n  token: ${EDGEGW_UNSET_TOKEN}\n"), 0o600)
	none := func(string) (string, bool) { return "", false }
	if _, err := config.LoadWith(path, config.LoadOptions{Lookup: none}); err == nil || !strings.Contains(err.Error(), "EDGEGW_UNSET_PW is not set") {
		t.Fatalf("strict: %v", err)
	}
	cfg, err := config.LoadWith(path, config.LoadOptions{Lookup: none, Offline: true})
	if err != nil || cfg.Buffer.Path == "" {
		t.Fatalf("offline: %v", err)
	}
}

// The effective config shows the defaults that apply, not zeros, and
// addresses in hex, and only the keys a sensor's driver uses.
func TestSummaryShowsDefaults(t *testing.T) {
	cfg, err := config.Parse("x.yaml", []byte("gateway:\n  id: gw1\nsensors:\n  - name: a\n    driver: mcp9808\n    address: 0x18\nupstream:\n  servers: [nats://127.0.0.1:4222]\n"), lookup)
	if err != nil {
		t.Fatal(err)
	}
	sum := cfg.Summary()
	for _, want := range []string{"window: 1024", "ack_timeout: 5s", "duplicates: 2m0s", "replicas: 1", "address: 0x18"} {
		if !strings.Contains(sum, want) {
			t.Errorf("summary lacks %q:\n%s", want, sum)
		}
	}
	for _, not := range []string{"rom:", "channels:", "pin:", "seed:"} {
		if strings.Contains(sum, not) {
			t.Errorf("summary shows %q for an mcp9808:\n%s", not, sum)
		}
	}
}

// With mqtt.server, mqtt.broker is optional; a users file with a bad
// hash is refused with the user named.
func TestServerConfig(t *testing.T) {
	const text = "gateway:\n  id: gw1\nmqtt:\n  server:\n    listen: 0.0.0.0:1883\n    users_file: %s\n  subscriptions:\n    - topic: sensors/#\nupstream:\n  servers: [nats://127.0.0.1:4222]\n"
	users := filepath.Join(t.TempDir(), "users.yaml")
	os.WriteFile(users, []byte("users:\n  - name: dev1\n    password_hash: plaintext\n    publish: [sensors/#]\n"), 0o600)
	_, err := config.Parse("x.yaml", []byte(fmt.Sprintf(text, users)), lookup)
	if err == nil || !strings.Contains(err.Error(), "(dev1): password_hash is not a bcrypt hash") {
		t.Fatalf("a plaintext password: %v", err)
	}
	hash, _ := mqttbroker.HashPassword("pw")
	os.WriteFile(users, []byte("users:\n  - name: dev1\n    password_hash: "+hash+"\n    publish: [sensors/#]\n"), 0o600)
	cfg, err := config.Parse("x.yaml", []byte(fmt.Sprintf(text, users)), lookup)
	if err != nil || !cfg.MQTT.Server.On() || cfg.MQTT.Broker != "" {
		t.Fatalf("a broker-only config: %v", err)
	}
}

// The lane keys parse where the docs say, with their defaults.
func TestLaneKeys(t *testing.T) {
	const text = `gateway:
  id: gw1
mqtt:
  broker: tcp://127.0.0.1:1883
  subscriptions:
    - topic: alarms/#
      priority: 0
    - topic: debug/#
      priority: 9
      ttl: 6h
    - topic: sensors/#
sensors:
  - name: tank
    driver: sim
    priority: 2
    ttl: 24h
upstream:
  servers: [nats://127.0.0.1:4222]
  drain: oldest_first
`
	cfg, err := config.Parse("lanes.yaml", []byte(text), lookup)
	if err != nil {
		t.Fatal(err)
	}
	subs := cfg.MQTT.Subscriptions
	if *subs[0].Priority != 0 || *subs[1].Priority != 9 || subs[1].TTL != 6*time.Hour || *subs[2].Priority != 5 || subs[2].TTL != 0 {
		t.Fatalf("subscriptions: %+v %+v %+v", subs[0].Route, subs[1].Route, subs[2].Route)
	}
	if s := cfg.Sensors[0]; *s.Priority != 2 || s.TTL != 24*time.Hour {
		t.Fatalf("sensor route %+v", s.Route)
	}
	if cfg.Upstream.Drain != "oldest_first" || cfg.Upstream.LowerShare != 0.1 {
		t.Fatalf("upstream drain %q, lower_share %v", cfg.Upstream.Drain, cfg.Upstream.LowerShare)
	}
	cfg, err = config.Parse("lanes.yaml", []byte(strings.Replace(text, "  drain: oldest_first\n", "", 1)), lookup)
	if err != nil || cfg.Upstream.Drain != "live_first" {
		t.Fatalf("default drain %q, %v", cfg.Upstream.Drain, err)
	}
}

// Durations take days, as Prometheus and Telegraf users write them, in
// every duration key; what is not a duration says what would be.
func TestDurationsInDays(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"7d": 7 * 24 * time.Hour, "1d12h": 36 * time.Hour, "1.5d": 36 * time.Hour, "90m": 90 * time.Minute,
		"2h30m": 150 * time.Minute, "0": 0, "-1d": -24 * time.Hour, " 3d ": 72 * time.Hour,
	} {
		if got, err := config.ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"7days", "d", "1d-1h", "1e3d", "soon", "1d1d", ""} {
		if d, err := config.ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", in, d)
		} else if !strings.Contains(err.Error(), "not a duration like 30s, 5m, 2h or 7d") {
			t.Errorf("ParseDuration(%q): %v", in, err)
		}
	}
	cfg, err := config.Parse("test.yaml", []byte(`gateway: {id: gw1}
mqtt:
  broker: tcp://127.0.0.1:1883
  subscriptions: [{topic: "sensors/#", qos: 1, ttl: 2d}]
upstream: {servers: ["nats://127.0.0.1:4222"]}
buffer: {max_age: 7d}
`), lookup)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Buffer.MaxAge != 7*24*time.Hour || cfg.MQTT.Subscriptions[0].TTL != 48*time.Hour {
		t.Fatalf("max_age %v, ttl %v", cfg.Buffer.MaxAge, cfg.MQTT.Subscriptions[0].TTL)
	}
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"7d", "1d12h", "1.5d", "30s", "-1d", "5 minutes", "1d-1h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := config.ParseDuration(s)
		if err != nil {
			if !strings.Contains(err.Error(), "not a duration") {
				t.Fatalf("%q: %v", s, err)
			}
			return
		}
		if !strings.Contains(s, "d") {
			if want, err := time.ParseDuration(strings.TrimSpace(s)); err != nil || want != d {
				t.Fatalf("%q: %v, time.ParseDuration says %v, %v", s, d, want, err)
			}
		}
	})
}

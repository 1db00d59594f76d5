package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats-server/v2/server"
	"golang.org/x/crypto/bcrypt"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/event"
	"github.com/edgegw/edgegw/gateway/mqtttest"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/status"
	"github.com/edgegw/edgegw/gateway/wait"
)

// TestMain runs edgegw itself when a test starts this binary as a child
// (edgegwChild): the tests that kill or cut the power under it need a
// process of its own.
func TestMain(m *testing.M) {
	if args := os.Getenv("EDGEGW_MAIN_CHILD"); args != "" {
		os.Exit(run(strings.Split(args, "\x1f"), os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// edgegwChild is `edgegw args...` in a process of its own: this test
// binary, which TestMain turns into edgegw.
func edgegwChild(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "EDGEGW_MAIN_CHILD="+strings.Join(args, "\x1f"))
	return cmd
}

func writeConfig(t *testing.T, broker, nats string) (cfgPath, dataDir string) {
	t.Helper()
	dir := t.TempDir()
	cfgPath = filepath.Join(dir, "edgegw.yaml")
	text := fmt.Sprintf("gateway:\n  id: gw1\n  data_dir: %s\nmqtt:\n  broker: %s\n  subscriptions:\n    - topic: sensors/#\nupstream:\n  servers: [%s]\n  stream:\n    create: true\nhttp:\n  listen: 0.0.0.0:%d\n  users_file: %s\n", dir, broker, nats, natstest.FreePort(t), filepath.Join(dir, "http-users.yaml"))
	os.WriteFile(filepath.Join(dir, "http-users.yaml"), []byte("users:\n  - {name: ops, password_hash: \"$2a$10$48LthTbj3xXxg4Fz2geXEuinKOhjNNJqqSaTrcT64AnfbcqmnPkau\"}\n"), 0o600)
	if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath, dir
}

func TestConfigCheck(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"config", "check", "--config", "../../configs/edgegw.yaml", "--env-file", "../../deploy/edgegw.env.example"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("gateway:\n  id: a.b\nlog:\n  level: loud\n"), 0o600)
	out.Reset()
	errb.Reset()
	if code := run([]string{"config", "check", "--config", bad}, &out, &errb); code != 1 {
		t.Fatalf("bad config: exit %d", code)
	}
	for _, want := range []string{"gateway.id (line 2)", "log.level (line 4)", "problem(s)"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("config check output lacks %q:\n%s", want, errb.String())
		}
	}
}

func TestUsageAndVersion(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "usage") {
		t.Fatalf("no args: exit %d, %q", code, errb.String())
	}
	if code := run([]string{"frobnicate"}, &out, &errb); code != 2 {
		t.Fatalf("unknown command: exit %d", code)
	}
	out.Reset()
	if code := run([]string{"--help"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "edgegw run [--config FILE]") || !strings.Contains(out.String(), "--env-file (default /etc/edgegw/edgegw.env") {
		t.Fatalf("--help: exit %d\n%s", code, out.String())
	}
	out.Reset()
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "edgegw ") {
		t.Fatalf("version: exit %d, %q", code, out.String())
	}
}

// The real binary's path: run, SIGTERM, exit 0 within the bound, buffer
// closed cleanly (buffer stats can open it right after).
func TestRunStopsCleanlyOnSIGTERM(t *testing.T) {
	broker := mqtttest.Start(t, mqtttest.Options{})
	srv := natstest.Start(t, nil)
	cfgPath, dir := writeConfig(t, broker.URL(), srv.URL())

	cmd := edgegwChild("run", "--config", cfgPath, "--log-format", "json")
	var logs syncBuffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			cmd.Process.Kill()
			t.Logf("edgegw's log:\n%s", logs.String())
		}
	}()
	wait.For(t, "edgegw running", func() bool { return strings.Contains(logs.String(), "edgegw running") })
	// edgegw health asks the running service.
	m := regexp.MustCompile(`"msg":"serving /metrics[^"]*","addr":"([^"]+)"`).FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no serving line with the address:\n%s", logs.String())
	}
	var health bytes.Buffer
	wait.For(t, "edgegw health to say ready", func() bool {
		health.Reset()
		// As http.listen, or as a URL (it fetched http://http//… before).
		return run([]string{"health", "--addr", "http://" + m[1] + "/"}, &health, io.Discard) == 0
	})
	if health.String() != "ready\n" {
		t.Fatalf("health: %q", health.String())
	}
	var live bytes.Buffer
	if code := run([]string{"health", "--live", "--addr", m[1]}, &live, io.Discard); code != 0 || live.String() != "ok\n" {
		t.Fatalf("health --live: %d %q", code, live.String())
	}
	// edgegw status: the same facts on one screen.
	// edgegw status and health find the address in the config, as run
	// does: a wildcard listener asked on loopback.
	var status, errb bytes.Buffer
	if code := run([]string{"status", "--config", cfgPath}, &status, &errb); code != 1 || !strings.Contains(errb.String(), "asks for a login (http.users_file): give --user NAME") {
		t.Fatalf("status without a login: exit %d\n%s", code, errb.String())
	}
	t.Setenv("EDGEGW_HTTP_PASSWORD", "wrong")
	if code := run([]string{"status", "--config", cfgPath, "--user", "ops"}, &status, &errb); code != 1 || !strings.Contains(errb.String(), "refused the login of ops") {
		t.Fatalf("status with a wrong password: exit %d\n%s", code, errb.String())
	}
	t.Setenv("EDGEGW_HTTP_PASSWORD", "change-me-too")
	status.Reset()
	if code := run([]string{"status", "--config", cfgPath, "--user", "ops"}, &status, io.Discard); code != 0 {
		t.Fatalf("status --config: exit %d\n%s", code, status.String())
	}
	if code := run([]string{"health", "--config", cfgPath}, io.Discard, io.Discard); code != 0 {
		t.Fatalf("health --config: exit %d", code)
	}
	for _, want := range []string{"edgegw gw1", "READY", "● connected", "stream TELEMETRY", "0 events", "drain live_first", "source", "● mqtt (mqtt)", "receiving", "disk free ", "acked 0 since start"} {
		if !strings.Contains(status.String(), want) {
			t.Errorf("edgegw status lacks %q:\n%s", want, status.String())
		}
	}
	// With the uplink gone, 5 readings are held, and still held after the
	// stop: buffer stats must say 5.
	srv.Shutdown()
	pub := paho.NewClient(paho.NewClientOptions().AddBroker(broker.URL()).SetClientID("pub"))
	if tok := pub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	for i := range 5 {
		pub.Publish(fmt.Sprintf("sensors/r%d", i), 1, false, "21.5").WaitTimeout(10 * time.Second)
	}
	pub.Disconnect(100)
	wait.For(t, "the buffer holding the 5 published with the uplink down", func() bool {
		req, _ := http.NewRequest(http.MethodGet, "http://"+m[1]+"/status", nil)
		req.SetBasicAuth("ops", "change-me-too") // http.users_file
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st struct{ Buffer struct{ Events float64 } }
		return json.NewDecoder(resp.Body).Decode(&st) == nil && st.Buffer.Events == 5
	})
	// SIGHUP is answered, not ignored and not fatal.
	cmd.Process.Signal(syscall.SIGHUP)
	wait.For(t, "the answer to SIGHUP", func() bool { return strings.Contains(logs.String(), "does not reload its config") })
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
	}
	if el := time.Since(start); el > shutdownLimit {
		t.Fatalf("took %s to stop", el)
	}
	if !strings.Contains(logs.String(), `"msg":"edgegw stopped"`) {
		t.Fatalf("no JSON stop line in the logs:\n%s", logs.String())
	}
	var out bytes.Buffer
	errb.Reset()
	if code := run([]string{"buffer", "stats", "--path", filepath.Join(dir, "buffer.db")}, &out, &errb); code != 0 {
		t.Fatalf("buffer stats after stop: %s", errb.String())
	}
	if !strings.Contains(out.String(), "events held:     5\n") || !regexp.MustCompile(`\n  5 +- +5 `).MatchString(out.String()) {
		t.Fatalf("buffer stats (want 5 events, all in the lane of priority 5):\n%s", out.String())
	}
}

// syncBuffer is written by exec's copying goroutine and read by the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestSensorsRead(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "s.yaml")
	os.WriteFile(cfg, []byte("gateway:\n  id: gw1\nsensors:\n  - name: sim-room\n    driver: sim\n  - name: nobus\n    driver: bme280\n    bus: \"99\"\n    address: 0x76\nupstream:\n  servers: [nats://127.0.0.1:4222]\n"), 0o600)
	var out, errb bytes.Buffer
	code := run([]string{"sensors", "read", "--config", cfg}, &out, &errb)
	if code != 1 || !strings.Contains(out.String(), "sim-room") || !strings.Contains(out.String(), "temperature_c=") ||
		!strings.Contains(out.String(), "nobus") || !strings.Contains(out.String(), "FAILED") {
		t.Fatalf("exit %d:\n%s%s", code, out.String(), errb.String())
	}
	t.Logf("\n%s", out.String())
}

func TestI2CScanWithoutABus(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"i2c", "scan", "--bus", "99"}, &out, &errb)
	// No bus at all (a container, a Pi with I²C off): how to enable it;
	// buses but not this one: which there are.
	if code != 1 || !strings.Contains(errb.String(), "raspi-config") && !strings.Contains(errb.String(), `I²C bus "99"`) || strings.Contains(errb.String(), "Init()") {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
}

// The guide's commands with the guide's files: secrets as ${VAR} in the
// config, their values in the env file. config check reads the env file;
// buffer stats and sensors read need no secret at all.
func TestGuideCommandsWithTheEnvFile(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "edgegw.yaml")
	example, err := os.ReadFile("../../configs/edgegw.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The example as installed, with its data_dir where this test may write.
	os.WriteFile(cfg, bytes.Replace(example, []byte("/var/lib/edgegw"), []byte(dir), 1), 0o600)
	envFile := filepath.Join(dir, "edgegw.env")
	guideEnv, err := os.ReadFile("../../deploy/edgegw.env.example")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(envFile, guideEnv, 0o600)
	for _, k := range []string{"MQTT_PASSWORD", "UPSTREAM_PASSWORD"} {
		os.Unsetenv(k)
	}

	var out, errb bytes.Buffer
	if code := run([]string{"config", "check", "--config", cfg, "--env-file", envFile}, &out, &errb); code != 0 {
		t.Fatalf("config check with the env file: %d %s", code, errb.String())
	}
	if strings.Contains(out.String(), "change-me") {
		t.Fatalf("config check shows a secret:\n%s", out.String())
	}
	errb.Reset()
	if code := run([]string{"config", "check", "--config", cfg, "--env-file", ""}, io.Discard, &errb); code != 1 || !strings.Contains(errb.String(), "MQTT_PASSWORD is not set") {
		t.Fatalf("config check without the secrets: %d %s", code, errb.String())
	}
	q, err := buffer.Open(filepath.Join(dir, "buffer.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	q.Close()
	errb.Reset()
	out.Reset()
	if code := run([]string{"buffer", "stats", "--config", cfg, "--env-file", ""}, &out, &errb); code != 0 || !strings.Contains(out.String(), "events held:     0") {
		t.Fatalf("buffer stats without the secrets: %d %s%s", code, out.String(), errb.String())
	}
}

func TestReadEnvFile(t *testing.T) {
	name := filepath.Join(t.TempDir(), "e.env")
	os.WriteFile(name, []byte("# secrets\nA=1\nexport B=\"two words\"\n\nC='x=y'\n"), 0o600)
	env, err := readEnvFile(name, false)
	if err != nil || env["A"] != "1" || env["B"] != "two words" || env["C"] != "x=y" {
		t.Fatalf("%v %v", env, err)
	}
	if _, err := readEnvFile(filepath.Join(t.TempDir(), "none"), true); err != nil {
		t.Fatalf("an absent default env file: %v", err)
	}
	if _, err := readEnvFile(filepath.Join(t.TempDir(), "none"), false); err == nil {
		t.Fatal("a named env file that is not there: no error")
	}
	os.WriteFile(name, []byte("NOEQUALS\n"), 0o600)
	if _, err := readEnvFile(name, false); err == nil || !strings.Contains(err.Error(), ":1:") {
		t.Fatalf("bad line: %v", err)
	}
}

// edgegw buffer dead-letters lists the events set aside, exports them as
// JSON lines (decoded where they decode) and drops them.
func TestDeadLettersCommand(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	q, err := buffer.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	e := event.Event{Subject: "telemetry.gw1.big", Source: "sensors/big", Time: time.Unix(1700000000, 0).UTC(), Payload: []byte("a big reading")}
	data, _ := e.Marshal(nil)
	seq, _ := q.Append(ctx, data)
	if err := q.SetAside(ctx, seq, "the stream refused it: message size exceeds maximum allowed"); err != nil {
		t.Fatal(err)
	}
	if err := q.AppendDead(ctx, []byte("not an event"), "larger than max_bytes"); err != nil {
		t.Fatal(err)
	}
	q.Close()

	export := filepath.Join(t.TempDir(), "dead.jsonl")
	var out, errb bytes.Buffer
	if code := run([]string{"buffer", "dead-letters", "--path", path, "--export", export, "--drop"}, &out, &errb); code != 0 {
		t.Fatalf("dead-letters: %d %s", code, errb.String())
	}
	for _, want := range []string{"message size exceeds maximum allowed", "larger than max_bytes", "2 dead letter(s)", "dropped 2"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("output lacks %q:\n%s", want, out.String())
		}
	}
	lines, _ := os.ReadFile(export)
	var first, second deadLetterJSON
	parts := strings.Split(strings.TrimSpace(string(lines)), "\n")
	if len(parts) != 2 || json.Unmarshal([]byte(parts[0]), &first) != nil || json.Unmarshal([]byte(parts[1]), &second) != nil {
		t.Fatalf("export:\n%s", lines)
	}
	if first.Subject != e.Subject || string(first.Payload) != "a big reading" || first.Seq != seq || string(second.Raw) != "not an event" {
		t.Fatalf("export: %+v %+v", first, second)
	}
	out.Reset()
	run([]string{"buffer", "stats", "--path", path}, &out, &errb)
	if !strings.Contains(out.String(), "dead letters:    0 ") {
		t.Fatalf("after --drop:\n%s", out.String())
	}
}

func TestMQTTHashPassword(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	var out, errb bytes.Buffer
	if code := run([]string{"mqtt", "hash-password", "--password-file", pw}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if err := bcrypt.CompareHashAndPassword([]byte(strings.TrimSpace(out.String())), []byte("s3cret")); err != nil {
		t.Fatalf("hash %q does not match the password: %v", out.String(), err)
	}
	os.WriteFile(pw, nil, 0o600)
	if code := run([]string{"mqtt", "hash-password", "--password-file", pw}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "empty password") {
		t.Fatalf("empty password: exit %d, %s", code, errb.String())
	}
}

// The terminal view names what an installer looks for: a source down and
// why, the uplink down since when, the clock, and with --watch the rates
// and the time to drain.
func TestStatusScreen(t *testing.T) {
	age := 900.0
	st := &status.Status{Gateway: "lobby-pi-01", Version: "v1", UptimeSeconds: 3600, NotReady: "no source can deliver",
		Buffer:   status.BufferStatus{Events: 5000, Bytes: 3 << 20, Appended: 12000, Lanes: []status.LaneStatus{{Priority: 0, Events: 10}, {Priority: 5, TTL: "6h0m0s", Events: 4990}}},
		Upstream: status.UpstreamStatus{Stream: "TELEMETRY", DownSince: time.Now().Add(-time.Minute), Acked: 7000, LastError: "uplink down since …", Drain: "live_first"},
		Sources: []status.SourceStatus{
			{Name: "mqtt-server", Kind: "mqtt-server", Up: true, Ingested: 12000, LastReadingAge: new(float64), LastFrom: "sensors/lobby/temp", LastValue: `{"t":21.5}`},
			{Name: "tank", Kind: "sensor", Up: false, LastError: `I²C bus "1": no such file`},
			{Name: "door", Kind: "gpio", Up: true, LastReadingAge: &age},
		},
		Storage: status.StorageStatus{PerReading: 7373, PerDay: 6.2e9, Life: "about 41 years",
			Files: []status.StorageFile{{File: "buffer", Written: 5 << 20}, {File: "broker_sessions", Written: 96 << 10, Estimated: true}}}}
	prev := *st
	prev.Buffer.Appended, prev.Upstream.Acked = 10000, 3000
	var out bytes.Buffer
	renderStatus(&out, st, &prev, 2*time.Second)
	for _, want := range []string{"NOT READY: no source can deliver", "○ DOWN since", "CLOCK NOT SYNCHRONIZED", "priority 5, ttl 6h0m0s", "○ tank (sensor)", `DOWN: I²C bus "1": no such file`, "◐ door (gpio)", "stale", "ingest 1000/s", "drain 2000/s", "time to drain 5s",
		"written 7.2 KiB per reading", "5.8 GiB per day", "card life about 41 years", "buffer 5.0 MiB, broker_sessions ~96.0 KiB"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status screen lacks %q:\n%s", want, out.String())
		}
	}
	if !regexp.MustCompile(`last value +sensors/lobby/temp +\{"t":21.5\}`).MatchString(out.String()) {
		t.Errorf("status screen lacks the last value with its topic:\n%s", out.String())
	}
	// A slow sensor's rate is not rounded away: one reading in 2 s.
	prev.Buffer.Appended, prev.Upstream.Acked = st.Buffer.Appended-1, st.Upstream.Acked-1
	out.Reset()
	renderStatus(&out, st, &prev, 2*time.Second)
	if !strings.Contains(out.String(), "ingest 0.5/s") {
		t.Errorf("status screen at 0.5 readings/s:\n%s", out.String())
	}
}

// buffer stats of an empty buffer says it is empty, not "seq range 1 .. 0".
func TestBufferStatsOfAnEmptyBuffer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buffer.db")
	q, err := buffer.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	q.Close()
	var out, errb bytes.Buffer
	if code := run([]string{"buffer", "stats", "--path", path}, &out, &errb); code != 0 {
		t.Fatalf("buffer stats: exit %d %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "seq range:       - (empty; the next event is seq 1)\n") || !strings.Contains(out.String(), "appended total:  0 (the file's life)") {
		t.Fatalf("buffer stats of an empty buffer:\n%s", out.String())
	}
}

// config check --connect tries what the config connects to and says which
// failed and why: the broker's login, the hub's credentials, a stream that
// is not there, an embedded broker's port already taken.
func TestConfigCheckConnect(t *testing.T) {
	broker := mqtttest.Start(t, mqtttest.Options{Users: map[string]string{"edgegw": "mqtt-pw"}})
	hub := natstest.Start(t, func(o *server.Options) { o.Username, o.Password = "gw1", "hub-pw" })
	dir := t.TempDir()
	check := func(mqttPW, hubPW, hubURL string, create bool, extra string) (int, string) {
		t.Helper()
		cfg := filepath.Join(dir, "edgegw.yaml")
		os.WriteFile(cfg, []byte(fmt.Sprintf("gateway:\n  id: gw1\n  data_dir: %s\nmqtt:\n  broker: %s\n  username: edgegw\n  password: %s\n  subscriptions:\n    - topic: sensors/#\n%supstream:\n  servers: [%s]\n  user: gw1\n  password: %s\n  stream:\n    create: %v\n",
			dir, broker.URL(), mqttPW, extra, hubURL, hubPW, create)), 0o600)
		var out, errb bytes.Buffer
		code := run([]string{"config", "check", "--connect", "--config", cfg, "--env-file", ""}, &out, &errb)
		return code, out.String() + errb.String()
	}
	code, out := check("mqtt-pw", "hub-pw", hub.URL(), true, "")
	for _, want := range []string{"ok   mqtt.broker " + broker.URL() + ": logged in", "ok   upstream " + hub.URL() + ": connected to", "ok   upstream.stream TELEMETRY: not there yet: edgegw makes it"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("all good: exit %d, lacks %q:\n%s", code, want, out)
		}
	}
	taken := natstest.FreePort(t)
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", taken))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, tc := range []struct {
		name, mqttPW, hubPW, hubURL string
		create                      bool
		extra, want                 string
	}{
		{"broker password", "wrong", "hub-pw", hub.URL(), true, "", "FAIL mqtt.broker " + broker.URL() + ": not Authorized (check mqtt.broker, mqtt.username and mqtt.password"},
		{"hub password", "mqtt-pw", "wrong", hub.URL(), true, "", "FAIL upstream " + hub.URL() + ": upstream: connect to"},
		{"hub unreachable", "mqtt-pw", "hub-pw", fmt.Sprintf("nats://127.0.0.1:%d", natstest.FreePort(t)), true, "", "unreachable: no server answered"},
		{"no stream", "mqtt-pw", "hub-pw", hub.URL(), false, "", "FAIL upstream.stream TELEMETRY: no such stream, and upstream.stream.create is false"},
		{"listener taken", "mqtt-pw", "hub-pw", hub.URL(), true, fmt.Sprintf("  server:\n    listen: 127.0.0.1:%d\n    allow_anonymous: true\n", taken), fmt.Sprintf("FAIL mqtt.server listener 127.0.0.1:%d: ", taken)},
	} {
		code, out := check(tc.mqttPW, tc.hubPW, tc.hubURL, tc.create, tc.extra)
		if code != 1 || !strings.Contains(out, tc.want) || !strings.Contains(out, "connection check(s) failed") {
			t.Errorf("%s: exit %d, want 1 and %q:\n%s", tc.name, code, tc.want, out)
		}
	}
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/wait"
)

// quickstart is docs/quickstart.md as the test reads it: the config, the
// sh lines, in order.
type quickstart struct {
	config string
	lines  []string
}

func readQuickstart(t *testing.T) quickstart {
	t.Helper()
	f, err := os.Open("../../docs/quickstart.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var q quickstart
	var block string // the fence's language while in one
	var yaml strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "```") && block == "":
			block = strings.TrimPrefix(line, "```")
		case line == "```":
			if block == "yaml" && strings.HasPrefix(yaml.String(), "# /etc/edgegw/edgegw.yaml") {
				q.config = yaml.String()
			}
			block = ""
			yaml.Reset()
		case block == "yaml":
			yaml.WriteString(line + "\n")
		case block == "sh" && strings.TrimSpace(line) != "":
			q.lines = append(q.lines, strings.TrimSpace(line))
		}
	}
	if q.config == "" || len(q.lines) < 10 {
		t.Fatalf("docs/quickstart.md: config %q, %d command lines", q.config, len(q.lines))
	}
	return q
}

// find returns the doc's one command line that starts with prefix.
func (q quickstart) find(t *testing.T, prefix string) string {
	t.Helper()
	for _, l := range q.lines {
		if strings.HasPrefix(l, prefix) {
			return l
		}
	}
	t.Fatalf("docs/quickstart.md has no command %q...", prefix)
	return ""
}

var shellWordRE = regexp.MustCompile(`'[^']*'|"[^"]*"|\S+`)

// words splits a command line as a shell would (quotes, no expansion).
func words(line string) []string {
	var out []string
	for _, w := range shellWordRE.FindAllString(line, -1) {
		out = append(out, strings.Trim(w, `'"`))
	}
	return out
}

// flagOf is the value after name in a command's words.
func flagOf(t *testing.T, ws []string, name string) string {
	t.Helper()
	for i, w := range ws {
		if w == name && i+1 < len(ws) {
			return ws[i+1]
		}
	}
	t.Fatalf("no %s in %q", name, ws)
	return ""
}

// docs/quickstart.md, followed: a hub from deploy/upstream's single-node
// config and stream, the page's config, the device's user added and the
// config checked with the page's edgegw commands, edgegw run, the device's
// mosquitto_pub (as paho, with its topic, QoS and payload), the reading
// read back as the page's nats stream get does, and the page and edgegw
// status showing it.
func TestQuickstart(t *testing.T) {
	q := readQuickstart(t)
	dir := t.TempDir()

	// 1. The hub: the page's files, the page's passwords.
	hub := natstest.StartHub(t, "../../deploy/upstream/hub-single.conf")
	q.find(t, "export OPS_PASSWORD=ops-pw LOBBY_PI_01_PASSWORD=lobby-pw")
	streamFile := flagOf(t, words(q.find(t, "nats --context hub-ops stream add")), "--config")
	data, err := os.ReadFile(filepath.Join("../..", streamFile))
	if err != nil {
		t.Fatal(err)
	}
	var scfg jetstream.StreamConfig
	if err := json.Unmarshal(data, &scfg); err != nil {
		t.Fatal(err)
	}
	ops, err := nats.Connect(hub.URL(), nats.UserInfo("ops", "ops-pw"))
	if err != nil {
		t.Fatal(err)
	}
	defer ops.Close()
	js, _ := jetstream.New(ops)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stream, err := js.CreateStream(ctx, scfg)
	if err != nil {
		t.Fatal(err)
	}

	// 2. The gateway: the page's config and env file, where this test may
	// write, on ports of its own.
	mqttAddr := fmt.Sprintf("127.0.0.1:%d", natstest.FreePort(t))
	httpAddr := fmt.Sprintf("127.0.0.1:%d", natstest.FreePort(t))
	cfg := strings.NewReplacer("/var/lib/edgegw", filepath.Join(dir, "data"), "/etc/edgegw", dir,
		"0.0.0.0:1883", mqttAddr, "nats://127.0.0.1:4222", hub.URL()).Replace(q.config)
	cfg += "http:\n  listen: " + httpAddr + "\n" // the default 127.0.0.1:9180, on a port of its own
	cfgPath := filepath.Join(dir, "edgegw.yaml")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)
	envLine := q.find(t, "echo 'UPSTREAM_PASSWORD=")
	envPath := filepath.Join(dir, "edgegw.env")
	os.WriteFile(envPath, []byte(words(envLine)[1]+"\n"), 0o600)
	os.Unsetenv("UPSTREAM_PASSWORD")
	paths := []string{"--config", cfgPath, "--env-file", envPath}

	const devicePW = "device-pw"
	add := words(strings.TrimPrefix(q.find(t, "sudo edgegw mqtt user add"), "sudo edgegw "))
	code, _, errs := mqttUser(devicePW+"\n", append(add[2:], "--users-file", filepath.Join(dir, "mqtt-users.yaml"))...)
	if code != 0 {
		t.Fatalf("%v: exit %d %s", add, code, errs)
	}
	check := words(strings.TrimPrefix(q.find(t, "sudo edgegw config check"), "sudo edgegw "))
	var out, errb bytes.Buffer
	if code := run(append(check, paths...), &out, &errb); code != 0 || !strings.Contains(out.String(), "ok   upstream.stream TELEMETRY: 0 messages") {
		t.Fatalf("%v: exit %d %s%s", check, code, out.String(), errb.String())
	}

	// 3. Run it.
	runArgs := words(strings.TrimPrefix(q.find(t, "sudo edgegw run"), "sudo edgegw "))
	cmd := edgegwChild(append(runArgs, paths...)...)
	var logs syncBuffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("edgegw's log:\n%s", logs.String())
		}
	}()
	wait.For(t, "edgegw running, upstream connected, the broker listening", func() bool {
		l := logs.String()
		return strings.Contains(l, "edgegw running") && strings.Contains(l, "upstream connected") && strings.Contains(l, "MQTT broker listening")
	})

	// 4. The device publishes, as the page's mosquitto_pub does.
	pub := words(q.find(t, "mosquitto_pub "))
	topic, payload, user := flagOf(t, pub, "-t"), flagOf(t, pub, "-m"), flagOf(t, pub, "-u")
	if flagOf(t, pub, "-q") != "1" || flagOf(t, pub, "-p") != "1883" {
		t.Fatalf("the page's device does not publish QoS 1 to the broker's port: %q", pub)
	}
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + mqttAddr).SetClientID(user).
		SetUsername(user).SetPassword(devicePW).SetAutoReconnect(false))
	if tok := c.Connect(); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		t.Fatalf("the device's login: %v", tok.Error())
	}
	defer c.Disconnect(0)
	if tok := c.Publish(topic, 1, false, payload); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}

	// 5. Read it back, as the page's nats stream get does.
	get := words(q.find(t, "nats --context hub-ops stream get"))
	subject := flagOf(t, get, "--last-for")
	if get[5] != scfg.Name {
		t.Fatalf("the page reads stream %s, the hub's is %s", get[5], scfg.Name)
	}
	var m *jetstream.RawStreamMsg
	wait.For(t, "the reading on "+subject, func() bool {
		m, err = stream.GetLastMsgForSubject(ctx, subject)
		return err == nil
	})
	if string(m.Data) != payload || m.Header.Get("Edgegw-Gateway") != "lobby-pi-01" || m.Header.Get("Edgegw-Source") != topic ||
		!strings.HasPrefix(m.Header.Get("Nats-Msg-Id"), "lobby-pi-01-") {
		t.Fatalf("read back %q with %v", m.Data, m.Header)
	}

	// 6. The page and edgegw status show it.
	resp, err := http.Get("http://" + httpAddr + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), "<small>"+topic+"</small> {&#34;t&#34;:21.5}") || !strings.Contains(string(page), "<b>mqtt-server</b>") {
		t.Fatalf("the page does not show the reading from %s:\n%s", topic, page)
	}
	if !strings.Contains(string(page), "<td>hub</td><td colspan=\"3\">"+hub.URL()+"</td>") || !strings.Contains(string(page), "at mqtt://"+mqttAddr) {
		t.Fatalf("the page does not say where the hub and the broker are:\n%s", page)
	}
	status := words(strings.TrimPrefix(q.find(t, "sudo edgegw status"), "sudo edgegw "))
	out.Reset()
	if code := run(append(status, paths...), &out, &errb); code != 0 || !strings.Contains(out.String(), topic) || !strings.Contains(out.String(), payload) {
		t.Fatalf("%v: exit %d\n%s%s", status, code, out.String(), errb.String())
	}
}

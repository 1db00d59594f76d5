package gateway_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/gateway/mqttbroker"
	"github.com/edgegw/edgegw/gateway/mqtttest"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/wait"
)

// The page at / shows the gateway, the uplink, the buffer with its lanes
// and the clock, each source with its dot, last value and age, and the
// sparklines; it refreshes itself and fits a phone.
func TestPageShowsTheFacts(t *testing.T) {
	broker := mqtttest.Start(t, mqtttest.Options{})
	srv := natstest.Start(t, nil)
	cfg, _ := configFor(t, broker.URL(), srv.URL(), "")
	g := startGateway(t, cfg)
	newPublisher(t, broker.URL(), "pub", true).publish(0, 3, 3, 0)
	wait.For(t, "3 upstream", func() bool { return g.Status().Upstream.Acked == 3 })
	code, body := get(t, g, "/")
	if code != http.StatusOK {
		t.Fatalf("GET /: %d\n%s", code, body)
	}
	for _, want := range []string{
		`<meta http-equiv="refresh" content="10">`, `name="viewport"`,
		`<h1 id="gateway">edgegw gw1</h1>`, `class="good">ready</span>`,
		`<span class="dot ok"></span>Uplink: connected`, "TELEMETRY",
		`id="clock"`, "disk free", "written per reading", "written per day", `id="card-life">unknown`, "time to drain",
		`<tr class="source"><td><span class="dot ok"></span><b>mqtt</b>`,
		`{&#34;n&#34;:2,`, // the last reading's value, escaped
		"<svg", "ingest", "drain",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("page:\n%s", body)
	}
}

// Off loopback the page and the endpoints need a login from
// http.users_file; /healthz and /readyz stay open. Without a users file
// edgegw refuses to start, naming the key.
func TestHTTPOffLoopbackNeedsUsers(t *testing.T) {
	broker := mqtttest.Start(t, mqtttest.Options{})
	srv := natstest.Start(t, nil)
	cfg, _ := configFor(t, broker.URL(), srv.URL(), "")
	cfg.HTTP.Listen = "0.0.0.0:0"
	g, err := gateway.New(cfg, gateway.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.Run(ctx); err == nil || !strings.Contains(err.Error(), "http.users_file") {
		t.Fatalf("no users on 0.0.0.0: %v, want a refusal naming http.users_file", err)
	}

	hash, _ := mqttbroker.HashPassword("s3cret")
	users := filepath.Join(t.TempDir(), "users.yaml")
	os.WriteFile(users, []byte(fmt.Sprintf("users:\n  - name: installer\n    password_hash: %q\n", hash)), 0o600)
	cfg.HTTP.UsersFile = users
	g, err = gateway.New(cfg, gateway.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(runGateway(t, g))
	wait.For(t, "serving", func() bool { return g.HTTPAddr() != nil })
	port := g.HTTPAddr().(interface{ String() string }).String()
	port = port[strings.LastIndex(port, ":"):]
	do := func(path, user, pass string) int {
		req, _ := http.NewRequest("GET", "http://127.0.0.1"+port+path, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		path, user, pass string
		want             int
	}{
		{"/", "", "", 401}, {"/status", "", "", 401}, {"/metrics", "installer", "wrong", 401},
		{"/", "installer", "s3cret", 200}, {"/status", "installer", "s3cret", 200},
		{"/healthz", "", "", 200},
	} {
		if got := do(tc.path, tc.user, tc.pass); got != tc.want {
			t.Errorf("GET %s as %q: %d, want %d", tc.path, tc.user, got, tc.want)
		}
	}
}

// Each gateway is an instance of the micro service "edgegw": a PING finds
// it, and edgegw.<id>.status, .buffer and .config answer.
func TestCommandEndpoints(t *testing.T) {
	broker := mqtttest.Start(t, mqtttest.Options{})
	srv := natstest.Start(t, nil)
	cfg, _ := configFor(t, broker.URL(), srv.URL(), "")
	startGateway(t, cfg)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	wait.For(t, "the service to answer a PING", func() bool {
		m, err := nc.Request("$SRV.PING.edgegw", nil, time.Second)
		return err == nil && strings.Contains(string(m.Data), `"gateway":"gw1"`)
	})
	for subj, want := range map[string]string{
		"edgegw.gw1.status": `"gateway":"gw1"`,
		"edgegw.gw1.buffer": `"lanes"`,
		"edgegw.gw1.config": `"revision"`,
	} {
		m, err := nc.Request(subj, nil, 5*time.Second)
		if err != nil || !strings.Contains(string(m.Data), want) {
			t.Errorf("%s: %v %.200s, want %s", subj, err, m.Data, want)
		}
	}
}

package gateway_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/mqtttest"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/wait"
)

// Every place a secret can go in a config (URLs, passwords, tokens, creds
// and seed files, environment variables) gets a secret of its own; none of
// them may show in any log line, error, /status, /metrics or config
// check's effective config, whether things work or fail.
func TestSecretsNeverShow(t *testing.T) {
	secrets := map[string]string{
		"mqtt.password":     "S1-mqtt-pw",
		"mqtt URL from env": "S2-mqtt-env-pw",
		"upstream URL":      "S3-nats-url-pw",
		"upstream.password": "S4-nats-pw",
		"upstream.token":    "S5-nats-token",
		"creds file":        "S6-creds-content",
		"nkey seed":         "S7-nkey-content",
		"raw % in URL":      "S8-pct%zz",
	}
	var seen strings.Builder // everything edgegw printed
	check := func(where string) {
		t.Helper()
		for place, s := range secrets {
			if strings.Contains(seen.String(), s) {
				t.Fatalf("the secret of %s shows in %s:\n%s", place, where, seen.String())
			}
		}
	}

	// Working: credentials in both URLs, one from an environment variable.
	broker := mqtttest.Start(t, mqtttest.Options{Users: map[string]string{"dev": secrets["mqtt URL from env"], "pub": "pub"}})
	srv := natstest.Start(t, func(o *server.Options) { o.Username, o.Password = "edge", secrets["upstream URL"] })
	t.Setenv("EDGEGW_TEST_MQTT_PW", secrets["mqtt URL from env"])
	withCreds := func(u, user, pw string) string { return strings.Replace(u, "://", "://"+user+":"+pw+"@", 1) }
	dir := t.TempDir()
	text := fmt.Sprintf(`gateway:
  id: gw1
  data_dir: %s
mqtt:
  broker: %s
  subscriptions:
    - topic: sensors/#
upstream:
  servers: [%s]
  stream:
    create: true
http:
  listen: 127.0.0.1:0
`, dir, withCreds(broker.URL(), "dev", "${EDGEGW_TEST_MQTT_PW}"), withCreds(srv.URL(), "edge", secrets["upstream URL"]))
	path := filepath.Join(dir, "edgegw.yaml")
	os.WriteFile(path, []byte(text), 0o600)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	seen.WriteString(cfg.Summary())
	check("config check's effective config")

	var logs syncLog
	g, _ := gateway.New(cfg, gateway.Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	stop := runGateway(t, g)
	wait.For(t, "the gateway to subscribe", func() bool { return g.Stats().MQTT.Subscribed })
	deliverOne(t, paho.NewClientOptions().AddBroker(broker.URL()).SetClientID("pub").SetUsername("pub").SetPassword("pub"), withCreds(srv.URL(), "edge", secrets["upstream URL"]))
	// Both sides drop and come back: the reconnect lines name servers.
	broker.Restart()
	srv.Restart()
	wait.For(t, "both sides back", func() bool { st := g.Status(); return st.Ready && st.Upstream.Connected })
	for _, p := range []string{"/status", "/metrics", "/readyz"} {
		_, body := get(t, g, p)
		seen.WriteString(body)
	}
	stop()
	seen.WriteString(logs.String())
	check("a working gateway's logs, /status, /metrics")

	// Failing: every other credential, each wrong, each an error.
	creds := filepath.Join(dir, "gw.creds")
	os.WriteFile(creds, []byte("-----BEGIN NATS USER JWT-----\n"+secrets["creds file"]+"\n------END NATS USER JWT------\n"), 0o600)
	seed := filepath.Join(dir, "gw.nk")
	os.WriteFile(seed, []byte(secrets["nkey seed"]), 0o600)
	for _, auth := range []string{
		"  user: edge\n  password: " + secrets["upstream.password"],
		"  token: " + secrets["upstream.token"],
		"  creds_file: " + creds,
		"  nkey_seed_file: " + seed,
	} {
		bad := strings.Replace(text, "  stream:\n", auth+"\n  stream:\n", 1)
		bad = strings.Replace(bad, withCreds(srv.URL(), "edge", secrets["upstream URL"]), srv.URL(), 1)
		cfg, err := config.Parse("bad.yaml", []byte(bad), os.LookupEnv)
		if err != nil {
			t.Fatal(err)
		}
		seen.WriteString(cfg.Summary())
		var logs syncLog
		g, _ := gateway.New(cfg, gateway.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		err = g.Run(ctx)
		cancel()
		if err == nil {
			t.Fatalf("wrong upstream credential (%s): Run returned nil", auth)
		}
		seen.WriteString(err.Error() + "\n" + logs.String())
	}
	// A wrong MQTT password.
	bad := strings.Replace(text, withCreds(broker.URL(), "dev", "${EDGEGW_TEST_MQTT_PW}"), broker.URL()+"\n  username: dev\n  password: "+secrets["mqtt.password"], 1)
	cfg, err = config.Parse("bad.yaml", []byte(bad), os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	seen.WriteString(cfg.Summary())
	g, _ = gateway.New(cfg, gateway.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err := g.Run(context.Background()); err == nil {
		t.Fatal("wrong MQTT password: Run returned nil")
	} else {
		seen.WriteString(err.Error() + "\n" + logs.String())
	}
	// A URL that does not even parse.
	for _, key := range []string{"broker: tcp://", "servers: [nats://"} {
		bad := strings.Replace(text, key, key+"dev:"+secrets["raw % in URL"]+"@", 1)
		_, err := config.Parse("bad.yaml", []byte(bad), os.LookupEnv)
		if err == nil {
			t.Fatalf("%s with a raw %% in the password: no error", key)
		}
		seen.WriteString(err.Error())
	}
	check("errors and logs of failing configs")
}

package gateway_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/mqtttest"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/wait"
)

// Two routes, one outside the hub stream's subjects (the stream was made
// for telemetry.> only; the config adds alarms): edgegw starts anyway (it
// used to exit, and crash-loop under systemd), the telemetry route's
// readings arrive within 2 s, /readyz names the held route, its subject
// and the fix; once the stream's subjects are widened the held alarms
// arrive, in order, once, without a restart.
func TestRouteTheStreamRefusesHoldsOnlyItself(t *testing.T) {
	broker := mqtttest.Start(t, mqtttest.Options{})
	srv := natstest.Start(t, nil)
	cfg, _ := configFor(t, broker.URL(), srv.URL(), "")
	cfg.Upstream.Stream.Create = false
	cfg.Upstream.Stream.Subjects = []string{"telemetry.>", "alarms.>"}
	alarms := cfg.MQTT.Subscriptions[0]
	alarms.Topic, alarms.Subject = "alarms/#", "alarms.{gateway}.{topic}"
	cfg.MQTT.Subscriptions = append(cfg.MQTT.Subscriptions, alarms)

	js, scfg := telemetryStream(t, srv.URL())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	g := startGateway(t, cfg)
	pub := newPublisher(t, broker.URL(), "pub", true)
	const n = 20
	start := time.Now()
	for i := range n {
		for _, topic := range []string{"alarms/door", "sensors/lobby/temp"} {
			tok := pub.c.Publish(topic, 1, false, fmt.Sprintf("%s-%02d", topic, i))
			if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
				t.Fatalf("publish %s %d: %v", topic, i, tok.Error())
			}
		}
	}
	wait.Within(t, 2*time.Second-time.Since(start), "the telemetry route's readings within 2 s", func() bool {
		c, err := subjectCount(srv.URL(), "telemetry.>")
		return err == nil && c == n
	})
	t.Logf("telemetry in the stream %v after the first publish", time.Since(start).Round(time.Millisecond))
	wait.For(t, "/readyz to name the held route", func() bool {
		code, body := get(t, g, "/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "route alarms.gw1.>") &&
			strings.Contains(body, fmt.Sprintf("(%d events waiting)", n)) && strings.Contains(body, "add alarms.gw1.> to the stream's subjects")
	})
	if h := g.Status().Upstream.Held; len(h) != 1 || h[0].Subject != "alarms.gw1.alarms.door" {
		t.Fatalf("status held: %+v", h)
	}
	if c, _ := get(t, g, "/"); c != http.StatusOK {
		t.Fatalf("page: %d", c)
	}
	if _, body := get(t, g, "/"); !strings.Contains(body, "held route") || !strings.Contains(body, "alarms.gw1.&gt;") {
		t.Fatal("the page does not show the held route")
	}

	scfg.Subjects = []string{"telemetry.>", "alarms.>"}
	if _, err := js.UpdateStream(ctx, scfg); err != nil {
		t.Fatal(err)
	}
	wait.For(t, "the held alarms in the stream", func() bool {
		c, err := subjectCount(srv.URL(), "alarms.>")
		return err == nil && c == n
	})
	wait.For(t, "ready again", func() bool { c, _ := get(t, g, "/readyz"); return c == http.StatusOK })
	var got []string
	seen := map[string]int{}
	for _, m := range natstest.Messages(t, srv.URL()) {
		seen[string(m.Data())]++
		if m.Subject() == "alarms.gw1.alarms.door" {
			got = append(got, string(m.Data()))
		}
	}
	for p, c := range seen {
		if c != 1 {
			t.Errorf("%s is in the stream %d times", p, c)
		}
	}
	for i, p := range got {
		if want := fmt.Sprintf("alarms/door-%02d", i); p != want {
			t.Fatalf("alarm %d is %q, want %q: %v", i, p, want, got)
		}
	}
}

package gateway_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"regexp"
	"testing"

	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/mqtttest"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/wait"
)

var loud = regexp.MustCompile(`(?m)^.*level=(WARN|ERROR).*$`)

// A clean first start logs nothing at WARN or above, in each mode: the
// paho client of a site broker, the embedded broker (whose first start
// logged mochi's ERROR "failed to get data ... key not found key=SYS"),
// both at once, and with a fleet section. Each runs until a reading is in
// the stream, stops, and its whole log is read.
func TestCleanStartLogsNoWarning(t *testing.T) {
	for _, mode := range []string{"mqtt client", "embedded broker", "both", "fleet"} {
		t.Run(mode, func(t *testing.T) {
			srv := natstest.Start(t, nil)
			var cfg *config.Config
			var url string
			switch mode {
			case "mqtt client":
				broker := mqtttest.Start(t, mqtttest.Options{})
				cfg, _ = configFor(t, broker.URL(), srv.URL(), "")
				url = broker.URL()
			case "embedded broker":
				cfg, url = serverConfigFor(t, srv.URL(), "    allow_anonymous: true", "")
			case "both":
				broker := mqtttest.Start(t, mqtttest.Options{})
				cfg, url = serverConfigFor(t, srv.URL(), "    allow_anonymous: true\n  broker: "+broker.URL(), "")
			case "fleet":
				cfg = fleetFile(t, t.TempDir(), srv.URL(), "")
			}
			var logs syncLog
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
			stop := func() {}
			if mode == "fleet" {
				g, err := gateway.New(cfg, gateway.Options{Logger: log})
				if err != nil {
					t.Fatal(err)
				}
				stop = runGateway(t, g)
				wait.For(t, "a reading in the stream", func() bool { return streamMsgs(t, srv.URL()) > 0 })
				wait.For(t, "the fleet status entry", func() bool { st, err := newFleetHub(t, srv.URL()).status(); return err == nil && st.State != "" })
			} else {
				var g *gateway.Gateway
				g, stop = startGatewayStop(t, cfg, log)
				pub := newPublisher(t, url, "pub", true)
				pub.publish(0, 1, 1, 0)
				wait.For(t, "the reading in the stream", func() bool { return g.Stats().Forward.Acked == 1 })
			}
			stop()
			if bad := loud.FindAllString(logs.String(), -1); len(bad) > 0 {
				t.Fatalf("a clean start logged %d lines at WARN or above:\n%s", len(bad), fmt.Sprint(bad))
			}
			if !bytes.Contains([]byte(logs.String()), []byte("level=INFO")) {
				t.Fatal("nothing was logged at all: the test reads the wrong log")
			}
		})
	}
}

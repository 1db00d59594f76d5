package gateway_test

import (
	"fmt"
	"testing"

	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/wait"
)

// The gateway on a metered link: upstream.servers wss:// with
// upstream.compression and the hub's CA in upstream.tls. After an outage
// its backlog reaches the stream, and the bytes it counted on the wire per
// reading (the page's figure) are a fraction of what the same gateway
// counts over plain nats://. (nats.go deflates each write of its buffer
// on its own: a backlog, sent many readings to a write, gains most.)
func TestGatewayCompressedUplink(t *testing.T) {
	mod, ca := natstest.WSS(t)
	srv := natstest.Start(t, mod)
	perReading := func(server, extra string) float64 {
		dir := t.TempDir()
		path := writeConfig(t, dir, fmt.Sprintf(`gateway:
  id: gw1
  data_dir: %s
sensors:
  - name: lobby
    driver: sim
    interval: 2ms
upstream:
  servers: [%s]
%s  stream:
    create: true
http:
  listen: "off"
`, dir, server, extra))
		g, err := gateway.New(loadConfig(t, path), gateway.Options{})
		if err != nil {
			t.Fatal(err)
		}
		start := streamMsgs(t, srv.URL())
		srv.Shutdown() // the link is down: a backlog
		stop := runGateway(t, g)
		defer stop()
		wait.For(t, "a backlog of 1000", func() bool { return g.Status().Buffer.Events >= 1000 })
		srv.Restart()
		wait.For(t, "1000 more readings in the stream, acknowledged", func() bool {
			return streamMsgs(t, srv.URL()) >= start+1000 && g.Status().Upstream.Acked >= 1000
		})
		u := g.Status().Upstream
		if u.WireUp == 0 || u.WireDown == 0 || u.WirePerDay <= 0 {
			t.Fatalf("%s: wire figures %+v", server, u)
		}
		return u.WirePerReading
	}
	plain := perReading(srv.URL(), "")
	deflated := perReading(srv.WSURL(), fmt.Sprintf("  compression: true\n  tls:\n    ca_file: %s\n", ca))
	t.Logf("bytes on the wire per reading: nats %.0f, wss with compression %.0f", plain, deflated)
	if deflated > 0.35*plain {
		t.Fatalf("wss with compression: %.0f bytes per reading, plain nats %.0f: want at most a third", deflated, plain)
	}
}

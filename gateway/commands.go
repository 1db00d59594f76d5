package gateway

import (
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// serveCommands registers the gateway as an instance of the NATS micro
// service "edgegw" on the upstream connection (nats micro ls finds every
// gateway), with read-only endpoints under edgegw.<gateway id>.:
// status (Status as JSON), buffer (the buffer's stats) and config (the
// effective config, secrets masked, and its revision). It is a first part
// of issue 17; a hub that does not grant the subjects gets permission
// errors on them and nothing else changes.
func (g *Gateway) serveCommands(nc *nats.Conn) (micro.Service, error) {
	version := g.o.Version
	if version == "" {
		version = "0.0.0"
	}
	svc, err := micro.AddService(nc, micro.Config{
		Name:        "edgegw",
		Version:     semver(version),
		Description: "edgegw IoT edge gateway",
		Metadata:    map[string]string{"gateway": g.cfg.Gateway.ID, "version": version},
	})
	if err != nil {
		return nil, fmt.Errorf("commands: %w", err)
	}
	grp := svc.AddGroup("edgegw." + g.cfg.Gateway.ID)
	for name, h := range map[string]micro.HandlerFunc{
		"status": func(r micro.Request) { r.RespondJSON(g.Status()) },
		"buffer": func(r micro.Request) { r.RespondJSON(g.Status().Buffer) },
		"config": func(r micro.Request) {
			r.RespondJSON(map[string]string{"revision": g.configRev(), "config": g.cfg.Summary()})
		},
	} {
		if err := grp.AddEndpoint(name, h); err != nil {
			svc.Stop()
			return nil, fmt.Errorf("commands: endpoint %s: %w", name, err)
		}
	}
	return svc, nil
}

// semver makes a version micro accepts (semantic versioning): "v1.2.3"
// and "1.2.3" as they are, anything else (a development build) as 0.0.0.
func semver(v string) string {
	s := v
	if len(s) > 0 && s[0] == 'v' {
		s = s[1:]
	}
	var a, b, c int
	if n, _ := fmt.Sscanf(s, "%d.%d.%d", &a, &b, &c); n == 3 {
		return fmt.Sprintf("%d.%d.%d", a, b, c)
	}
	return "0.0.0"
}

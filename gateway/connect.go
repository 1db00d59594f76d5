package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/forward"
	"github.com/edgegw/edgegw/gateway/secret"
	"github.com/edgegw/edgegw/gateway/tlsclient"
)

// Check is one thing config check --connect tried: what, and what went
// wrong (empty: it worked), with what it found when it worked.
type Check struct {
	What    string
	Problem string
	Found   string
}

// CheckConnections tries what c connects to, as run would, and stops
// nothing: the site's broker with its login (or, with the embedded
// broker, that its listeners are free), the hub with its credentials and
// TLS, and the stream. Each check says which failed and why.
func CheckConnections(ctx context.Context, c *config.Config) []Check {
	var out []Check
	if m := c.MQTT; m != nil && m.Broker != "" {
		out = append(out, checkBroker(m))
	}
	if m := c.MQTT; m != nil && m.Server.On() {
		sv := m.Server
		for _, addr := range []string{sv.Listen, sv.TLS.Listen, sv.WebSocket} {
			if addr != "" {
				out = append(out, checkListen(addr))
			}
		}
	}
	return append(out, checkUpstream(ctx, c)...)
}

func checkBroker(m *config.MQTTConfig) Check {
	ck := Check{What: "mqtt.broker " + secret.URL(m.Broker)}
	opts := paho.NewClientOptions().AddBroker(m.Broker).SetClientID(m.ClientID + "-check").
		SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(10 * time.Second)
	if m.Username != "" {
		opts.SetUsername(m.Username).SetPassword(m.Password)
	}
	if m.TLS.CAFile != "" || m.TLS.CertFile != "" {
		cfg, err := tlsclient.Config(m.TLS.CAFile, m.TLS.CertFile, m.TLS.KeyFile)
		if err != nil {
			ck.Problem = "mqtt.tls: " + err.Error()
			return ck
		}
		opts.SetTLSConfig(cfg)
	}
	cl := paho.NewClient(opts)
	tok := cl.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		ck.Problem = "no answer within 15 s: is the broker running, and is the address right?"
		return ck
	}
	if err := tok.Error(); err != nil {
		ck.Problem = err.Error() + " (check mqtt.broker, mqtt.username and mqtt.password, mqtt.tls)"
		return ck
	}
	cl.Disconnect(0)
	ck.Found = "logged in"
	if m.Username == "" {
		ck.Found = "connected without a login"
	}
	return ck
}

func checkListen(addr string) Check {
	ck := Check{What: "mqtt.server listener " + addr}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		ck.Problem = err.Error() + " (is edgegw, or another broker such as mosquitto, already listening there?)"
		return ck
	}
	l.Close()
	ck.Found = "free"
	return ck
}

func checkUpstream(ctx context.Context, c *config.Config) []Check {
	hub := Check{What: "upstream " + secret.URLs(c.Upstream.Servers)}
	o := connOptions(c)
	o.ReconnectWait = time.Second
	nc, err := forward.Connect(o, nil)
	if err != nil {
		hub.Problem = err.Error()
		return []Check{hub}
	}
	defer nc.Close()
	if !nc.IsConnected() {
		hub.Problem = "unreachable: no server answered (check upstream.servers, the network, a firewall)"
		return []Check{hub}
	}
	hub.Found = "connected to " + secret.URL(nc.ConnectedUrl())
	s := c.Upstream.Stream
	stream := Check{What: "upstream.stream " + s.Name}
	js, err := jetstream.New(nc)
	if err == nil {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var st jetstream.Stream
		if st, err = js.Stream(cctx, s.Name); err == nil {
			info := st.CachedInfo()
			stream.Found = fmt.Sprintf("%d messages, subjects %v", info.State.Msgs, info.Config.Subjects)
		}
	}
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound) && s.Create:
		stream.Found = "not there yet: edgegw makes it (upstream.stream.create)"
	case errors.Is(err, jetstream.ErrStreamNotFound):
		stream.Problem = "no such stream, and upstream.stream.create is false: the hub's operator makes it (deploy/upstream, docs/upstream.md)"
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled):
		stream.Problem = "the hub has no JetStream (jetstream {} in its config)"
	case err != nil:
		stream.Problem = err.Error() + " (the hub's permissions for this user: deploy/upstream/accounts.conf)"
	}
	return []Check{hub, stream}
}

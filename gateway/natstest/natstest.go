// Package natstest runs a real NATS server with JetStream in-process for
// tests, on a random loopback port, with its store in a temp dir. It can be
// stopped and started again on the same port and store, like a server that
// restarts.
package natstest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Server is a restartable in-process JetStream server.
type Server struct {
	t    testing.TB
	opts server.Options
	s    *server.Server
}

// Start runs a JetStream server. mod, if not nil, adjusts the options (auth,
// TLS) before the first start.
func Start(t testing.TB, mod func(*server.Options)) *Server {
	t.Helper()
	o := loopback(t)
	if mod != nil {
		mod(&o)
	}
	srv := &Server{t: t, opts: o}
	srv.Restart()
	t.Cleanup(srv.Shutdown)
	return srv
}

// URL is the client URL, nats://127.0.0.1:port.
func (s *Server) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.opts.Port) }

// Shutdown stops the server and waits for it.
func (s *Server) Shutdown() {
	if s.s != nil {
		s.s.Shutdown()
		s.s.WaitForShutdown()
		s.s = nil
	}
}

// Restart starts the server (again) on the same port and store.
func (s *Server) Restart() {
	s.t.Helper()
	s.Shutdown()
	o := s.opts
	ns, err := server.NewServer(&o)
	if err != nil {
		s.t.Fatalf("natstest: %v", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		s.t.Fatal("natstest: server not ready in 10s")
	}
	s.s = ns
}

// RestartWith changes the server's options with mod and restarts it on
// the same port and store (a hub restarted with another config).
func (s *Server) RestartWith(mod func(*server.Options)) {
	s.t.Helper()
	mod(&s.opts)
	s.Restart()
}

// Server returns the running server.
func (s *Server) Server() *server.Server { return s.s }

// loopback is a JetStream server on a free loopback port with its store in
// a temp dir, silent, without signal handlers.
func loopback(t testing.TB) server.Options {
	return server.Options{
		Host:       "127.0.0.1",
		Port:       FreePort(t),
		JetStream:  true,
		StoreDir:   t.TempDir(),
		NoLog:      true,
		NoSigs:     true,
		MaxPayload: 1 << 20,
	}
}

// FreePort is a free TCP port on loopback.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Name is the server's name (unique within a cluster).
func (s *Server) Name() string { return s.opts.ServerName }

// StartCluster runs an n-node JetStream cluster on loopback, every node
// routed to every other.
func StartCluster(t testing.TB, n int) []*Server {
	t.Helper()
	clusterPorts := make([]int, n)
	for i := range clusterPorts {
		clusterPorts[i] = FreePort(t)
	}
	var routes []*url.URL
	for _, p := range clusterPorts {
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: fmt.Sprintf("127.0.0.1:%d", p)})
	}
	servers := make([]*Server, n)
	opts := make([]server.Options, n)
	for i := range n {
		opts[i] = loopback(t)
		opts[i].ServerName = fmt.Sprintf("node%d", i+1)
		opts[i].Cluster = server.ClusterOpts{Name: "edgegw-test", Host: "127.0.0.1", Port: clusterPorts[i]}
		opts[i].Routes = routes
	}
	// Start all before waiting: JetStream needs a quorum to be ready.
	for i := range n {
		o := opts[i]
		ns, err := server.NewServer(&o)
		if err != nil {
			t.Fatalf("natstest: %v", err)
		}
		ns.Start()
		servers[i] = &Server{t: t, opts: opts[i], s: ns}
		t.Cleanup(servers[i].Shutdown)
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, s := range servers {
		if !s.s.ReadyForConnections(10 * time.Second) {
			t.Fatal("natstest: cluster node not ready")
		}
		for !s.s.JetStreamIsCurrent() || s.s.NumRoutes() < n-1 {
			if time.Now().After(deadline) {
				t.Fatalf("natstest: cluster not formed in 30s (%s has %d routes)", s.Name(), s.s.NumRoutes())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return servers
}

// StreamMsgs returns how many messages stream holds on the server at url.
func StreamMsgs(url, stream string) (uint64, error) {
	nc, err := nats.Connect(url)
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}

// Messages reads every message of the stream TELEMETRY at url, in stream
// order, with an ordered consumer: the tests' one way to read a stream. Right
// after a leader change a clustered stream may not answer for a moment, so
// it asks again until a minute has passed.
func Messages(t testing.TB, url string) []jetstream.Msg {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	retry := func(what string, err error) {
		t.Helper()
		if ctx.Err() != nil {
			t.Fatalf("reading the stream: %s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var info *jetstream.StreamInfo
	var c jetstream.Consumer
	for {
		s, err := js.Stream(ctx, "TELEMETRY")
		if err == nil {
			if info, err = s.Info(ctx); err == nil {
				if c, err = s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{}); err == nil {
					break
				}
			}
		}
		retry("stream info", err)
	}
	var out []jetstream.Msg
	for len(out) < int(info.State.Msgs) {
		batch, err := c.Fetch(min(1000, int(info.State.Msgs)-len(out)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			retry("fetch", err) // a cluster still settling; the ordered consumer resumes
			continue
		}
		got := 0
		for m := range batch.Messages() {
			out = append(out, m)
			got++
		}
		if got == 0 {
			retry(fmt.Sprintf("stalled at %d of %d", len(out), info.State.Msgs), batch.Error())
		}
	}
	return out
}

// HubWithWebSocket is HubOptions of the config at path with its
// metered-link include (# include ./websocket.conf) turned on, as
// docs/upstream.md says to once the hub has a certificate.
func HubWithWebSocket(t testing.TB, path string) *server.Options {
	t.Helper()
	conf, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(conf, []byte("# include ./websocket.conf")) {
		t.Fatalf("%s has no commented include of websocket.conf", path)
	}
	dir := t.TempDir()
	for _, f := range []string{"accounts.conf", "websocket.conf"} {
		data, _ := os.ReadFile(filepath.Join(filepath.Dir(path), f))
		os.WriteFile(filepath.Join(dir, f), data, 0o600)
	}
	out := filepath.Join(dir, filepath.Base(path))
	os.WriteFile(out, bytes.Replace(conf, []byte("# include ./websocket.conf"), []byte("include ./websocket.conf"), 1), 0o600)
	return HubOptions(t, out)
}

// HubOptions parses a hub config of deploy/upstream (hub.conf,
// hub-single.conf) with its users' passwords set in the environment:
// ops-pw, lobby-pw (lobby-pi-01), van-pw (van-07), sys-pw.
func HubOptions(t testing.TB, path string) *server.Options {
	t.Helper()
	for k, v := range map[string]string{"OPS_PASSWORD": "ops-pw", "LOBBY_PI_01_PASSWORD": "lobby-pw", "VAN_07_PASSWORD": "van-pw", "SYS_PASSWORD": "sys-pw"} {
		t.Setenv(k, v)
	}
	o, err := server.ProcessConfigFile(hubCopy(t, path))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return o
}

// hubCopy is the hub config at path in a temp dir, beside a copy of its
// accounts.conf, with its TLS files (/etc/nats/tls/…) replaced by a test
// CA's certificate for 127.0.0.1 (CAFile in that dir: ca.pem).
func hubCopy(t testing.TB, path string) string {
	t.Helper()
	dir := t.TempDir()
	ca, caKey := NewCert(t, nil, nil, "edgegw test hub CA", true)
	cert, key := NewCert(t, ca, caKey, "127.0.0.1", false)
	files := map[string][]byte{"ca.pem": PEMCert(ca), "server.pem": PEMCert(cert), "server-key.pem": PEMKey(t, key)}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	conf, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, inc := range []string{"accounts.conf", "websocket.conf"} {
		data, err := os.ReadFile(filepath.Join(filepath.Dir(path), inc))
		if err != nil {
			t.Fatal(err)
		}
		data = bytes.ReplaceAll(data, []byte("/etc/nats/tls/"), []byte(dir+"/"))
		os.WriteFile(filepath.Join(dir, inc), data, 0o600)
	}
	out := filepath.Join(dir, filepath.Base(path))
	if err := os.WriteFile(out, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// HubCA is the CA file hubCopy trusts for the hub config's TLS, given
// the options HubOptions returned.
func HubCA(o *server.Options) string {
	if o.Websocket.TLSConfig == nil {
		return ""
	}
	return filepath.Join(filepath.Dir(o.ConfigFile), "ca.pem")
}

// StartHub runs a loopback JetStream server with the accounts and users
// (and so the per-gateway permissions) of the hub config at path.
func StartHub(t testing.TB, path string) *Server {
	t.Helper()
	hub := HubOptions(t, path)
	return Start(t, func(o *server.Options) {
		o.Accounts, o.Users, o.SystemAccount = hub.Accounts, hub.Users, hub.SystemAccount
		o.JetStreamMaxStore = hub.JetStreamMaxStore // reserved by a stream's max_bytes, not written
	})
}

// Holds says whether the stream TELEMETRY at url holds a message whose
// data is data: how a test sees its sentinel arrive.
func Holds(t testing.TB, url, data string) bool {
	t.Helper()
	for _, m := range Messages(t, url) {
		if string(m.Data()) == data {
			return true
		}
	}
	return false
}

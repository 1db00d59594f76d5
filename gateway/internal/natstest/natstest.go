// Package natstest runs a real NATS server with JetStream in-process for
// tests, on a random loopback port, with its store in a temp dir. It can be
// stopped and started again on the same port and store, like a server that
// restarts.
package natstest

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
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
	o := server.Options{
		Host:       "127.0.0.1",
		Port:       freePort(t),
		JetStream:  true,
		StoreDir:   t.TempDir(),
		NoLog:      true,
		NoSigs:     true,
		MaxPayload: 1 << 20,
	}
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

// Server returns the running server.
func (s *Server) Server() *server.Server { return s.s }

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

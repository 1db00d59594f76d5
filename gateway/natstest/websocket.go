package natstest

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

// WSS gives a server a WebSocket listener on a free loopback port, behind
// TLS with a certificate of a fresh CA, with per-message deflate offered
// (websocket { compression: true } in a hub's config). caFile is the CA
// a client trusts (upstream.tls.ca_file); WSURL is where it dials.
func WSS(t testing.TB) (mod func(*server.Options), caFile string) {
	t.Helper()
	ca, caKey := NewCert(t, nil, nil, "edgegw test CA", true)
	cert, key := NewCert(t, ca, caKey, "127.0.0.1", false)
	pair, err := tls.X509KeyPair(PEMCert(cert), PEMKey(t, key))
	if err != nil {
		t.Fatal(err)
	}
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, PEMCert(ca), 0o600); err != nil {
		t.Fatal(err)
	}
	port := FreePort(t)
	return func(o *server.Options) {
		o.Websocket.Host, o.Websocket.Port = "127.0.0.1", port
		o.Websocket.Compression = true
		o.Websocket.TLSConfig = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	}, caFile
}

// WS gives a server a plain WebSocket listener (no TLS) with
// per-message deflate offered.
func WS(t testing.TB) func(*server.Options) {
	port := FreePort(t)
	return func(o *server.Options) {
		o.Websocket.Host, o.Websocket.Port = "127.0.0.1", port
		o.Websocket.Compression, o.Websocket.NoTLS = true, true
	}
}

// WSURL is the WebSocket listener's URL: wss:// with TLS, else ws://.
func (s *Server) WSURL() string {
	scheme := "wss"
	if s.opts.Websocket.NoTLS {
		scheme = "ws"
	}
	return fmt.Sprintf("%s://127.0.0.1:%d", scheme, s.opts.Websocket.Port)
}

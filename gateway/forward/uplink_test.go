package forward_test

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edgegw/edgegw/gateway/forward"
	"github.com/edgegw/edgegw/gateway/natstest"
)

// An uplink is how a test's forwarder reaches its server: plain nats://,
// or wss:// with per-message deflate (the metered link's). The exactly-once
// tests run over both.
type uplink struct {
	name        string
	wss         bool
	compression bool
}

var uplinks = []uplink{{name: "nats"}, {name: "wss+compression", wss: true, compression: true}}

// start runs a JetStream server the uplink reaches; url is the server's
// plain URL, for the test's own reads of the stream.
func (u uplink) start(t testing.TB) (srv *natstest.Server, nc *nats.Conn) {
	t.Helper()
	if !u.wss {
		srv = natstest.Start(t, nil)
		return srv, connect(t, srv.URL())
	}
	mod, ca := natstest.WSS(t)
	srv = natstest.Start(t, mod)
	return srv, u.connect(t, srv.WSURL(), ca)
}

// connect dials url (the server's, or a relay's) as the gateway does.
func (u uplink) connect(t testing.TB, url, ca string) *nats.Conn {
	t.Helper()
	nc, err := forward.Connect(forward.ConnOptions{Servers: []string{url}, CAFile: ca, Compression: u.compression, ReconnectWait: 50 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// A relay passes TCP connections through to a server and counts the bytes
// each way: what a metered link bills.
type relay struct {
	l        net.Listener
	up, down atomic.Int64
	wg       sync.WaitGroup
}

func startRelay(t testing.TB, target string) *relay {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{l: l}
	r.wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			r.wg.Go(func() { r.pipe(s, c, &r.up) })
			r.wg.Go(func() { r.pipe(c, s, &r.down) })
		}
	})
	t.Cleanup(func() { l.Close(); r.wg.Wait() })
	return r
}

func (r *relay) pipe(dst, src net.Conn, n *atomic.Int64) {
	buf := make([]byte, 32<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			n.Add(int64(k))
			if _, werr := dst.Write(buf[:k]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
}

func (r *relay) addr() string { return r.l.Addr().String() }

package forward

import (
	"net"
	"sync/atomic"
	"time"
)

// Wire counts the bytes the upstream connection sends and receives on the
// network, below TLS and after WebSocket compression: what a metered link
// bills. Safe for concurrent use.
type Wire struct {
	up, down atomic.Int64
}

// Bytes is what went up and came down since the Wire was made.
func (w *Wire) Bytes() (up, down int64) {
	if w == nil {
		return 0, 0
	}
	return w.up.Load(), w.down.Load()
}

// wireDialer dials as nats.go would (its connect timeout) and counts.
type wireDialer struct {
	w *Wire
	d net.Dialer
}

func (d wireDialer) Dial(network, address string) (net.Conn, error) {
	c, err := d.d.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return &wireConn{Conn: c, w: d.w}, nil
}

type wireConn struct {
	net.Conn
	w *Wire
}

func (c *wireConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.w.down.Add(int64(n))
	return n, err
}

func (c *wireConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.w.up.Add(int64(n))
	return n, err
}

// dialTimeout is nats.go's default connect timeout, which a custom dialer
// must keep itself.
const dialTimeout = 2 * time.Second

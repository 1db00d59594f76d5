package mqttbroker

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// Defaults of the limits on connections that have not logged in yet.
const (
	DefaultConnectTimeout     = 5 * time.Second
	DefaultMaxPending         = 100
	DefaultMaxPendingPerAddr  = 10
	DefaultMaxConnectPacket   = 16 << 10
	DefaultMaxKeepalive       = 10 * time.Minute
	minConnectPacketAllowance = 1 << 10
)

// Why a connection was refused before it logged in: the labels of
// Stats.Refused... and of the metric.
const (
	RefusedPending    = "pending"     // too many connections not logged in yet
	RefusedPendingIP  = "pending_ip"  // too many from one address
	RefusedTimeout    = "timeout"     // no CONNECT within ConnectTimeout
	RefusedNotConnect = "not_connect" // the first packet is not a CONNECT
	RefusedTooLarge   = "too_large"   // a CONNECT larger than MaxConnectPacket
)

// guard admits connections before mochi reads them: at most maxPending
// not logged in yet (and perAddr from one address), each with a deadline
// for its CONNECT, whose declared length is checked before mochi
// allocates it (mochi allocates a packet's declared length up front).
type guard struct {
	timeout    time.Duration
	maxPending int
	perAddr    int
	maxConnect int
	log        *slog.Logger
	refused    *refusals

	mu      sync.Mutex
	pending int
	byAddr  map[string]int
}

// refusals counts refusals by reason and logs each reason at most once a
// minute, with the count since.
type refusals struct {
	log    *slog.Logger
	mu     sync.Mutex
	counts map[string]uint64
	logged map[string]time.Time
	since  map[string]uint64 // not yet logged
}

func newRefusals(log *slog.Logger) *refusals {
	return &refusals{log: log, counts: map[string]uint64{}, logged: map[string]time.Time{}, since: map[string]uint64{}}
}

// add counts one refusal for reason; at most once a minute per reason it
// logs msg with the count since the last line.
func (r *refusals) add(reason, msg string, attrs ...any) {
	r.mu.Lock()
	r.counts[reason]++
	r.since[reason]++
	now := time.Now()
	if now.Sub(r.logged[reason]) < time.Minute {
		r.mu.Unlock()
		return
	}
	n := r.since[reason]
	r.since[reason] = 0
	r.logged[reason] = now
	r.mu.Unlock()
	r.log.Warn(msg, append(attrs, "reason", reason, "count_since_last_line", n)...)
}

// snapshot is the counts by reason.
func (r *refusals) snapshot() map[string]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]uint64, len(r.counts))
	for k, v := range r.counts {
		out[k] = v
	}
	return out
}

var errRefused = errors.New("mqtt: connection refused before CONNECT")

// admit wraps c, or refuses it (nil).
func (g *guard) admit(c net.Conn) *guardConn {
	addr := hostOf(c.RemoteAddr())
	g.mu.Lock()
	switch {
	case g.pending >= g.maxPending:
		g.mu.Unlock()
		g.refused.add(RefusedPending, "MQTT connections refused: too many have not logged in yet (mqtt.server.max_pending)", "remote", addr, "limit", g.maxPending)
		return nil
	case g.byAddr[addr] >= g.perAddr:
		g.mu.Unlock()
		g.refused.add(RefusedPendingIP, "MQTT connections refused: too many from one address have not logged in yet (mqtt.server.max_pending_per_address)", "remote", addr, "limit", g.perAddr)
		return nil
	}
	g.pending++
	g.byAddr[addr]++
	g.mu.Unlock()
	_ = c.SetDeadline(time.Now().Add(g.timeout))
	return &guardConn{Conn: c, g: g, addr: addr}
}

func (g *guard) release(addr string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pending--
	if g.byAddr[addr]--; g.byAddr[addr] <= 0 {
		delete(g.byAddr, addr)
	}
}

// Pending is how many connections have not logged in yet.
func (g *guard) Pending() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.pending
}

func hostOf(a net.Addr) string {
	if a == nil {
		return ""
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// guardConn is a connection until it has logged in (or failed to): its
// first read checks the CONNECT's fixed header.
type guardConn struct {
	net.Conn
	g       *guard
	addr    string
	hdr     []byte // the fixed header, read by the check, not yet handed on
	checked bool
	done    atomic.Bool // released
}

// loggedIn ends the connection's pre-login accounting (the login was
// decided, either way).
func (c *guardConn) loggedIn() {
	if c.done.CompareAndSwap(false, true) {
		c.g.release(c.addr)
	}
}

func (c *guardConn) Close() error {
	c.loggedIn()
	return c.Conn.Close()
}

func (c *guardConn) Read(p []byte) (int, error) {
	if !c.checked {
		if err := c.check(); err != nil {
			return 0, err
		}
		c.checked = true
	}
	if len(c.hdr) > 0 {
		n := copy(p, c.hdr)
		c.hdr = c.hdr[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// check reads the first packet's fixed header: a CONNECT whose declared
// length is within maxConnect.
func (c *guardConn) check() error {
	var b [5]byte
	if _, err := io.ReadFull(c.Conn, b[:1]); err != nil {
		c.timedOut(err)
		return err
	}
	if b[0]>>4 != 1 { // CONNECT
		c.g.refused.add(RefusedNotConnect, "MQTT connections refused: the first packet was not a CONNECT", "remote", c.addr, "first_byte", b[0])
		return errRefused
	}
	n, length, mul := 1, 0, 1
	for {
		if n == len(b) {
			c.g.refused.add(RefusedNotConnect, "MQTT connections refused: a malformed CONNECT length", "remote", c.addr)
			return errRefused
		}
		if _, err := io.ReadFull(c.Conn, b[n:n+1]); err != nil {
			c.timedOut(err)
			return err
		}
		length += int(b[n]&0x7f) * mul
		mul <<= 7
		n++
		if b[n-1]&0x80 == 0 {
			break
		}
	}
	if length > c.g.maxConnect {
		c.g.refused.add(RefusedTooLarge, "MQTT connections refused: a CONNECT larger than the limit", "remote", c.addr, "declared_bytes", length, "limit", c.g.maxConnect)
		return fmt.Errorf("%w: CONNECT of %d bytes", errRefused, length)
	}
	c.hdr = append([]byte(nil), b[:n]...)
	return nil
}

func (c *guardConn) timedOut(err error) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.g.refused.add(RefusedTimeout, "MQTT connections closed: no CONNECT in time (mqtt.server.connect_timeout)", "remote", c.addr, "timeout", c.g.timeout)
	}
}

// guarded is a mochi listener whose connections pass the guard first.
type guarded struct {
	listeners.Listener
	g *guard
}

func (l guarded) Serve(establish listeners.EstablishFn) {
	l.Listener.Serve(func(id string, c net.Conn) error {
		gc := l.g.admit(c)
		if gc == nil {
			return c.Close()
		}
		defer gc.loggedIn()
		return establish(id, gc)
	})
}

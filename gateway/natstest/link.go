package natstest

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
)

// A Link is a TCP relay to a server that can be cut (every connection
// closed, new ones refused) and restored on the same port.
type Link struct {
	t      testing.TB
	target string
	addr   string
	mu     sync.Mutex
	ln     net.Listener
	conns  []net.Conn
}

// NewLink relays a free port on 127.0.0.1 to the server at natsURL; the
// test's end cuts it.
func NewLink(t testing.TB, natsURL string) *Link {
	l := &Link{t: t, target: strings.TrimPrefix(natsURL, "nats://"), addr: fmt.Sprintf("127.0.0.1:%d", FreePort(t))}
	l.Restore()
	t.Cleanup(l.Cut)
	return l
}

// URL is the relay's address, for a client.
func (l *Link) URL() string { return "nats://" + l.addr }

// Restore listens again on the same port.
func (l *Link) Restore() {
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		l.t.Fatal(err)
	}
	l.mu.Lock()
	l.ln = ln
	l.mu.Unlock()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", l.target)
			if err != nil {
				c.Close()
				continue
			}
			l.mu.Lock()
			l.conns = append(l.conns, c, s)
			l.mu.Unlock()
			go func() { io.Copy(s, c); s.Close() }()
			go func() { io.Copy(c, s); c.Close() }()
		}
	}()
}

// Cut closes every relayed connection and refuses new ones.
func (l *Link) Cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ln != nil {
		l.ln.Close()
		l.ln = nil
	}
	for _, c := range l.conns {
		c.Close()
	}
	l.conns = nil
}

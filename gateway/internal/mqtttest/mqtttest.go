// Package mqtttest runs a real MQTT broker (mochi-mqtt) in-process for
// tests, on a random loopback port. With Persist its sessions and queued
// messages live in a bbolt file, so the broker can be stopped and started
// again like a real one that restarts.
package mqtttest

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/listeners"
	bbolt "go.etcd.io/bbolt"
)

// Options for Start.
type Options struct {
	Persist bool // keep sessions and messages across Restart
	// Users, if set, are the only username/password pairs accepted.
	Users map[string]string
}

// Broker is a restartable in-process MQTT broker.
type Broker struct {
	t    testing.TB
	o    Options
	addr string
	dir  string
	s    *mqtt.Server
}

// Start runs a broker and stops it when the test ends.
func Start(t testing.TB, o Options) *Broker {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	b := &Broker{t: t, o: o, addr: addr, dir: t.TempDir()}
	b.Restart()
	t.Cleanup(b.Shutdown)
	return b
}

// URL is tcp://127.0.0.1:port.
func (b *Broker) URL() string { return "tcp://" + b.addr }

// Shutdown stops the broker.
func (b *Broker) Shutdown() {
	if b.s != nil {
		b.s.Close()
		b.s = nil
	}
}

// Restart starts the broker (again) on the same port.
func (b *Broker) Restart() {
	b.t.Helper()
	b.Shutdown()
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumInflight = 65535              // hold a long backlog for a persistent subscriber
	caps.MaximumClientWritesPending = 1 << 20 // never drop for a slow reader
	s := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
		InlineClient: false,
	})
	var err error
	if len(b.o.Users) > 0 {
		var rules auth.AuthRules
		for u, p := range b.o.Users {
			rules = append(rules, auth.AuthRule{Username: auth.RString(u), Password: auth.RString(p), Allow: true})
		}
		err = s.AddHook(new(auth.Hook), &auth.Options{Ledger: &auth.Ledger{Auth: rules}})
	} else {
		err = s.AddHook(new(auth.AllowHook), nil)
	}
	if err != nil {
		b.t.Fatal(err)
	}
	if b.o.Persist {
		err := s.AddHook(new(bolt.Hook), &bolt.Options{
			Path:    filepath.Join(b.dir, "broker.db"),
			Options: &bbolt.Options{Timeout: 5 * time.Second},
		})
		if err != nil {
			b.t.Fatal(err)
		}
	}
	if err := s.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: b.addr})); err != nil {
		b.t.Fatal(fmt.Errorf("mqtttest: listen on %s: %w", b.addr, err))
	}
	if err := s.Serve(); err != nil {
		b.t.Fatal(err)
	}
	b.s = s
}

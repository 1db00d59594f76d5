// Package mqttbroker is edgegw's embedded MQTT broker: devices publish to
// the gateway itself, and a QoS 1 or 2 PUBLISH is acknowledged (PUBACK,
// PUBREC) only after the buffer commit that holds it. The device's PUBACK
// is the fsync: no second broker keeps readings in memory in between.
//
// It is mochi-mqtt (github.com/mochi-mqtt/server/v2) with one hook. For a
// routed QoS 1/2 message the hook takes the packet from mochi (which then
// sends nothing) and hands it to the client's own worker, in order; the
// worker stores everything its client has sent meanwhile with one append,
// so a device with many messages in flight shares a commit, and so do
// devices with one each (the buffer's group commit). After the commit it
// writes the acks, and publishes the messages to the broker's local
// subscribers. When the buffer refuses (full under when_full: reject, a
// disk error) a device never sees a success: MQTT 5 gets the reason code,
// MQTT 3.1.1, which has none, is disconnected without its PUBACK and sends
// again when it is back.
//
// Messages no subscription routes are a local broker's business:
// acknowledged and delivered to local subscribers, not stored.
package mqttbroker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/listeners"
	bbolt "go.etcd.io/bbolt"

	"github.com/edgegw/edgegw/gateway/event"
	"github.com/edgegw/edgegw/gateway/mqttroute"
)

// Options configure a Broker.
type Options struct {
	// Listen is the TCP listener, host:port (e.g. 0.0.0.0:1883).
	Listen string
	// TLSListen, with TLS, is a TLS listener (e.g. 0.0.0.0:8883).
	TLSListen string
	TLS       *tls.Config
	// WebSocket is a WebSocket listener, host:port; "" for none.
	WebSocket string
	// Users may connect, each with its ACL; with none, AllowAnonymous
	// must be set.
	Users          []User
	AllowAnonymous bool
	// Routes: which messages are stored, and where they go upstream.
	Routes     []mqttroute.Subscription
	MaxPayload int // bytes; larger routed messages are refused
	// MaxPacketSize bounds an MQTT packet (0: MaxPayload plus 64 KiB).
	MaxPacketSize int
	// MaxInflight is each client's receive maximum: QoS 1/2 messages it
	// may have unacknowledged (default 1024).
	MaxInflight int
	// MaxConnections bounds connected clients (default 1000).
	MaxConnections int
	// Before a client has logged in: ConnectTimeout for its CONNECT
	// (default 5s), at most MaxPending such connections (default 100) and
	// MaxPendingPerAddress from one address (default 10). A CONNECT may
	// declare at most 16 KiB (or MaxPacketSize, if smaller): checked
	// before a byte of it is allocated.
	ConnectTimeout       time.Duration
	MaxPending           int
	MaxPendingPerAddress int
	// MaxKeepalive caps a client's keepalive (default 10m): an MQTT 5
	// client that asks for 0 or more is told this (server keep alive);
	// an MQTT 3.1.1 client, which cannot be told, is dropped after 1.5
	// times it without a packet. So an idle connection cannot hold a slot
	// for ever.
	MaxKeepalive time.Duration
	// Retained messages: NoRetain turns them off; otherwise at most
	// MaxRetained topics (default 10,000) and MaxRetainedBytes of
	// payload (default 4 MiB) are kept: a retained publish past either
	// is delivered but not retained (counted as retained_limit).
	NoRetain         bool
	MaxRetained      int
	MaxRetainedBytes int64
	// SessionMaxBytes bounds the sessions file (default 16 MiB): one
	// larger at start is moved aside (as a damaged buffer is) and the
	// broker starts with no stored sessions, so a start never loads more.
	SessionMaxBytes int64
	// SessionPath, if set, is a bbolt file where the broker keeps its
	// local subscribers' sessions, subscriptions and retained messages
	// across restarts.
	SessionPath string
	Logger      *slog.Logger
}

// Stats are the broker's counters since New.
type Stats struct {
	Listening  bool
	Clients    int64  // connected now
	Received   uint64 // routed messages received from devices
	Committed  uint64 // routed messages stored and acknowledged
	Local      uint64 // messages no subscription routes: delivered locally only
	TooLarge   uint64 // routed messages over MaxPayload, refused
	Unmappable uint64 // no subject could be made for the topic, refused
	Refused    uint64 // messages the buffer refused (full, disk): no success sent
	ReusedIDs  uint64 // QoS 2 packet ids reused before their PUBREL: taken as new messages
	// Pending: connections that have not logged in yet.
	Pending int
	// Retained messages kept, and their payload bytes.
	Retained      int
	RetainedBytes int64
	// SessionsMovedAside counts sessions files over SessionMaxBytes moved
	// aside at start (this run).
	SessionsMovedAside int
	// RefusedConnections counts connections and logins refused, by
	// reason (guard.go's and access.go's Refused… constants).
	RefusedConnections map[string]uint64
	// SessionsBytes is the sessions file's size (0 without one).
	SessionsBytes int64
	// SessionsWritten estimates what the broker has written to it since
	// New: its commits, three pages of the system page size each
	// (sessionPagesPerCommit).
	SessionsWritten int64
	SessionsCommits uint64 // exact: counted as mochi's store makes them
}

// Broker is the embedded broker; Run serves it. It is an event.Source.
type Broker struct {
	o   Options
	log *slog.Logger

	received, committed, local, tooLarge, unmappable, refused, reused atomic.Uint64
	sessionCommits                                                    atomic.Uint64
	srv                                                               atomic.Pointer[mqtt.Server]

	guard      *guard
	refusals   *refusals
	retained   retainedSet
	movedAside atomic.Int32
}

var _ event.Source = (*Broker)(nil)

// New checks o; it listens on nothing.
func New(o Options) (*Broker, error) {
	if o.Listen == "" && o.TLSListen == "" && o.WebSocket == "" {
		return nil, errors.New("mqtt.server: no listener; set mqtt.server.listen, e.g. 0.0.0.0:1883")
	}
	if o.TLSListen != "" && o.TLS == nil {
		return nil, errors.New("mqtt.server.tls: a listener without a certificate")
	}
	if len(o.Users) == 0 && !o.AllowAnonymous {
		return nil, errors.New("mqtt.server: no users: set mqtt.server.users_file, or allow_anonymous: true on a trusted network")
	}
	for i, r := range o.Routes {
		if err := mqttroute.ValidFilter(r.Topic); err != nil {
			return nil, fmt.Errorf("mqtt: subscriptions[%d].topic: %w", i, err)
		}
		if r.Subject == nil {
			return nil, fmt.Errorf("mqtt: subscriptions[%d].subject is missing", i)
		}
	}
	if o.MaxPayload <= 0 {
		o.MaxPayload = mqttroute.DefaultMaxPayload
	}
	if o.MaxPacketSize <= 0 {
		o.MaxPacketSize = o.MaxPayload + 64<<10
	}
	if o.MaxInflight <= 0 {
		o.MaxInflight = 1024
	}
	if o.MaxConnections <= 0 {
		o.MaxConnections = 1000
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	if o.MaxPendingPerAddress <= 0 {
		o.MaxPendingPerAddress = DefaultMaxPendingPerAddr
	}
	if o.MaxKeepalive <= 0 {
		o.MaxKeepalive = DefaultMaxKeepalive
	}
	if o.MaxRetained <= 0 {
		o.MaxRetained = DefaultMaxRetained
	}
	if o.MaxRetainedBytes <= 0 {
		o.MaxRetainedBytes = DefaultMaxRetainedBytes
	}
	if o.SessionMaxBytes <= 0 {
		o.SessionMaxBytes = DefaultSessionMaxBytes
	}
	if o.MaxKeepalive > 65535*time.Second {
		return nil, fmt.Errorf("mqtt.server.max_keepalive: %s is over MQTT's 65535s", o.MaxKeepalive)
	}
	b := &Broker{o: o, log: o.Logger}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	b.log = b.log.With("source", b.Name())
	b.refusals = newRefusals(b.log)
	b.guard = &guard{timeout: o.ConnectTimeout, maxPending: o.MaxPending, perAddr: o.MaxPendingPerAddress,
		maxConnect: min(DefaultMaxConnectPacket, max(o.MaxPacketSize, minConnectPacketAllowance)), log: b.log, refused: b.refusals, byAddr: map[string]int{}}
	return b, nil
}

// Name is the source's name.
func (b *Broker) Name() string { return "mqtt-server" }

// Stats returns the broker's counters.
func (b *Broker) Stats() Stats {
	s := Stats{
		Received: b.received.Load(), Committed: b.committed.Load(),
		Local: b.local.Load(), TooLarge: b.tooLarge.Load(), Unmappable: b.unmappable.Load(), Refused: b.refused.Load(), ReusedIDs: b.reused.Load(),
		Pending: b.guard.Pending(), RefusedConnections: b.refusals.snapshot(),
		SessionsMovedAside: int(b.movedAside.Load()),
	}
	s.Retained, s.RetainedBytes = b.retained.stats()
	s.SessionsCommits = b.sessionCommits.Load()
	s.SessionsWritten = int64(s.SessionsCommits) * sessionPagesPerCommit * int64(os.Getpagesize())
	if b.o.SessionPath != "" {
		if fi, err := os.Stat(b.o.SessionPath); err == nil {
			s.SessionsBytes = fi.Size()
		}
	}
	if srv := b.srv.Load(); srv != nil {
		s.Listening, s.Clients = true, atomic.LoadInt64(&srv.Info.ClientsConnected)
	}
	return s
}

// Publish sends a message to the broker's subscribers (a downlink to
// the site's devices). It is not stored upstream, even on a routed topic.
func (b *Broker) Publish(topic string, payload []byte, retain bool, qos byte) error {
	if err := mqttroute.ValidTopic(topic); err != nil {
		return err
	}
	srv := b.srv.Load()
	if srv == nil {
		return errors.New("mqtt.server is not listening yet")
	}
	return srv.Publish(topic, payload, retain, qos)
}

// Run serves until ctx ends. emit stores events (the gateway's buffer);
// acks wait for it.
func (b *Broker) Run(ctx context.Context, emit event.EmitFunc) error {
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = uint32(b.o.MaxPacketSize)
	caps.ReceiveMaximum = uint16(min(b.o.MaxInflight, 65535))
	caps.MaximumClients = int64(b.o.MaxConnections)
	// What one client can make the broker hold for it: packets queued to
	// write (a slow local subscriber; mochi's default 8192) and QoS 1/2
	// messages stored for it (8192), as mosquitto's max_queued_messages
	// (1000) bounds them.
	caps.MaximumClientWritesPending = maxQueuedPerClient
	caps.MaximumInflight = maxQueuedPerClient
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Capabilities: caps, Logger: slog.New(mochiLog{b.log.Handler()}).With("component", "mochi")})
	h := &ingest{b: b, srv: srv, emit: emit, ctx: ctx, clients: map[string]*worker{}}
	if err := srv.AddHook(newAccess(b, srv), nil); err != nil {
		return err
	}
	if err := srv.AddHook(h, nil); err != nil {
		return err
	}
	if b.o.NoRetain {
		caps.RetainAvailable = 0
	}
	if b.o.SessionPath != "" {
		b.boundSessions()
		err := srv.AddHook(&sessionStore{Hook: new(bolt.Hook), commits: &b.sessionCommits}, &bolt.Options{Path: b.o.SessionPath, Options: &bbolt.Options{
			Timeout:        2 * time.Second,
			NoFreelistSync: true, // a page less per commit; rebuilt at open
			FreelistType:   bbolt.FreelistMapType,
		}})
		if err != nil {
			return fmt.Errorf("mqtt.server: sessions file %s: %w", b.o.SessionPath, err)
		}
	}
	for _, l := range []struct {
		on  bool
		new func() listeners.Listener
	}{
		{b.o.Listen != "", func() listeners.Listener {
			return listeners.NewTCP(listeners.Config{ID: "tcp", Address: b.o.Listen})
		}},
		{b.o.TLSListen != "", func() listeners.Listener {
			return listeners.NewTCP(listeners.Config{ID: "tls", Address: b.o.TLSListen, TLSConfig: b.o.TLS})
		}},
		{b.o.WebSocket != "", func() listeners.Listener {
			return newWSListener(b.o.WebSocket)
		}},
	} {
		if !l.on {
			continue
		}
		if err := srv.AddListener(guarded{l.new(), b.guard}); err != nil {
			return fmt.Errorf("mqtt.server: %w (is another broker on that port?)", err)
		}
	}
	if err := srv.Serve(); err != nil {
		return fmt.Errorf("mqtt.server: %w", err)
	}
	b.retained.load(srv)
	b.srv.Store(srv)
	b.log.Info("MQTT broker listening", "tcp", b.o.Listen, "tls", b.o.TLSListen, "websocket", b.o.WebSocket, "routes", len(b.o.Routes))
	<-ctx.Done()
	// Close stops the listeners and clients; the workers finish what
	// they hold (a commit that was handed over completes) and stop.
	err := srv.Close()
	h.stopAll()
	return err
}

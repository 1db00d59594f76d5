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
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	bbolt "go.etcd.io/bbolt"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/event"
	"github.com/edgegw/edgegw/gateway/mqttsource"
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
	Routes     []mqttsource.Subscription
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
	// New: its commits, three 4 KiB pages each (sessionPagesPerCommit).
	SessionsWritten int64
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
		if err := mqttsource.ValidFilter(r.Topic); err != nil {
			return nil, fmt.Errorf("mqtt: subscriptions[%d].topic: %w", i, err)
		}
		if r.Subject == nil {
			return nil, fmt.Errorf("mqtt: subscriptions[%d].subject is missing", i)
		}
	}
	if o.MaxPayload <= 0 {
		o.MaxPayload = mqttsource.DefaultMaxPayload
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
	s.SessionsWritten = int64(b.sessionCommits.Load()) * sessionPagesPerCommit * int64(os.Getpagesize())
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
	if err := mqttsource.ValidTopic(topic); err != nil {
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
			return listeners.NewWebsocket(listeners.Config{ID: "ws", Address: b.o.WebSocket})
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

// ingest is the hook that stores routed messages before acknowledging them.
type ingest struct {
	mqtt.HookBase
	b    *Broker
	srv  *mqtt.Server
	emit event.EmitFunc
	ctx  context.Context

	mu       sync.Mutex
	clients  map[string]*worker // by client id: a reconnect keeps its order
	stopping bool
	wg       sync.WaitGroup
}

func (h *ingest) ID() string { return "edgegw-ingest" }

func (h *ingest) Provides(b byte) bool {
	return b == mqtt.OnPublish || b == mqtt.OnPacketRead || b == mqtt.OnRetainMessage
}

// OnRetainMessage keeps the retained set's count and bytes.
func (h *ingest) OnRetainMessage(cl *mqtt.Client, pk packets.Packet, r int64) {
	h.b.retained.set(pk.TopicName, len(pk.Payload))
}

// OnPacketRead runs before mochi handles a packet. A QoS 2 PUBLISH whose
// packet id still waits for its PUBREL is, to mochi, the same message
// again: it answers PUBREC ("identifier in use", which MQTT 3.1.1 cannot
// say, so the device reads a success) and stores nothing. A device that
// rebooted and restarted its ids with a persistent session sends a new
// message that way, and it was lost. As mosquitto does ("Reused message
// ID ... detected. Clearing from storage"), the old flow is cleared and
// the PUBLISH is taken as a message: a routed one goes to the buffer
// marked as a possible copy, so the buffer drops it if it is the same
// message as the one stored under that id (a resend), and stores it if
// it is another (a reused id), durably across restarts; only then is it
// answered. An unrouted one is delivered again unless its DUP flag says
// it is a resend.
func (h *ingest) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Qos != 2 || cl.Net.Inline {
		return pk, nil
	}
	prev, ok := cl.State.Inflight.Get(pk.PacketID)
	if !ok || prev.FixedHeader.Type != packets.Pubrec {
		return pk, nil
	}
	routed := pk.TopicName == "" // a topic alias, resolved later: take it as routed
	for _, r := range h.b.o.Routes {
		routed = routed || mqttsource.Match(r.Topic, pk.TopicName)
	}
	if !routed && pk.FixedHeader.Dup {
		return pk, nil // a resend of a local message: mochi answers PUBREC
	}
	if cl.State.Inflight.Delete(pk.PacketID) {
		atomic.AddInt64(&h.srv.Info.Inflight, -1)
	}
	pk.FixedHeader.Dup = true
	h.b.reused.Add(1)
	h.b.log.Debug("QoS 2 packet id in use before its PUBREL: the earlier flow is cleared, the message taken (stored unless it is a copy)", "client", cl.ID, "packet_id", pk.PacketID)
	return pk, nil
}

// OnPublish routes pk; a routed QoS 1/2 message goes to the client's
// worker and mochi is told to do nothing more with it.
func (h *ingest) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Retain && len(pk.Payload) > 0 && !h.b.retained.fits(pk.TopicName, len(pk.Payload), h.b.o.MaxRetained, h.b.o.MaxRetainedBytes) {
		pk.FixedHeader.Retain = false // delivered, not kept
		h.b.refusals.add(RefusedRetained, "retained messages not kept: mqtt.server.max_retained or max_retained_bytes reached", "client", cl.ID, "topic", pk.TopicName)
	}
	if cl.Net.Inline {
		return pk, nil // the worker's own publish to local subscribers
	}
	e, err := mqttsource.Route(h.b.o.Routes, h.b.o.MaxPayload, "server/"+cl.ID, mqttsource.Message{
		Topic: pk.TopicName, Payload: pk.Payload, QoS: pk.FixedHeader.Qos, Dup: pk.FixedHeader.Dup, ID: pk.PacketID,
	}, time.Now())
	switch {
	case errors.Is(err, mqttsource.ErrNoRoute):
		h.b.local.Add(1)
		return pk, nil
	case err != nil:
		if errors.Is(err, mqttsource.ErrTooLarge) {
			h.b.tooLarge.Add(1)
		} else {
			h.b.unmappable.Add(1)
		}
		h.b.log.Warn("message refused", "client", cl.ID, "topic", pk.TopicName, "err", err)
		if pk.FixedHeader.Qos > 0 && cl.Properties.ProtocolVersion == 5 {
			return pk, packets.ErrPayloadFormatInvalid // mochi answers with the code
		}
		return pk, packets.ErrRejectPacket // no PUBACK: never a success
	}
	h.b.received.Add(1)
	if !h.send(cl, item{cl: cl, pk: pk, ev: e}) {
		return pk, packets.ErrRejectPacket // stopping: the device sends it again
	}
	if pk.FixedHeader.Qos == 0 {
		return pk, nil // buffered, no ack; mochi delivers it locally
	}
	return pk, packets.ErrRejectPacket
}

// send hands it to its client's worker, started on the client's first
// message; false once stopping.
func (h *ingest) send(cl *mqtt.Client, it item) bool {
	h.mu.Lock()
	if h.stopping {
		h.mu.Unlock()
		return false
	}
	w := h.clients[cl.ID]
	if w == nil {
		w = &worker{h: h, id: cl.ID, in: make(chan item, h.b.o.MaxInflight)}
		h.clients[cl.ID] = w
		h.wg.Go(w.run)
	}
	w.senders++ // the worker does not retire while a send is under way
	h.mu.Unlock()
	ok := true
	select {
	case w.in <- it:
	case <-h.ctx.Done():
		ok = false
	}
	h.mu.Lock()
	w.senders--
	h.mu.Unlock()
	return ok
}

// stopAll waits for every worker to store what it holds.
func (h *ingest) stopAll() {
	h.mu.Lock()
	h.stopping = true
	h.mu.Unlock()
	h.wg.Wait()
}

type item struct {
	cl *mqtt.Client // the connection it came in on, for its ack
	pk packets.Packet
	ev event.Event
}

// workerIdle is how long a worker waits for its client's next message
// before it retires.
const workerIdle = time.Minute

// worker stores one client's routed messages, in order, and acks them.
type worker struct {
	h       *ingest
	id      string
	in      chan item
	senders int // h.mu
}

func (w *worker) run() {
	batch := make([]item, 0, 64)
	events := make([]event.Event, 0, 64)
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		select {
		case it := <-w.in:
			batch = append(batch[:0], it)
		case <-idle.C:
			if w.retire() {
				return
			}
			idle.Reset(workerIdle)
			continue
		case <-w.h.ctx.Done():
			batch = batch[:0] // store what was handed over, then stop
		}
	more:
		for len(batch) < 4096 {
			select {
			case it := <-w.in:
				batch = append(batch, it)
			default:
				break more
			}
		}
		if len(batch) == 0 {
			return // ctx ended with nothing left
		}
		events = events[:0]
		for _, it := range batch {
			events = append(events, it.ev)
		}
		// The commit is waited for even when the broker stops: a message
		// handed to the buffer is stored or refused, never half.
		err := w.h.emit(context.WithoutCancel(w.h.ctx), events...)
		w.done(batch, err)
		idle.Reset(workerIdle)
	}
}

// retire removes an idle worker, unless a message is on its way.
func (w *worker) retire() bool {
	w.h.mu.Lock()
	defer w.h.mu.Unlock()
	if len(w.in) > 0 || w.senders > 0 {
		return false
	}
	delete(w.h.clients, w.id)
	return true
}

// done acknowledges a stored batch, or refuses it.
func (w *worker) done(batch []item, err error) {
	b, srv := w.h.b, w.h.srv
	if err != nil {
		b.refused.Add(uint64(len(batch)))
		b.log.Warn("the buffer refused messages; the device gets no success and will send them again", "client", w.id, "count", len(batch), "err", err)
		code := packets.ErrUnspecifiedError
		if errors.Is(err, buffer.ErrFull) {
			code = packets.ErrQuotaExceeded
		}
		var gone *mqtt.Client
		for _, it := range batch {
			if it.cl.Properties.ProtocolVersion == 5 {
				if it.pk.FixedHeader.Qos > 0 {
					_ = it.cl.WritePacket(ack(it.pk, code))
				}
				continue
			}
			// 3.1.1 has no reason codes: no PUBACK, and a disconnect, so
			// the device sends it again when it reconnects.
			if it.cl != gone {
				gone = it.cl
				_ = srv.DisconnectClient(it.cl, packets.ErrServerBusy)
			}
		}
		return
	}
	for _, it := range batch {
		pk, cl := it.pk, it.cl
		switch pk.FixedHeader.Qos {
		case 2:
			// PUBREL finds it in flight, and mochi answers PUBCOMP.
			rec := ack(pk, packets.CodeSuccess)
			if cl.State.Inflight.Set(rec) {
				atomic.AddInt64(&srv.Info.Inflight, 1) // as mochi counts its own
			}
			_ = cl.WritePacket(rec)
		case 1:
			_ = cl.WritePacket(ack(pk, packets.CodeSuccess))
		}
		b.committed.Add(1)
		if pk.FixedHeader.Qos > 0 {
			// Local subscribers get it now (a QoS 0 message mochi
			// delivered itself).
			_ = srv.Publish(pk.TopicName, pk.Payload, pk.FixedHeader.Retain, pk.FixedHeader.Qos)
		}
	}
}

// ack is the PUBACK (QoS 1) or PUBREC (QoS 2) of pk with code.
func ack(pk packets.Packet, code packets.Code) packets.Packet {
	t := byte(packets.Puback)
	if pk.FixedHeader.Qos == 2 {
		t = packets.Pubrec
	}
	a := packets.Packet{FixedHeader: packets.FixedHeader{Type: t}, PacketID: pk.PacketID, ReasonCode: code.Code, Created: time.Now().Unix()}
	if code.Code >= packets.ErrUnspecifiedError.Code {
		a.Properties.ReasonString = code.Reason
	}
	return a
}

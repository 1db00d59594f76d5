package mqttbroker

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/event"
	"github.com/edgegw/edgegw/gateway/mqttroute"
)

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
		routed = routed || mqttroute.Match(r.Topic, pk.TopicName)
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
		// The worker's delivery to local subscribers (or mqtt.publish's):
		// from the device that sent it, for its subscriptions' no local.
		if pk.Connect.ClientIdentifier != "" {
			pk.Origin, pk.Connect.ClientIdentifier = pk.Connect.ClientIdentifier, ""
		}
		return pk, nil
	}
	e, err := mqttroute.Route(h.b.o.Routes, h.b.o.MaxPayload, "server/"+cl.ID, mqttroute.Message{
		Topic: pk.TopicName, Payload: pk.Payload, QoS: pk.FixedHeader.Qos, Dup: pk.FixedHeader.Dup, ID: pk.PacketID, MQTT: propertiesOf(pk),
	}, time.Now())
	switch {
	case errors.Is(err, mqttroute.ErrNoRoute):
		h.b.local.Add(1)
		return pk, nil
	case err != nil:
		if errors.Is(err, mqttroute.ErrTooLarge) {
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
	var acks ackWriter
	for _, it := range batch {
		pk, cl := it.pk, it.cl
		if pk.FixedHeader.Qos > 0 {
			// Local subscribers get it (and a retained one is kept)
			// before the device hears it is stored; a QoS 0 message mochi
			// delivered itself.
			w.h.deliver(it)
		}
		switch pk.FixedHeader.Qos {
		case 2:
			// PUBREL finds it in flight, and mochi answers PUBCOMP.
			rec := ack(pk, packets.CodeSuccess)
			if cl.State.Inflight.Set(rec) {
				atomic.AddInt64(&srv.Info.Inflight, 1) // as mochi counts its own
			}
			acks.add(srv, cl, rec)
		case 1:
			acks.add(srv, cl, ack(pk, packets.CodeSuccess))
		}
		b.committed.Add(1)
	}
	acks.flush(srv)
}

// An ackWriter sends a commit's PUBACKs and PUBRECs to each device in one
// write, not one write (a system call) each as mochi's WritePacket does:
// they are a tenth of the embedded path's CPU otherwise (see
// docs/benchmarks.md). It takes the client's lock as WritePacket does, so
// its bytes never interleave with mochi's packets.
type ackWriter struct {
	cl  *mqtt.Client
	buf bytes.Buffer
	n   int64 // packets in buf
}

func (a *ackWriter) add(srv *mqtt.Server, cl *mqtt.Client, pk packets.Packet) {
	if cl != a.cl {
		a.flush(srv)
		a.cl = cl
	}
	pk.ProtocolVersion = cl.Properties.ProtocolVersion
	var err error
	if pk.FixedHeader.Type == packets.Pubrec {
		err = pk.PubrecEncode(&a.buf)
	} else {
		err = pk.PubackEncode(&a.buf)
	}
	if err == nil {
		a.n++
	}
}

func (a *ackWriter) flush(srv *mqtt.Server) {
	cl := a.cl
	if cl == nil || a.n == 0 || cl.Closed() || cl.Net.Conn == nil {
		a.buf.Reset()
		a.n = 0
		return
	}
	cl.Lock()
	n, _ := a.buf.WriteTo(cl.Net.Conn) // a failed write: mochi sees the connection end
	cl.Unlock()
	atomic.AddInt64(&srv.Info.BytesSent, n)
	atomic.AddInt64(&srv.Info.PacketsSent, a.n)
	a.buf.Reset()
	a.n = 0
}

// deliver hands a stored message to local subscribers as mochi would have
// (mochi was told to do nothing with it): its MQTT 5 properties, retain
// flag and QoS kept, its expiry counted down by the time it waited for
// the commit, and from the device that sent it, so a subscription with
// no local skips it (OnPublish sets the origin from the carrier field).
func (h *ingest) deliver(it item) {
	inline, ok := h.srv.Clients.Get(mqtt.InlineClientId)
	if !ok {
		return
	}
	pk := it.pk
	pk.FixedHeader.Dup = false
	pk.Properties.TopicAlias, pk.Properties.TopicAliasFlag = 0, false // resolved on the way in
	if exp := pk.Properties.MessageExpiryInterval; exp > 0 {
		waited := uint32(time.Since(it.ev.Time) / time.Second)
		if waited >= exp {
			return // expired while it was being stored
		}
		pk.Properties.MessageExpiryInterval = exp - waited
	}
	pk.Connect.ClientIdentifier = it.cl.ID
	_ = h.srv.InjectPacket(inline, pk)
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

// propertiesOf is what of pk's MQTT 5 properties goes upstream with its
// event: content type, payload format, expiry and user properties (nil
// when it has none of them).
func propertiesOf(pk packets.Packet) *event.Properties {
	pp := &pk.Properties
	if pp.ContentType == "" && !pp.PayloadFormatFlag && pp.MessageExpiryInterval == 0 && len(pp.User) == 0 {
		return nil
	}
	p := &event.Properties{
		ContentType:      pp.ContentType,
		PayloadFormat:    min(pp.PayloadFormat, 1), // past 1 is malformed: taken as UTF-8
		PayloadFormatSet: pp.PayloadFormatFlag,
		Expiry:           time.Duration(pp.MessageExpiryInterval) * time.Second,
	}
	if len(pp.User) > 0 {
		p.User = make([]event.UserProperty, len(pp.User))
		for i, u := range pp.User {
			p.User[i] = event.UserProperty{Key: u.Key, Value: u.Val}
		}
	}
	return p
}

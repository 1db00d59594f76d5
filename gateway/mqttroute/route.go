// Package mqttroute maps an MQTT message to an event: which subscription
// routes its topic, to which subject and lane, with which redelivery
// mark. The MQTT client source and the embedded broker share it.
package mqttroute

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/edgegw/edgegw/gateway/event"
	"github.com/edgegw/edgegw/gateway/subject"
)

// DefaultMaxPayload is the payload size limit when Options.MaxPayload is 0.
const DefaultMaxPayload = 256 << 10

// Subscription is one topic filter and where its messages go.
type Subscription struct {
	Topic   string // an MQTT topic filter, e.g. sensors/#
	QoS     byte   // 0, 1 or 2
	Subject *subject.Template
	// Retained forwards the retained copies the broker sends when the
	// subscription is made (on every start and reconnect), marked as
	// retained. Without it they are acknowledged and skipped: a retained
	// copy is the broker's last known value, not a new reading.
	Retained bool
	// Priority and TTL are its events' lane in the buffer.
	Priority int
	TTL      time.Duration
}

// A Message is what routing needs of an MQTT PUBLISH, received by the
// source from a broker or by the embedded broker from a device.
type Message struct {
	Topic    string
	Payload  []byte
	QoS      byte
	Retained bool // a retained copy sent because of a subscription
	Dup      bool // the sender says this may be a copy it sent before
	ID       uint16
	// MQTT is the MQTT 5 properties kept with the event (nil: none).
	MQTT *event.Properties
}

// Errors of Route: the message is not stored.
var (
	ErrTooLarge = errors.New("payload over mqtt.max_payload")
	ErrNoRoute  = errors.New("no subscription matches the topic")
	// ErrRetained: a retained copy sent because of the subscription, which
	// the subscription does not ask for. MQTT 3.1.1 §3.3.1.3: the broker
	// sets RETAIN only on a message sent because a subscription was made;
	// a message published while subscribed arrives with it clear,
	// retained or not, so live readings are never skipped.
	ErrRetained = errors.New("retained copy on subscribe")
)

// Route maps m to an event by the first subscription whose filter matches
// its topic: its subject, priority and TTL. A QoS 1 or 2 message gets a
// redelivery mark in slot session (the client id of the MQTT session it
// came in) and its packet id, so a copy sent again after a crash is not
// stored twice. An error wrapping ErrTooLarge, ErrNoRoute or ErrRetained,
// or a subject that cannot be made, means it is not stored.
func Route(subs []Subscription, maxPayload int, session string, m Message, now time.Time) (event.Event, error) {
	if n := len(m.Payload); n > maxPayload {
		return event.Event{}, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, n, maxPayload)
	}
	var sub *Subscription
	for i := range subs {
		if Match(subs[i].Topic, m.Topic) {
			sub = &subs[i]
			break
		}
	}
	if sub == nil {
		return event.Event{}, ErrNoRoute
	}
	if m.Retained && !sub.Retained {
		return event.Event{}, ErrRetained
	}
	subj, err := sub.Subject.Subject(m.Topic)
	if err != nil {
		return event.Event{}, err
	}
	e := event.Event{Subject: subj, Source: m.Topic, Time: now, Payload: m.Payload, Retained: m.Retained, Priority: sub.Priority, TTL: sub.TTL, MQTT: m.MQTT}
	if m.QoS > 0 {
		h := sha256.New()
		h.Write([]byte(m.Topic))
		h.Write([]byte{0, m.QoS})
		h.Write(m.Payload)
		if m.MQTT != nil {
			// Another message under a reused id may differ only in its
			// properties; the expiry is left out (a resend counts it down).
			p := *m.MQTT
			p.Expiry = 0
			h.Write(p.AppendTo(nil))
		}
		e.Once = &event.Once{
			Group:       "mqtt/" + session,
			Slot:        "mqtt/" + session + "/" + string([]byte{byte(m.ID >> 8), byte(m.ID)}),
			Token:       string(h.Sum(nil)[:16]),
			Redelivered: m.Dup,
		}
	}
	return e, nil
}

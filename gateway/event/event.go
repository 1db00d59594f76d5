// Package event defines the reading that flows through every stage of the
// gateway: sources produce it, the buffer stores its encoding, the forwarder
// publishes it. It is a leaf package: it imports nothing of edgegw, so every
// other package may import it.
package event

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// Event is one reading.
type Event struct {
	// Subject is the NATS subject the event is published to.
	Subject string
	// Source names where the reading came from: the MQTT topic or the
	// sensor's name.
	Source string
	// Time is when the reading was taken (not when it was forwarded).
	Time time.Time
	// Payload is the reading, byte for byte as it was ingested.
	Payload []byte
	// Retained marks an MQTT retained message: the broker's last known
	// value, delivered because of a subscription, not a new reading.
	Retained bool
	// Once, if set, lets the buffer drop a redelivered copy of an event it
	// already committed. It is not part of the encoding.
	Once *Once
	// Priority (0 highest, 9 lowest) and TTL (0: none) choose the lane the
	// buffer keeps the event in: its route's. They are not part of the
	// encoding (the lane is where it is stored).
	Priority int
	TTL      time.Duration
	// MQTT holds the MQTT 5 properties the message came with that go
	// upstream (nil: none, as for every sensor reading and MQTT 3.1.1).
	MQTT *Properties
}

// Properties are the MQTT 5 PUBLISH properties kept with an event: stored
// in its encoding, sent upstream as headers.
type Properties struct {
	ContentType string
	// PayloadFormat is the payload format indicator as sent (0: bytes,
	// 1: UTF-8), when PayloadFormatSet.
	PayloadFormat    byte
	PayloadFormatSet bool
	// Expiry is the message expiry interval counted from the event's
	// Time (0: none). An event past it is not sent.
	Expiry time.Duration
	// User is the user properties in the order sent; names may repeat.
	User []UserProperty
}

// UserProperty is one MQTT 5 user property.
type UserProperty struct{ Key, Value string }

// Expired says whether e had an MQTT message expiry that has passed at
// now; shift corrects e.Time as its record's clock correction does.
func (e *Event) Expired(now time.Time, shift time.Duration) bool {
	return e.MQTT != nil && e.MQTT.Expiry > 0 && !e.Time.IsZero() && !now.Before(e.Time.Add(shift+e.MQTT.Expiry))
}

// Once identifies a message whose transport may deliver it again: MQTT
// redelivers an unacknowledged QoS 1 message after a reconnect, with the
// same packet id and the DUP flag set. The buffer remembers the last Token
// committed in each Slot, in the same transaction as the event.
type Once struct {
	Group       string // e.g. the source and the MQTT client's session
	Slot        string // e.g. the Group and the MQTT packet id
	Token       string // e.g. a hash of the topic and payload
	Redelivered bool   // the transport says this may be a copy (DUP)
}

// EmitFunc hands events to the buffer, in order. It returns once they are
// durably committed (or dropped as redelivered copies); while it blocks,
// the source is pushed back on. An error means none of them was stored.
type EmitFunc func(ctx context.Context, events ...Event) error

// A Source produces events until ctx is done; Run returns nil on a clean
// shutdown.
type Source interface {
	Name() string
	Run(ctx context.Context, emit EmitFunc) error
}

// The first byte of every encoded event: v1 has no flags; v2 has a flags
// byte after it. Marshal writes v1 whenever the flags are all clear, so
// what older versions wrote and what they can read stays the same.
const (
	encodingV1 = 1
	encodingV2 = 2

	flagRetained = 1 << 0
	flagMQTT     = 1 << 1 // MQTT 5 properties follow the time
)

// MaxFieldLen bounds Subject and Source. NATS subjects and MQTT topics are
// far shorter in practice; the bound keeps a corrupt length from allocating.
const MaxFieldLen = 64 << 10

// ErrMalformed is returned (wrapped) by Unmarshal for bytes that are not an
// encoded event.
var ErrMalformed = errors.New("malformed event encoding")

// Marshal appends the binary encoding of e to dst.
//
// Layout: version byte (2 followed by a flags byte when a flag is set),
// uvarint len + subject, uvarint len + source,
// varint unix nanoseconds (0 for a zero time), with flagMQTT the
// properties (see appendProperties), then the payload to the end.
func (e *Event) Marshal(dst []byte) ([]byte, error) {
	if len(e.Subject) > MaxFieldLen {
		return dst, fmt.Errorf("event: subject is %d bytes, more than %d", len(e.Subject), MaxFieldLen)
	}
	if len(e.Source) > MaxFieldLen {
		return dst, fmt.Errorf("event: source is %d bytes, more than %d", len(e.Source), MaxFieldLen)
	}
	var ns int64
	if !e.Time.IsZero() {
		ns = e.Time.UnixNano()
	}
	var flags byte
	if e.Retained {
		flags |= flagRetained
	}
	if e.MQTT != nil {
		if err := e.MQTT.check(); err != nil {
			return dst, err
		}
		flags |= flagMQTT
	}
	if flags != 0 {
		dst = append(dst, encodingV2, flags)
	} else {
		dst = append(dst, encodingV1)
	}
	dst = appendField(dst, e.Subject)
	dst = appendField(dst, e.Source)
	dst = binary.AppendVarint(dst, ns)
	if e.MQTT != nil {
		dst = e.MQTT.AppendTo(dst)
	}
	dst = append(dst, e.Payload...)
	return dst, nil
}

func appendField(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func (p *Properties) check() error {
	if len(p.ContentType) > MaxFieldLen {
		return fmt.Errorf("event: content type is %d bytes, more than %d", len(p.ContentType), MaxFieldLen)
	}
	if p.PayloadFormat > 1 || p.Expiry < 0 {
		return fmt.Errorf("event: payload format %d or expiry %s out of range", p.PayloadFormat, p.Expiry)
	}
	for _, u := range p.User {
		if len(u.Key) > MaxFieldLen || len(u.Value) > MaxFieldLen {
			return fmt.Errorf("event: a user property of %d+%d bytes, more than %d each", len(u.Key), len(u.Value), MaxFieldLen)
		}
	}
	return nil
}

// AppendTo appends the properties' encoding: uvarint len + content type, a byte for the
// payload format (0: not given, 1 + the indicator), uvarint expiry in
// milliseconds, uvarint count of user properties, each as uvarint len +
// name, uvarint len + value.
func (p *Properties) AppendTo(dst []byte) []byte {
	dst = appendField(dst, p.ContentType)
	pf := byte(0)
	if p.PayloadFormatSet {
		pf = 1 + p.PayloadFormat
	}
	dst = append(dst, pf)
	dst = binary.AppendUvarint(dst, uint64(p.Expiry/time.Millisecond))
	dst = binary.AppendUvarint(dst, uint64(len(p.User)))
	for _, u := range p.User {
		dst = appendField(dst, u.Key)
		dst = appendField(dst, u.Value)
	}
	return dst
}

func readProperties(b []byte) (*Properties, []byte, error) {
	var p Properties
	var err error
	if p.ContentType, b, err = field(b, "content type"); err != nil {
		return nil, nil, err
	}
	if len(b) == 0 || b[0] > 2 {
		return nil, nil, fmt.Errorf("%w: bad payload format", ErrMalformed)
	}
	p.PayloadFormatSet, p.PayloadFormat = b[0] > 0, max(b[0], 1)-1
	b = b[1:]
	ms, n := binary.Uvarint(b)
	if n <= 0 || ms > uint64(math.MaxInt64/time.Millisecond) {
		return nil, nil, fmt.Errorf("%w: bad expiry", ErrMalformed)
	}
	p.Expiry, b = time.Duration(ms)*time.Millisecond, b[n:]
	count, n := binary.Uvarint(b)
	if n <= 0 || count > uint64(len(b)-n)/2 { // each takes two bytes at least
		return nil, nil, fmt.Errorf("%w: bad user property count", ErrMalformed)
	}
	b = b[n:]
	if count > 0 {
		p.User = make([]UserProperty, count)
	}
	for i := range p.User {
		if p.User[i].Key, b, err = field(b, "user property name"); err != nil {
			return nil, nil, err
		}
		if p.User[i].Value, b, err = field(b, "user property value"); err != nil {
			return nil, nil, err
		}
	}
	return &p, b, nil
}

// Unmarshal decodes b into e. e.Payload aliases b; copy b first if it is
// only valid for a while (as bbolt values are).
func (e *Event) Unmarshal(b []byte) error {
	if len(b) == 0 {
		return fmt.Errorf("%w: empty", ErrMalformed)
	}
	var flags byte
	switch b[0] {
	case encodingV1:
		b = b[1:]
	case encodingV2:
		if len(b) < 2 || b[1]&^(flagRetained|flagMQTT) != 0 {
			return fmt.Errorf("%w: bad flags", ErrMalformed)
		}
		flags, b = b[1], b[2:]
	default:
		return fmt.Errorf("%w: version byte %d, want %d or %d", ErrMalformed, b[0], encodingV1, encodingV2)
	}
	subject, b, err := field(b, "subject")
	if err != nil {
		return err
	}
	source, b, err := field(b, "source")
	if err != nil {
		return err
	}
	ns, n := binary.Varint(b)
	if n <= 0 {
		return fmt.Errorf("%w: bad time", ErrMalformed)
	}
	b = b[n:]
	var props *Properties
	if flags&flagMQTT != 0 {
		if props, b, err = readProperties(b); err != nil {
			return err
		}
	}
	*e = Event{Subject: subject, Source: source, Payload: b, Retained: flags&flagRetained != 0, MQTT: props}
	if ns != 0 {
		e.Time = time.Unix(0, ns)
	}
	return nil
}

func field(b []byte, name string) (string, []byte, error) {
	l, n := binary.Uvarint(b)
	if n <= 0 {
		return "", nil, fmt.Errorf("%w: bad %s length", ErrMalformed, name)
	}
	b = b[n:]
	if l > MaxFieldLen || l > uint64(len(b)) {
		return "", nil, fmt.Errorf("%w: %s length %d out of range", ErrMalformed, name, l)
	}
	return string(b[:l]), b[l:], nil
}

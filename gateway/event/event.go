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
// varint unix nanoseconds (0 for a zero time), then the payload to the end.
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
	if e.Retained {
		dst = append(dst, encodingV2, flagRetained)
	} else {
		dst = append(dst, encodingV1)
	}
	dst = binary.AppendUvarint(dst, uint64(len(e.Subject)))
	dst = append(dst, e.Subject...)
	dst = binary.AppendUvarint(dst, uint64(len(e.Source)))
	dst = append(dst, e.Source...)
	dst = binary.AppendVarint(dst, ns)
	dst = append(dst, e.Payload...)
	return dst, nil
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
		if len(b) < 2 || b[1]&^flagRetained != 0 {
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
	*e = Event{Subject: subject, Source: source, Payload: b, Retained: flags&flagRetained != 0}
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

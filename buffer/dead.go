package buffer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The dead-letter lane holds events that can never be stored in the queue
// proper (one event larger than MaxBytes) or never be accepted upstream (a
// message the stream refuses for good, bytes that no longer decode). They
// are set aside there, in the same file, so that nothing behind them is
// blocked and nothing vanishes unseen: an operator lists, exports and drops
// them (edgegw buffer dead-letters). The lane has its own bound,
// Options.DeadMaxBytes; past it the oldest dead letters are dropped and
// counted.

var (
	bucketDead = []byte("dead")

	keyDeadNext    = []byte("dead_next")
	keyDeadEvents  = []byte("dead_events")
	keyDeadBytes   = []byte("dead_bytes")
	keyDeadTotal   = []byte("dead_total")
	keyDeadDropped = []byte("dead_dropped")
)

// ErrNotHeld is returned by SetAside for a seq the queue no longer holds
// (acknowledged, or dropped by a limit).
var ErrNotHeld = errors.New("buffer: event not held")

// A DeadLetter is an event set aside.
type DeadLetter struct {
	ID     uint64    // its key in the lane, increasing
	Seq    uint64    // its seq in the queue; 0 if it was never stored there
	Time   time.Time // when it was set aside
	Reason string    // why, in words
	Size   int       // bytes of the event
	// Data is the event as it was stored; nil when it was larger than the
	// lane holds (then only its size and reason are kept).
	Data []byte
}

// deadOp is a change to the lane, done by the writer in a transaction.
type deadOp struct {
	seq    uint64 // set aside the event seq (copied from the queue)
	data   []byte // or store these bytes (never stored in the queue)
	reason string
	drop   bool // or drop every dead letter with ID <= dropTo
	dropTo uint64
	count  int // result: letters dropped
}

// SetAside copies the event seq into the dead-letter lane with reason, and
// returns once that is committed. The event itself stays in the queue until
// it is acknowledged like any other: the caller (the forwarder) acks past
// it afterwards.
func (q *Queue) SetAside(ctx context.Context, seq uint64, reason string) error {
	return q.deadOp(ctx, &deadOp{seq: seq, reason: reason})
}

// AppendDead stores data, which could not be appended to the queue (larger
// than MaxBytes), straight into the dead-letter lane with reason.
func (q *Queue) AppendDead(ctx context.Context, data []byte, reason string) error {
	return q.deadOp(ctx, &deadOp{data: data, reason: reason})
}

// DropDead deletes the dead letters with ID <= upTo and says how many.
func (q *Queue) DropDead(ctx context.Context, upTo uint64) (int, error) {
	op := &deadOp{drop: true, dropTo: upTo}
	err := q.deadOp(ctx, op)
	return op.count, err
}

func (q *Queue) deadOp(ctx context.Context, op *deadOp) error {
	r := &appendReq{dead: op, done: make(chan struct{})}
	if err := q.hand(ctx, r); err != nil {
		return err
	}
	return r.err
}

// DeadLetters returns up to limit dead letters with ID >= from, oldest
// first.
func (q *Queue) DeadLetters(from uint64, limit int) ([]DeadLetter, error) {
	if q.isClosed() {
		return nil, ErrClosed
	}
	var out []DeadLetter
	err := q.db.View(func(tx *bolt.Tx) error {
		var err error
		out, err = readDead(tx, from, limit)
		return err
	})
	return out, err
}

func readDead(tx *bolt.Tx, from uint64, limit int) ([]DeadLetter, error) {
	b := tx.Bucket(bucketDead)
	if b == nil {
		return nil, nil
	}
	var out []DeadLetter
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], from)
	c := b.Cursor()
	for k, v := c.Seek(key[:]); k != nil && len(out) < limit; k, v = c.Next() {
		d, err := decodeDead(k, v)
		if err != nil {
			return out, err
		}
		out = append(out, d)
	}
	return out, nil
}

// A dead letter's value: set-aside time (8), seq (8), size (4), reason
// length (2), reason, data (absent when it did not fit the lane).
const deadHeader = 8 + 8 + 4 + 2

func encodeDead(d DeadLetter) []byte {
	v := make([]byte, 0, deadHeader+len(d.Reason)+len(d.Data))
	v = binary.BigEndian.AppendUint64(v, uint64(d.Time.UnixNano()))
	v = binary.BigEndian.AppendUint64(v, d.Seq)
	v = binary.BigEndian.AppendUint32(v, uint32(d.Size))
	v = binary.BigEndian.AppendUint16(v, uint16(len(d.Reason)))
	v = append(v, d.Reason...)
	return append(v, d.Data...)
}

func decodeDead(k, v []byte) (DeadLetter, error) {
	if len(k) != 8 || len(v) < deadHeader {
		return DeadLetter{}, corruptf("bad dead letter at key %x", k)
	}
	n := int(binary.BigEndian.Uint16(v[20:]))
	if len(v) < deadHeader+n {
		return DeadLetter{}, corruptf("bad dead letter at key %x", k)
	}
	d := DeadLetter{
		ID:     binary.BigEndian.Uint64(k),
		Time:   time.Unix(0, int64(binary.BigEndian.Uint64(v))),
		Seq:    binary.BigEndian.Uint64(v[8:]),
		Size:   int(binary.BigEndian.Uint32(v[16:])),
		Reason: string(v[deadHeader : deadHeader+n]),
	}
	if data := v[deadHeader+n:]; len(data) > 0 {
		d.Data = append([]byte(nil), data...)
	}
	return d, nil
}

// applyDead runs op in tx, updating st.
func (q *Queue) applyDead(tx *bolt.Tx, op *deadOp, st *state, now time.Time) error {
	b, err := tx.CreateBucketIfNotExists(bucketDead)
	if err != nil {
		return err
	}
	c := b.Cursor()
	if op.drop {
		for k, v := c.First(); k != nil && binary.BigEndian.Uint64(k) <= op.dropTo; k, v = c.First() {
			st.deadBytes -= int64(len(v))
			st.deadEvents--
			op.count++
			if err := c.Delete(); err != nil {
				return err
			}
		}
		return nil
	}
	d := DeadLetter{Seq: op.seq, Time: now, Reason: op.reason, Data: op.data}
	if len(d.Reason) > 1024 {
		d.Reason = d.Reason[:1024]
	}
	if op.seq != 0 {
		var v []byte
		for _, l := range st.lanes {
			if b := tx.Bucket(l.lane.bucket()); b != nil && l.events > 0 {
				if v = b.Get(seqKey(op.seq)); v != nil {
					break
				}
			}
		}
		if len(v) < headerSize {
			return fmt.Errorf("%w: seq %d", ErrNotHeld, op.seq)
		}
		d.Data = valueData(v)
	}
	d.Size = len(d.Data)
	if int64(d.Size) > q.opts.DeadMaxBytes/2 {
		d.Data = nil // too large to keep: its size and reason are
	}
	v := encodeDead(d)
	for st.deadBytes+int64(len(v)) > q.opts.DeadMaxBytes && st.deadEvents > 0 {
		_, old := c.First()
		st.deadBytes -= int64(len(old))
		st.deadEvents--
		st.deadDropped++
		if err := c.Delete(); err != nil {
			return err
		}
	}
	st.deadNext++
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], st.deadNext)
	if err := b.Put(key[:], v); err != nil {
		return err
	}
	st.deadEvents++
	st.deadBytes += int64(len(v))
	st.deadTotal++
	return nil
}

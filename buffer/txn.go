package buffer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// txn is one transaction's work on the lanes: the state it moves, and
// how many deletes it may still do.
type txn struct {
	q        *Queue
	tx       *bolt.Tx
	st       state
	now      Stamp
	boots    boots
	cur      uint32 // this boot's number
	budget   int
	rejected uint64
	cursor   []byte // an ack op's cursor, reached in this transaction
	hdr      []byte // the header of every event this transaction appends
	slab     []byte // bbolt keeps value slices until commit: no reuse
	buckets  map[Lane]*bolt.Bucket
	marks    *markTxn
}

// Why an event leaves a lane.
type reason int

const (
	byAck reason = iota
	byFull
	byAge
	byTTL
)

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(make([]byte, 0, 8), seq) }

// bucket returns lane l's bucket, created if needed.
func (t *txn) bucket(l Lane) (*bolt.Bucket, error) {
	if b := t.buckets[l]; b != nil {
		return b, nil
	}
	b, err := t.tx.CreateBucketIfNotExists(l.bucket())
	if err != nil {
		return nil, err
	}
	b.FillPercent = 1.0 // keys only ever grow: pack pages full
	if t.buckets == nil {
		t.buckets = map[Lane]*bolt.Bucket{}
	}
	t.buckets[l] = b
	return b, nil
}

// del deletes the event under c (seq, value v) of lane i and counts it
// for why. When it was the head, the lane's head becomes a lower bound
// (seq+1) until fixHead finds the next event: deleting many in a row
// costs one seek each, not two.
func (t *txn) del(i int, c *bolt.Cursor, seq uint64, v []byte, why reason) error {
	if err := c.Delete(); err != nil {
		return err
	}
	ls := &t.st.lanes[i]
	ls.events--
	ls.bytes -= int64(len(valueData(v))) + recordOverhead
	t.budget--
	switch why {
	case byAck:
		ls.acked++
		t.st.acked++
	case byFull:
		ls.droppedFull++
		t.st.droppedFull++
	case byAge:
		ls.droppedAge++
		t.st.droppedAge++
	case byTTL:
		ls.droppedTTL++
		t.st.droppedTTL++
	}
	if seq == ls.head {
		ls.head, ls.headLoose = seq+1, true
	}
	return nil
}

// fixHead makes lane i's head and oldest exact after deletes.
func (t *txn) fixHead(i int, c *bolt.Cursor) error {
	ls := &t.st.lanes[i]
	if !ls.headLoose {
		return nil
	}
	ls.headLoose = false
	// Seek, not First: First would walk every leaf emptied in this
	// transaction again, which is quadratic in a large ack.
	k, v := c.Seek(seqKey(ls.head))
	if k == nil {
		if ls.events != 0 {
			return corruptf("%s counts %d events but holds none", ls.lane, ls.events)
		}
		ls.head, ls.oldest = 0, header{}
		return nil
	}
	h, ok := readHeader(v)
	if len(k) != 8 || !ok {
		return corruptf("bad record at key %x in %s", k, ls.lane)
	}
	ls.head, ls.oldest = binary.BigEndian.Uint64(k), h
	return nil
}

// expired says why the event with header h of lane i is past its lane's
// limit, if it is.
func (t *txn) expired(i int, h header) (reason, bool) {
	limit, ttl := t.q.limitOf(t.st.lanes[i].lane)
	if limit <= 0 {
		return 0, false
	}
	if age, known := t.boots.age(h, t.now, t.cur); !known || age <= limit {
		return 0, false
	}
	if ttl {
		return byTTL, true
	}
	return byAge, true
}

// applyAcks applies ops in order, within the budget, and returns how many
// it applied whole (a cut op is applied again whole by the next
// transaction: deleting what is gone is nothing).
func (t *txn) applyAcks(ops []ackOp) (done int, err error) {
	for _, op := range ops {
		if t.budget <= 0 {
			return done, nil
		}
		switch {
		case op.cursor != nil:
			t.cursor = op.cursor
		case op.all:
			for i := range t.st.lanes {
				if err := t.deleteRange(i, 0, op.to); err != nil {
					return done, err
				}
			}
		case op.any:
			for i := range t.st.lanes {
				if err := t.deleteRange(i, op.from, op.to); err != nil {
					return done, err
				}
			}
		default:
			if i := t.st.lanes.find(op.lane); i >= 0 {
				if err := t.deleteRange(i, op.from, op.to); err != nil {
					return done, err
				}
			}
		}
		if t.budget < 0 {
			return done, nil
		}
		done++
	}
	return done, nil
}

// deleteRange deletes the events of lane i with from <= seq <= to, up to
// the budget (then t.budget goes below 0). Events past the lane's limit
// count as expired, the rest as acknowledged.
func (t *txn) deleteRange(i int, from, to uint64) (err error) {
	ls := &t.st.lanes[i]
	if ls.events == 0 || to < ls.head {
		return nil
	}
	b, err := t.bucket(ls.lane)
	if err != nil {
		return err
	}
	c := b.Cursor()
	defer func() {
		if ferr := t.fixHead(i, c); err == nil {
			err = ferr
		}
	}()
	for k, v := c.Seek(seqKey(max(from, ls.head))); k != nil; k, v = c.Seek(seqKey(binary.BigEndian.Uint64(k) + 1)) {
		seq := binary.BigEndian.Uint64(k)
		if seq > to {
			return nil
		}
		if t.budget <= 0 {
			t.budget = -1
			return nil
		}
		h, ok := readHeader(v)
		if len(k) != 8 || !ok {
			return corruptf("bad record at key %x in %s", k, ls.lane)
		}
		why, exp := t.expired(i, h)
		if !exp {
			why = byAck
		}
		if err := t.del(i, c, seq, v, why); err != nil {
			return err
		}
	}
	return nil
}

// expire deletes events past their lane's TTL or MaxAge (up to the budget)
// and reports whether some are left. With dry, it deletes nothing and
// reports whether there is anything to delete.
//
// It reads only what it deletes, plus one event per lane, plus one per
// stretch of events whose age is unknown: a lane is in seq order, so in
// append order; within one boot the first event not expired ends the
// search, and a boot whose ages are unknown is stepped over to the first
// seq of the next.
func (t *txn) expire(dry bool) (more bool, err error) {
	for i := range t.st.lanes {
		ls := &t.st.lanes[i]
		if limit, _ := t.q.limitOf(ls.lane); limit <= 0 || ls.events == 0 {
			continue
		}
		b := t.tx.Bucket(ls.lane.bucket())
		if b == nil {
			continue
		}
		c := b.Cursor()
		more, err := t.expireLane(i, c, dry)
		if ferr := t.fixHead(i, c); err == nil {
			err = ferr
		}
		if more || err != nil {
			return more, err
		}
	}
	return false, nil
}

// expireLane is expire for lane i.
func (t *txn) expireLane(i int, c *bolt.Cursor, dry bool) (more bool, err error) {
	ls := &t.st.lanes[i]
	for k, v := c.Seek(seqKey(ls.head)); k != nil; {
		seq := binary.BigEndian.Uint64(k)
		h, ok := readHeader(v)
		if len(k) != 8 || !ok {
			return false, corruptf("bad record at key %x in %s", k, ls.lane)
		}
		if _, known := t.boots.age(h, t.now, t.cur); !known {
			nf := t.boots.nextFirst(h.boot)
			if nf <= seq {
				break
			}
			k, v = c.Seek(seqKey(nf))
			continue
		}
		why, exp := t.expired(i, h)
		if !exp {
			break
		}
		if dry || t.budget <= 0 {
			return true, nil
		}
		if err := t.del(i, c, seq, v, why); err != nil {
			return false, err
		}
		k, v = c.Seek(seqKey(seq + 1))
	}
	return false, nil
}

// apply runs one request: a dead-letter change, or an append. A refusal
// (ErrTooLarge, ErrFull, ErrNotHeld) is the request's error; an error
// returned fails the whole transaction.
func (t *txn) apply(r *appendReq) error {
	r.err = nil
	if r.dead != nil {
		if err := t.q.applyDead(t.tx, r.dead, &t.st, time.Unix(0, t.now.Wall.UnixNano())); errors.Is(err, ErrNotHeld) {
			r.err = err
		} else if err != nil {
			return err
		}
		return nil
	}
	if len(r.data) == 0 {
		return nil
	}
	if r.marks != nil {
		r.seqs = make([]uint64, len(r.data))
	}
	skip := func(i int) bool {
		m := r.marks[i]
		return m != nil && m.SkipIfSame && bytes.Equal(t.marks.token(m.Slot), m.Token)
	}
	var size int64
	for i, d := range r.data {
		if r.marks != nil && skip(i) {
			continue
		}
		size += int64(len(d)) + recordOverhead
	}
	if ok, err := t.makeRoom(r, size); !ok || err != nil {
		return err
	}
	r.first = t.st.next
	for i, d := range r.data {
		if r.marks != nil {
			if skip(i) {
				continue // a copy of an event already stored
			}
			if m := r.marks[i]; m != nil {
				if err := t.marks.put(t.tx, m); err != nil {
					return err
				}
			}
			r.seqs[i] = t.st.next
		}
		l := DefaultLane
		if r.lanes != nil {
			l = r.lanes[i]
		}
		if err := t.put(l, d); err != nil {
			return err
		}
	}
	return nil
}

// makeRoom applies MaxBytes to an append of size bytes: it refuses it
// (r.err, false) or drops the oldest events of the lowest priority lane
// to fit it, so priority 0 is dropped last.
func (t *txn) makeRoom(r *appendReq, size int64) (bool, error) {
	limit := t.q.opts.MaxBytes
	if limit <= 0 {
		return true, nil
	}
	if size > limit {
		r.err = fmt.Errorf("%w: %d bytes, max_bytes is %d", ErrTooLarge, size, limit)
		return false, nil
	}
	_, held := t.st.events()
	if held+size > limit && t.q.opts.WhenFull == Reject {
		r.err = ErrFull
		t.rejected += uint64(len(r.data))
		return false, nil
	}
	for held+size > limit {
		i := t.st.lanes.victim()
		if i < 0 {
			break
		}
		ls := &t.st.lanes[i]
		b, err := t.bucket(ls.lane)
		if err != nil {
			return false, err
		}
		c := b.Cursor()
		k, v := c.Seek(seqKey(ls.head))
		if k == nil || len(v) < headerSize {
			return false, corruptf("%s counts %d events but holds none from seq %d", ls.lane, ls.events, ls.head)
		}
		held -= int64(len(valueData(v))) + recordOverhead
		if err := t.del(i, c, binary.BigEndian.Uint64(k), v, byFull); err != nil {
			return false, err
		}
		if err := t.fixHead(i, c); err != nil {
			return false, err
		}
	}
	return true, nil
}

// victim is the lane drop_oldest takes from: the lowest priority that
// holds events and, among lanes of that priority, the oldest head.
func (ls lanes) victim() int {
	v := -1
	for i := len(ls) - 1; i >= 0; i-- {
		if ls[i].events == 0 {
			continue
		}
		if v >= 0 && ls[i].lane.Priority != ls[v].lane.Priority {
			break
		}
		if v < 0 || ls[i].head < ls[v].head {
			v = i
		}
	}
	return v
}

// put stores d as the next event, in lane l.
func (t *txn) put(l Lane, d []byte) error {
	b, err := t.bucket(l)
	if err != nil {
		return err
	}
	var i int
	if i = t.st.lanes.find(l); i < 0 {
		t.st.lanes, i = t.st.lanes.add(l)
	}
	if cap(t.slab)-len(t.slab) < 8+headerSize+sumSize+len(d) {
		t.slab = make([]byte, 0, max(16<<10, 8+headerSize+sumSize+len(d)))
	}
	t.slab = binary.BigEndian.AppendUint64(t.slab, t.st.next)
	key := t.slab[len(t.slab)-8 : len(t.slab) : len(t.slab)]
	off := len(t.slab)
	t.slab = append(t.slab, t.hdr...)
	t.slab = binary.BigEndian.AppendUint32(t.slab, sum(key, t.hdr, d))
	t.slab = append(t.slab, d...)
	if err := b.Put(key, t.slab[off:len(t.slab):len(t.slab)]); err != nil {
		return err
	}
	ls := &t.st.lanes[i]
	if ls.events == 0 {
		ls.head, ls.oldest = t.st.next, t.header()
	}
	ls.events++
	ls.bytes += int64(len(d)) + recordOverhead
	t.st.next++
	t.st.appended++
	return nil
}

func (t *txn) header() header {
	return header{wall: t.now.Wall.UnixNano(), since: t.now.Since, boot: t.cur, synced: t.now.Synced, summed: true}
}

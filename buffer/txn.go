package buffer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// txn is one transaction's work on the events: the state it moves, and
// how many deletes it may still do.
type txn struct {
	q        *Queue
	tx       *bolt.Tx
	events   *bolt.Bucket
	st       state
	now      time.Time
	budget   int
	rejected uint64
	slab     []byte // bbolt keeps value slices until commit: no reuse
}

// deleteAcked deletes acknowledged events (up to the budget) and reports
// whether some are left for another transaction.
func (t *txn) deleteAcked(ackTo uint64) (more bool, err error) {
	c := t.events.Cursor()
	for t.st.first <= ackTo && t.st.first < t.st.next && t.budget > 0 {
		if err := deleteFirst(c, &t.st); err != nil {
			return false, err
		}
		t.st.acked++
		t.budget--
	}
	if err := refreshOldest(c, &t.st); err != nil {
		return false, err
	}
	return t.st.first <= ackTo && t.st.first < t.st.next, nil
}

// expire deletes events older than MaxAge (up to the budget) and reports
// whether some are left.
func (t *txn) expire() (more bool, err error) {
	if t.q.opts.MaxAge <= 0 {
		return false, nil
	}
	c := t.events.Cursor()
	cutoff := t.now.Add(-t.q.opts.MaxAge)
	for t.st.first < t.st.next && t.budget > 0 && t.st.oldest.Before(cutoff) {
		if err := deleteFirst(c, &t.st); err != nil {
			return false, err
		}
		if err := refreshOldest(c, &t.st); err != nil {
			return false, err
		}
		t.st.droppedAge++
		t.budget--
	}
	return t.st.first < t.st.next && t.st.oldest.Before(cutoff), nil
}

// apply runs one request: a dead-letter change, or an append. A refusal
// (ErrTooLarge, ErrFull, ErrNotHeld) is the request's error; an error
// returned fails the whole transaction.
func (t *txn) apply(r *appendReq) error {
	r.err = nil
	if r.dead != nil {
		if err := t.q.applyDead(t.tx, r.dead, &t.st, t.now); errors.Is(err, ErrNotHeld) {
			r.err = err
		} else if err != nil {
			return err
		}
		return nil
	}
	if len(r.data) == 0 {
		return nil
	}
	var marks *bolt.Bucket
	if r.marks != nil {
		var err error
		if marks, err = t.tx.CreateBucketIfNotExists(bucketMarks); err != nil {
			return err
		}
		r.seqs = make([]uint64, len(r.data))
	}
	skip := func(i int) bool {
		m := r.marks[i]
		return m != nil && m.SkipIfSame && bytes.Equal(marks.Get(m.Slot), m.Token)
	}
	var size int64
	for i, d := range r.data {
		if marks != nil && skip(i) {
			continue
		}
		size += int64(len(d)) + recordOverhead
	}
	if ok, err := t.makeRoom(r, size); !ok || err != nil {
		return err
	}
	r.first = t.st.next
	for i, d := range r.data {
		if marks != nil {
			if skip(i) {
				continue // a copy of an event already stored
			}
			if m := r.marks[i]; m != nil {
				if err := marks.Put(m.Slot, append([]byte(nil), m.Token...)); err != nil {
					return err
				}
			}
			r.seqs[i] = t.st.next
		}
		if err := t.put(d); err != nil {
			return err
		}
	}
	return nil
}

// makeRoom applies MaxBytes to an append of size bytes: it refuses it
// (r.err, false) or drops the oldest events to fit it.
func (t *txn) makeRoom(r *appendReq, size int64) (bool, error) {
	limit := t.q.opts.MaxBytes
	if limit <= 0 {
		return true, nil
	}
	if size > limit {
		r.err = fmt.Errorf("%w: %d bytes, max_bytes is %d", ErrTooLarge, size, limit)
		return false, nil
	}
	if t.st.bytes+size > limit && t.q.opts.WhenFull == Reject {
		r.err = ErrFull
		t.rejected += uint64(len(r.data))
		return false, nil
	}
	dc := t.events.Cursor()
	for t.st.bytes+size > limit && t.st.first < t.st.next {
		if err := deleteFirst(dc, &t.st); err != nil {
			return false, err
		}
		t.st.droppedFull++
	}
	return true, refreshOldest(dc, &t.st)
}

// put stores d as the next event.
func (t *txn) put(d []byte) error {
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], t.st.next)
	if cap(t.slab)-len(t.slab) < 8+len(d) {
		t.slab = make([]byte, 0, max(64<<10, 8+len(d)))
	}
	off := len(t.slab)
	t.slab = binary.BigEndian.AppendUint64(t.slab, uint64(t.now.UnixNano()))
	t.slab = append(t.slab, d...)
	if err := t.events.Put(key[:], t.slab[off:len(t.slab):len(t.slab)]); err != nil {
		return err
	}
	if t.st.first == t.st.next {
		t.st.oldest = t.now
	}
	t.st.next++
	t.st.bytes += int64(len(d)) + recordOverhead
	t.st.appended++
	return nil
}

// deleteFirst deletes the oldest event through c and advances st past it;
// st.oldest is left for refreshOldest. It seeks by key: First would walk
// over every leaf already emptied in this transaction (they are only
// removed at commit), which is quadratic in a large ack.
func deleteFirst(c *bolt.Cursor, st *state) error {
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], st.first)
	k, v := c.Seek(key[:])
	if len(k) != 8 || binary.BigEndian.Uint64(k) != st.first || len(v) < 8 {
		return corruptf("oldest event is not seq %d (first %d, next %d)", st.first, st.first, st.next)
	}
	st.bytes -= int64(len(v)) - 8 + recordOverhead
	if err := c.Delete(); err != nil {
		return err
	}
	st.first++
	return nil
}

// refreshOldest sets st.oldest from the oldest event held.
func refreshOldest(c *bolt.Cursor, st *state) error {
	st.oldest = time.Time{}
	if st.first == st.next {
		return nil
	}
	var key [8]byte
	binary.BigEndian.PutUint64(key[:], st.first)
	k, v := c.Seek(key[:])
	if len(k) != 8 || binary.BigEndian.Uint64(k) != st.first || len(v) < 8 {
		return corruptf("oldest event %d missing or short", st.first)
	}
	st.oldest = time.Unix(0, int64(binary.BigEndian.Uint64(v)))
	return nil
}

func (q *Queue) writeMeta(meta *bolt.Bucket, st *state) error {
	for _, kv := range []struct {
		k []byte
		v uint64
	}{
		{keyNext, st.next},
		{keyBytes, uint64(st.bytes)},
		{keyAppended, st.appended},
		{keyAcked, st.acked},
		{keyDroppedFull, st.droppedFull},
		{keyDroppedAge, st.droppedAge},
		{keyDeadNext, st.deadNext},
		{keyDeadEvents, st.deadEvents},
		{keyDeadBytes, uint64(st.deadBytes)},
		{keyDeadTotal, st.deadTotal},
		{keyDeadDropped, st.deadDropped},
	} {
		if err := putUint(meta, kv.k, kv.v); err != nil {
			return err
		}
	}
	return nil
}

// writeError names the usual causes of a failed commit.
func writeError(path string, err error) error {
	switch {
	case errors.Is(err, syscall.ENOSPC):
		return fmt.Errorf("buffer: commit to %s: disk full: %w (free space on the volume or lower buffer.max_bytes)", path, err)
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("buffer: commit to %s: file system is read-only: %w", path, err)
	case errors.Is(err, syscall.EIO):
		return fmt.Errorf("buffer: commit to %s: I/O error, the storage may be failing: %w", path, err)
	}
	return fmt.Errorf("buffer: commit to %s: %w", path, err)
}

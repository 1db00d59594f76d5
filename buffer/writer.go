package buffer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// writer is the only goroutine that writes to the file. It owns every
// bbolt read-write transaction; Close stops it and waits for it.
func (q *Queue) writer() {
	defer close(q.done)
	var tick <-chan time.Time
	if q.opts.MaxAge > 0 {
		t := time.NewTicker(expiryInterval(q.opts.MaxAge))
		defer t.Stop()
		tick = t.C
	}
	batch := make([]*appendReq, 0, 64)
	q.releasePages() // what Open's checks and bbolt's freelist scan touched
	lastRelease := time.Now()
	// Natural batching alone alternates big and small transactions: when a
	// commit ends, its appenders wake one by one and the first to come back
	// would start the next commit nearly alone. So the writer lingers a
	// little (a quarter of the last commit's time at most) until as many
	// appends are waiting as the last transaction held.
	var lastReqs int
	var lastDur time.Duration
	// Acks alone are committed once ackBatch are pending or ackDelay after
	// the first, so a forwarder acking as PubAcks arrive does not cost an
	// fsync each time (appends commit pending acks with them anyway).
	var ackTimer *time.Timer
	var ackC <-chan time.Time
	defer func() {
		if ackTimer != nil {
			ackTimer.Stop()
		}
	}()
	for {
		batch = batch[:0]
		select {
		case r := <-q.reqs:
			batch = append(batch, r)
		case <-q.wake:
			if !q.acksDue() {
				if ackC == nil {
					ackTimer = time.NewTimer(ackDelay)
					ackC = ackTimer.C
				}
				continue
			}
		case <-ackC:
			ackC = nil
		case <-tick:
		case <-q.quit:
			q.drainOnQuit(batch)
			return
		}
		if len(batch) > 0 {
			batch = q.collect(batch, lastReqs, min(lastDur/4, 2*time.Millisecond))
		}
		if len(batch) == 0 && !q.hasWork() {
			continue
		}
		if ackC != nil {
			ackTimer.Stop()
			ackC = nil
		}
		start := time.Now()
		more := q.commit(batch)
		lastReqs, lastDur = len(batch), time.Since(start)
		if start.Sub(lastRelease) >= releaseEvery {
			q.releasePages()
			lastRelease = start
		}
		if more {
			select {
			case q.wake <- struct{}{}:
			default:
			}
		}
	}
}

// collect adds every append already waiting, up to MaxBatch events, and
// while fewer than target appends are in, yields the processor to let more
// arrive, for up to linger.
func (q *Queue) collect(batch []*appendReq, target int, linger time.Duration) []*appendReq {
	n := 0
	for _, r := range batch {
		n += len(r.data)
	}
	var deadline time.Time
	for n < q.opts.MaxBatch {
		select {
		case r := <-q.reqs:
			batch = append(batch, r)
			n += len(r.data)
			continue
		default:
		}
		if len(batch) >= target || linger <= 0 {
			return batch
		}
		// Yielding rather than blocking on the channel: a blocked writer
		// would be woken once per arriving append.
		if deadline.IsZero() {
			deadline = time.Now().Add(linger)
		} else if time.Now().After(deadline) {
			return batch
		}
		runtime.Gosched()
	}
	return batch
}

// drainOnQuit commits the appends that were handed over before Close, and
// all pending acks.
func (q *Queue) drainOnQuit(batch []*appendReq) {
	for {
		batch = q.collect(batch[:0], 0, 0)
		if len(batch) == 0 && !q.hasWork() {
			return
		}
		q.commit(batch)
	}
}

// acksDue reports whether enough acks are pending to commit them alone.
func (q *Queue) acksDue() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.ackTo >= q.st.first && q.ackTo-q.st.first+1 >= ackBatch
}

// hasWork reports whether acks or expiry are waiting for a transaction.
func (q *Queue) hasWork() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.st.first == q.st.next {
		return false
	}
	if q.ackTo >= q.st.first {
		return true
	}
	return q.opts.MaxAge > 0 && time.Since(q.st.oldest) > q.opts.MaxAge
}

func expiryInterval(maxAge time.Duration) time.Duration {
	d := maxAge / 20
	return min(max(d, 10*time.Millisecond), time.Minute)
}

// commit runs one transaction: pending acks, expiry, then the appends in
// order. It reports whether deletions are left for another transaction.
func (q *Queue) commit(batch []*appendReq) (more bool) {
	q.mu.Lock()
	st, ackTo := q.st, q.ackTo
	q.mu.Unlock()

	now := time.Now()
	var rejected uint64
	err := q.update(func(tx *bolt.Tx) error {
		t := &txn{q: q, tx: tx, events: tx.Bucket(bucketEvents), st: st, now: now, budget: maxDeletesPerTx}
		t.events.FillPercent = 1.0 // keys only ever grow: pack pages full
		acks, err := t.deleteAcked(ackTo)
		if err != nil {
			return err
		}
		expiry, err := t.expire()
		if err != nil {
			return err
		}
		more = acks || expiry
		for _, r := range batch { // appends, in the order they arrived
			if err := t.apply(r); err != nil {
				return err
			}
		}
		if err := q.writeMeta(tx.Bucket(bucketMeta), &t.st); err != nil {
			return err
		}
		st, rejected = t.st, t.rejected
		// Readers may see these events as soon as bbolt commits, before
		// q.st is updated below: let Ack accept them from now on.
		q.mu.Lock()
		q.horizon = st.next
		q.mu.Unlock()
		return nil
	})
	if err != nil {
		q.failed(batch, err)
		return false
	}
	if q.opts.OnCommit != nil {
		q.opts.OnCommit(time.Since(now))
	}

	q.mu.Lock()
	grew := st.next != q.st.next
	q.st = st
	q.commitErr, q.commitErrSince = "", time.Time{}
	q.rejected += rejected
	if grew {
		close(q.changed)
		q.changed = make(chan struct{})
	}
	q.mu.Unlock()
	for _, r := range batch {
		close(r.done)
	}
	return more
}

// failed tells every request of a failed transaction, and keeps the
// failure for Stats until a commit works.
func (q *Queue) failed(batch []*appendReq, err error) {
	q.mu.Lock()
	q.horizon = q.st.next
	q.ackTo = min(q.ackTo, q.st.next-1) // nothing beyond was ever visible
	q.mu.Unlock()
	err = writeError(q.path, err)
	q.mu.Lock()
	if q.commitErr == "" {
		q.commitErrSince = time.Now()
	}
	q.commitErr = err.Error()
	q.mu.Unlock()
	for _, r := range batch {
		r.err, r.first = err, 0
		close(r.done)
	}
}

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

// update runs fn in a read-write transaction. bbolt panics on pages it
// cannot make sense of (storage that corrupted them at rest); the panic is
// turned into an error for the appenders, the transaction is rolled back by
// bbolt, and the file stays marked as not cleanly shut down so the next Open
// walks it and moves it aside.
func (q *Queue) update(fn func(*bolt.Tx) error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = corruptf("the file is damaged (%v); restart edgegw to move it aside and start a fresh buffer", r)
		}
	}()
	return q.db.Update(fn)
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

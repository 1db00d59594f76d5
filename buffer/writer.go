package buffer

import (
	"encoding/binary"
	"runtime"
	"runtime/debug"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// writer is the only goroutine that writes to the file. It owns every
// bbolt read-write transaction; Close stops it and waits for it.
// A linger is the writer's memory of its last commits. Natural batching
// alone alternates big and small transactions: when a commit ends, its
// appenders wake one by one and the first to come back would start the
// next commit nearly alone. So the writer lingers a little (a quarter of
// the last commit's time at most) until as many appends are waiting as
// the last transactions held.
type linger struct {
	recent [8]int // appends of the last commits: the most is the target
	n      int
	target int
	dur    time.Duration // the last commit's
}

func (l *linger) note(reqs int, dur time.Duration) {
	l.recent[l.n%len(l.recent)] = reqs
	l.n++
	l.target, l.dur = slices.Max(l.recent[:]), dur
}

func (q *Queue) writer() {
	defer close(q.done)
	// The sweep of expired events runs every twentieth of the shortest
	// limit in use (10ms to a minute): never "every 30 minutes whatever
	// the TTL".
	sweepEvery := q.sweepInterval()
	sweep := time.NewTimer(sweepEvery)
	defer sweep.Stop()
	batch := make([]*appendReq, 0, 64)
	q.releasePages() // what Open's checks and bbolt's freelist scan touched
	lastRelease := time.Now()
	var lg linger
	gather := gatherer{delay: q.opts.CommitDelay}
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
		case <-q.kick:
			batch = q.take(batch)
		case <-q.wake:
			if !q.acksDue() {
				if ackC == nil {
					ackTimer = time.NewTimer(q.opts.AckDelay)
					ackC = ackTimer.C
				}
				continue
			}
		case <-ackC:
			ackC = nil
		case <-sweep.C:
			sweepEvery = q.sweepInterval()
			sweep.Reset(sweepEvery)
		case <-q.quit:
			q.drainOnQuit(batch)
			return
		}
		if len(batch) > 0 {
			batch = q.collect(batch, lg.target, min(lg.dur/4, 2*time.Millisecond))
			batch = q.gather(&gather, batch)
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
		gather.committed(start, batch)
		lg.note(len(batch), time.Since(start))
		if d := q.sweepInterval(); d < sweepEvery { // a lane with a shorter limit
			sweepEvery = d
			sweep.Reset(d)
		}
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

// take moves the requests handed over to batch, up to MaxBatch events
// in all (the first always), and kicks the writer again for any left.
func (q *Queue) take(batch []*appendReq) []*appendReq {
	n := 0
	for _, r := range batch {
		n += len(r.data)
	}
	q.pendMu.Lock()
	i := 0
	for ; i < len(q.pend) && (n < q.opts.MaxBatch || len(batch) == 0); i++ {
		batch = append(batch, q.pend[i])
		n += len(q.pend[i].data)
	}
	clear(q.pend[:i])
	q.pend = append(q.pend[:0], q.pend[i:]...)
	left := len(q.pend) > 0
	q.pendMu.Unlock()
	if left {
		select {
		case q.kick <- struct{}{}:
		default:
		}
	}
	return batch
}

// collect takes what is waiting and, while fewer than target requests
// are in, yields the processor to let more arrive, for up to linger.
func (q *Queue) collect(batch []*appendReq, target int, linger time.Duration) []*appendReq {
	var deadline time.Time
	for {
		batch = q.take(batch)
		if len(batch) >= target || linger <= 0 || q.batchFull(batch) {
			return batch
		}
		// Yielding rather than blocking: a blocked writer would be woken
		// once per arriving append.
		if deadline.IsZero() {
			deadline = time.Now().Add(linger)
		} else if time.Now().After(deadline) {
			return batch
		}
		runtime.Gosched()
	}
}

// drainOnQuit commits the appends that were handed over before Close, and
// all pending acks; nothing is handed over after it starts.
func (q *Queue) drainOnQuit(batch []*appendReq) {
	q.pendMu.Lock()
	q.closing = true
	q.pendMu.Unlock()
	for {
		batch = q.take(batch[:0])
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
	return q.ackEvents >= ackBatch
}

// hasWork reports whether acks or expired events are waiting for a
// transaction.
func (q *Queue) hasWork() bool {
	q.mu.Lock()
	work := len(q.acks) > 0
	st, bs := q.st.clone(), q.boots
	q.mu.Unlock()
	if work {
		return true
	}
	limited := false
	for _, l := range st.lanes {
		if d, _ := q.limitOf(l.lane); d > 0 && l.events > 0 {
			limited = true
		}
	}
	if !limited {
		return false
	}
	var due bool
	_ = q.db.View(func(tx *bolt.Tx) error {
		t := &txn{q: q, tx: tx, st: st, now: q.clock.Now(), boots: bs, cur: bs[len(bs)-1].n}
		due, _ = t.expire(true)
		return nil
	})
	return due
}

// sweepInterval is how often the writer looks for expired events: a
// twentieth of the shortest limit of a lane that holds events, from 10ms
// to a minute.
func (q *Queue) sweepInterval() time.Duration {
	d := time.Duration(0)
	q.mu.Lock()
	for _, l := range q.st.lanes {
		if lim, _ := q.limitOf(l.lane); lim > 0 && (d == 0 || lim < d) {
			d = lim
		}
	}
	q.mu.Unlock()
	if d == 0 {
		return time.Minute
	}
	return min(max(d/20, 10*time.Millisecond), time.Minute)
}

// commit runs one transaction: pending acks, expiry, then the appends in
// order. It reports whether deletions are left for another transaction.
func (q *Queue) commit(batch []*appendReq) (more bool) {
	q.mu.Lock()
	st, bs, dirty := q.st.clone(), q.boots, q.bootDirty
	ops := q.acks[:len(q.acks):len(q.acks)]
	q.mu.Unlock()

	now, start := q.clock.Now(), time.Now()
	var rejected uint64
	var acked int
	var cursor []byte
	var marks *markTxn
	err := q.update(func(tx *bolt.Tx) error {
		marks = &markTxn{x: q.marks}
		t := &txn{q: q, tx: tx, st: st, now: now, boots: bs, cur: bs[len(bs)-1].n, budget: maxDeletesPerTx, marks: marks}
		if err := t.syncBoots(dirty); err != nil {
			return err
		}
		t.hdr = t.header().append(nil)
		size := 0
		for _, r := range batch {
			for _, d := range r.data {
				size += 8 + headerSize + sumSize + len(d)
			}
		}
		t.slab = make([]byte, 0, size) // one allocation for every value
		var err error
		if acked, err = t.applyAcks(ops); err != nil {
			return err
		}
		expiry, err := t.expire(false)
		if err != nil {
			return err
		}
		more = acked < len(ops) || expiry
		for _, r := range batch { // appends, in the order they arrived
			if err := t.apply(r); err != nil {
				return err
			}
		}
		if err := marks.trim(tx); err != nil {
			return err
		}
		if err := q.writeMeta(tx.Bucket(bucketMeta), &t.st, t.cursor); err != nil {
			return err
		}
		st, bs, rejected, cursor = t.st, t.boots, t.rejected, t.cursor
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
	marks.done()
	if q.opts.OnCommit != nil {
		q.opts.OnCommit(time.Since(start))
	}

	q.took(st, bs, cursor, acked, rejected)
	for _, r := range batch {
		close(r.done)
	}
	return more
}

// took enters a committed transaction's state: the new state and boots
// table, the cursor, the acks it applied, and the appends it refused.
func (q *Queue) took(st state, bs boots, cursor []byte, acked int, rejected uint64) {
	q.mu.Lock()
	grew := st.next != q.st.next
	q.st = st
	// Unless a reader saw the clock synchronized meanwhile (then the next
	// commit writes it), the file now has this boots table.
	if bs[len(bs)-1].synced || !q.boots[len(q.boots)-1].synced {
		q.boots, q.bootDirty = bs, false
	}
	if cursor != nil {
		q.cursor = cursor
	}
	for _, op := range q.acks[:acked] {
		q.ackEvents -= op.n
	}
	q.acks = q.acks[acked:]
	if len(q.acks) == 0 {
		q.acks, q.ackEvents = nil, 0
	}
	q.commitErr, q.commitErrSince = "", time.Time{}
	q.rejected += rejected
	if grew {
		close(q.changed)
		q.changed = make(chan struct{})
	}
	q.mu.Unlock()
}

// syncBoots enters the first synchronization of this boot's clock in the
// boots table (seen now, or by a reader: dirty), and forgets boots that
// no event held belongs to.
func (t *txn) syncBoots(dirty bool) error {
	cur := t.boots[len(t.boots)-1]
	if t.now.Synced && !cur.synced && t.now.Boot == cur.id {
		cur.offset, cur.synced = time.Duration(t.now.Wall.UnixNano())-t.now.Since, true
		t.boots = append(t.boots[:len(t.boots)-1:len(t.boots)-1], cur)
		dirty = true
	}
	if dirty {
		if err := putBoot(t.tx, cur); err != nil {
			return err
		}
	}
	if len(t.boots) > 1 && t.boots[1].first <= t.st.first() {
		if b := t.tx.Bucket(bucketBoots); b != nil {
			var k [4]byte
			binary.BigEndian.PutUint32(k[:], t.boots[0].n)
			if err := b.Delete(k[:]); err != nil {
				return err
			}
		}
		t.boots = t.boots[1:]
	}
	return nil
}

// failed tells every request of a failed transaction, and keeps the
// failure for Stats until a commit works.
func (q *Queue) failed(batch []*appendReq, err error) {
	q.mu.Lock()
	q.horizon = q.st.next
	// Nothing at or beyond next was ever committed: an ack of it would
	// take the seq the next append reuses.
	q.acks = slices.DeleteFunc(q.acks, func(op ackOp) bool { return op.cursor == nil && op.to >= q.st.next })
	q.ackEvents = 0
	for _, op := range q.acks {
		q.ackEvents += op.n
	}
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
	if err := q.db.Update(fn); err != nil {
		return err
	}
	q.commits.Add(1)
	return nil
}

package buffer

import (
	"runtime"
	"runtime/debug"
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

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
	// Natural batching alone alternates big and small transactions: when a
	// commit ends, its appenders wake one by one and the first to come back
	// would start the next commit nearly alone. So the writer lingers a
	// little (a quarter of the last commit's time at most) until as many
	// appends are waiting as the last transaction held.
	var lastReqs int
	var recent [8]int // appends of the last commits: the most is the target
	var nrecent int
	var lastDur time.Duration
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
			batch = q.collect(batch, lastReqs, min(lastDur/4, 2*time.Millisecond))
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
		recent[nrecent%len(recent)] = len(batch)
		nrecent++
		lastReqs, lastDur = slices.Max(recent[:]), time.Since(start)
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

// A gatherer spaces commits CommitDelay apart (start to start) while
// readings trickle in, so each commit carries several: the wear is per
// commit, not per reading. It does not hold back appenders that wait for
// each commit before they append again (devices that wait for their
// PUBACK): spacing would cap each at one message per delay and gather
// nothing. Three signs tell them: every appender of the last commit is
// back (each mark group it held, and as many unmarked appends: nobody
// else is coming); the last commit carried GatherEvents/2 or more (a
// pipelining appender: its next batch waits for this commit); or
// gatherMisses delays in a row gathered nothing. The writer goroutine
// owns it.
type gatherer struct {
	delay      time.Duration
	start      time.Time       // of the last commit
	lastEvents int             // appended by the last commit
	lastGroups map[string]bool // the mark groups of its appends
	lastAnon   int             // its appends without marks
	misses     int             // delays in a row that gathered nothing
	offUntil   time.Time       // no delays before
}

// gatherMisses and gatherRest: eight delays in a row that gather nothing
// turn delays off for fifty delays. (Readings at random times leave a
// delay empty now and then: at 10/s about one in five; eight in a row,
// one in 400,000.)
const (
	gatherMisses = 8
	gatherRest   = 50
)

// committed notes a commit's start and its appenders.
func (g *gatherer) committed(start time.Time, batch []*appendReq) {
	g.start, g.lastEvents = start, events(batch)
	if g.delay <= 0 {
		return
	}
	clear(g.lastGroups)
	g.lastAnon = 0
	for _, r := range batch {
		anon := len(r.data) > 0
		for _, m := range r.marks {
			if m != nil {
				if g.lastGroups == nil {
					g.lastGroups = map[string]bool{}
				}
				g.lastGroups[string(m.Group)], anon = true, false
			}
		}
		if anon {
			g.lastAnon++
		}
	}
}

// allBack says whether batch holds every appender of the last commit
// again: each of its mark groups, and as many appends without marks.
func (g *gatherer) allBack(batch []*appendReq) bool {
	if g.lastEvents == 0 {
		return false
	}
	anon, groups := 0, 0
	seen := map[string]bool{}
	for _, r := range batch {
		marked := false
		for _, m := range r.marks {
			if m != nil {
				marked = true
				if g.lastGroups[string(m.Group)] && !seen[string(m.Group)] {
					seen[string(m.Group)] = true
					groups++
				}
			}
		}
		if !marked {
			anon++
		}
	}
	return groups == len(g.lastGroups) && anon >= g.lastAnon
}

// gather holds a small batch until CommitDelay after the last commit's
// start, or until GatherEvents events are waiting (or the queue closes).
func (q *Queue) gather(g *gatherer, batch []*appendReq) []*appendReq {
	if g.delay <= 0 || len(batch) == 0 || events(batch) >= GatherEvents {
		return batch
	}
	for _, r := range batch {
		if r.dead != nil || len(r.data) == 0 {
			return batch // a dead letter or a Flush: someone waits for it
		}
	}
	until := g.start.Add(g.delay)
	now := time.Now()
	if !now.Before(until) || now.Before(g.offUntil) || g.lastEvents >= GatherEvents/2 || g.allBack(batch) {
		return batch
	}
	n := events(batch)
	t := time.NewTimer(until.Sub(now))
	defer t.Stop()
	for events(batch) < GatherEvents && !g.allBack(batch) {
		select {
		case <-q.kick:
			batch = q.take(batch)
			continue
		case <-t.C:
			batch = q.take(batch)
		case <-q.quit:
			return batch // drainOnQuit commits the rest
		}
		break
	}
	if events(batch) > n {
		g.misses = 0
	} else if g.misses++; g.misses >= gatherMisses {
		g.misses, g.offUntil = 0, time.Now().Add(gatherRest*g.delay)
	}
	return batch
}

func events(batch []*appendReq) int {
	n := 0
	for _, r := range batch {
		n += len(r.data)
	}
	return n
}

func (q *Queue) batchFull(batch []*appendReq) bool {
	n := 0
	for _, r := range batch {
		n += len(r.data)
	}
	return n >= q.opts.MaxBatch
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
	for _, r := range batch {
		close(r.done)
	}
	return more
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

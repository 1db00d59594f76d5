package buffer

import (
	"os"
	"slices"
	"time"
)

// Stats is a snapshot of the queue.
type Stats struct {
	Events    uint64        // events held
	Bytes     int64         // bytes held (data + 28 per event)
	FirstSeq  uint64        // lowest seq held; NextSeq when empty
	NextSeq   uint64        // seq the next appended event gets
	Oldest    time.Time     // append time of the oldest event; zero when empty
	OldestAge time.Duration // its age when Stats was taken
	FileBytes int64         // size of the file on disk

	// Written is what this queue has written to its file since Open:
	// the pages of each commit and its meta page (what a 4 KiB-block
	// device receives; the file system's journal is not counted), in
	// Commits commits.
	Written int64
	Commits uint64
	// AppendedSinceOpen is what Written is per: events appended since Open.
	AppendedSinceOpen uint64

	// Lanes holds a snapshot of each lane that holds events or has ever
	// counted any, by priority.
	Lanes []LaneStats

	// Totals over the life of the file (they survive restarts).
	Appended    uint64
	Acked       uint64
	DroppedFull uint64 // dropped by drop_oldest at max_bytes
	DroppedAge  uint64 // dropped at max_age
	DroppedTTL  uint64 // dropped at their lane's TTL
	Rejected    uint64 // events refused with ErrFull since Open

	// The dead-letter lane: events set aside (see SetAside).
	DeadEvents  uint64 // held now
	DeadBytes   int64  // bytes held now
	DeadTotal   uint64 // ever set aside
	DeadDropped uint64 // dropped at DeadMaxBytes

	// CommitError is why the last commit failed (a full disk, an I/O
	// error), since CommitErrorSince; empty once a commit works again.
	CommitError      string
	CommitErrorSince time.Time

	// Quarantined counts buffer files found damaged and moved aside at
	// Open over the life of this file and its predecessors; LastQuarantine
	// says the last one in words (where it went, why, what was salvaged).
	Quarantined    uint64
	LastQuarantine string

	// ClockSynced says the wall clock is synchronized now.
	ClockSynced bool
}

// noteSync enters the current boot's clock offset, in memory, the first
// time a stamp says the clock is synchronized; the next commit writes it.
// q.mu is held.
func (q *Queue) noteSync(now Stamp) {
	cur := &q.boots[len(q.boots)-1]
	if now.Synced && !cur.synced && now.Boot == cur.id {
		q.boots = slices.Clone(q.boots)
		cur = &q.boots[len(q.boots)-1]
		cur.offset, cur.synced = time.Duration(now.Wall.UnixNano())-now.Since, true
		q.bootDirty = true
	}
}

// Stats returns a snapshot of the queue.
func (q *Queue) Stats() Stats {
	now := q.clock.Now()
	q.mu.Lock()
	q.noteSync(now)
	st, bs, rejected := q.st.clone(), q.boots, q.rejected
	s := st.stats(bs, now, q.opts)
	s.Rejected, s.AppendedSinceOpen = rejected, st.appended-q.appended0
	s.CommitError, s.CommitErrorSince = q.commitErr, q.commitErrSince
	q.mu.Unlock()
	if fi, err := os.Stat(q.path); err == nil {
		s.FileBytes = fi.Size()
	}
	s.Commits = q.commits.Load()
	dbs := q.db.Stats()
	s.Written = dbs.TxStats.GetPageAlloc() + int64(s.Commits)*int64(q.pageSize)
	return s
}

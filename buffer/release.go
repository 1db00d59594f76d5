package buffer

import (
	"time"

	bolt "go.etcd.io/bbolt"
)

// releaseEvery is how often the writer drops the file's pages from the
// process's page tables (see releasePages).
const releaseEvery = 100 * time.Millisecond

// releasePages drops the file's pages from this process's page tables
// (madvise MADV_DONTNEED on bbolt's read-only shared mapping). They stay in
// the page cache; the next read maps them again with a minor fault, and for
// a shared file mapping it sees exactly the file's contents.
//
// Without it, every page bbolt's freelist scan touched on open and every
// page the forwarder read since counts in the process's resident memory:
// about the whole file (170 MB for a 1M-event backlog). The kernel could
// drop those pages at any time, but an operator watching RSS on a 512 MB
// Pi cannot tell, and a memory limit counts them. With it, RSS holds what
// the last tenth of a second touched.
//
// It runs in a read transaction, which holds bbolt's mmap lock: the
// mapping cannot move or be unmapped meanwhile.
func (q *Queue) releasePages() {
	q.db.View(func(tx *bolt.Tx) error {
		madviseDontNeed(q.db.Info().Data, uintptr(tx.Size()))
		return nil
	})
}

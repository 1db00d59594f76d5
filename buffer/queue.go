// Package buffer is edgegw's durable FIFO queue: every reading is committed
// here (fsync'd in a bbolt transaction) before its source is acknowledged,
// and stays here until the forwarder's upstream has acknowledged it.
//
// Appends from many goroutines are group-committed by one writer goroutine:
// each transaction takes every append that queued up while the previous one
// was committing, so the cost of an fsync is shared without waiting out a
// timer. Readers use their own read transactions and never block appends.
//
// The queue stores bytes and knows nothing of MQTT, NATS or the event type.
package buffer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	bucketEvents = []byte("events") // format 1's only lane
	bucketMeta   = []byte("meta")
	bucketBoots  = []byte("boots")

	keyFormat      = []byte("format")
	keyNext        = []byte("next_seq")
	keyBytes       = []byte("bytes")
	keyAppended    = []byte("appended_total")
	keyAcked       = []byte("acked_total")
	keyDroppedFull = []byte("dropped_full_total")
	keyDroppedAge  = []byte("dropped_age_total")
	keyDroppedTTL  = []byte("dropped_ttl_total")
	keyClean       = []byte("clean_shutdown")
	keyQuarantined = []byte("quarantined_total")
	keyQuarantine  = []byte("last_quarantine")
	keyCursor      = []byte("cursor")
	keySummedFrom  = []byte("summed_from") // the first seq appended with a checksum
)

// formatVersion 3 has a checksum with every event appended since the
// file's summed_from seq; 2 has lanes and stamps. Open takes a format 2
// file to 3 by recording that seq (its events stay as they are), and
// migrates a format 1 file.
const formatVersion = 3

// Record is one stored event.
type Record struct {
	Seq  uint64
	Lane Lane
	// Time is when it was appended, by the wall clock. When the clock was
	// not synchronized then, but was later in the same boot, Time is
	// corrected (the boot's offset plus the boot time at append) and Shift
	// is what was added; when it never was, Unsynced is set and Time is
	// what the clock said.
	Time     time.Time
	Shift    time.Duration
	Unsynced bool
	Data     []byte
	// Damaged, when set, says why the record's bytes cannot be trusted:
	// they fail the checksum stored with them (it wraps ErrChecksum). Its
	// Data is what reads, for the dead-letter lane; set it aside there
	// (SetAside), never deliver it.
	Damaged error
}

// state is what the writer keeps in memory; it mirrors the meta bucket.
type state struct {
	next        uint64
	lanes       lanes
	appended    uint64
	acked       uint64
	droppedFull uint64
	droppedAge  uint64
	droppedTTL  uint64

	deadNext, deadEvents, deadTotal, deadDropped uint64
	deadBytes                                    int64

	quarantined uint64 // read at open; only noteQuarantine changes them
	quarantine  string
}

func (st *state) clone() state {
	c := *st
	c.lanes = st.lanes.clone()
	return c
}

// first is the lowest seq held, next when the queue is empty.
func (st *state) first() uint64 {
	first := st.next
	for _, l := range st.lanes {
		if l.events > 0 {
			first = min(first, l.head)
		}
	}
	return first
}

func (st *state) events() (n uint64, bytes int64) {
	for _, l := range st.lanes {
		n += l.events
		bytes += l.bytes
	}
	return n, bytes
}

type appendReq struct {
	dead  *deadOp // a dead-letter change instead of an append
	data  [][]byte
	lanes []Lane  // nil (DefaultLane), or one per data
	marks []*Mark // nil, or one per data (entries may be nil)
	seqs  []uint64
	first uint64
	err   error
	done  chan struct{}
	at    time.Time // when it was handed to the writer
}

// An ackOp is an acknowledgement waiting for the writer: the events of
// lane with from <= seq <= to; with all, of every lane; with any, the one
// event from in whichever lane holds it. Or, with cursor set, a cursor to
// store once every op before it is applied.
type ackOp struct {
	lane     Lane
	from, to uint64
	all, any bool
	cursor   []byte
	n        int // roughly how many events it acknowledges
}

// Queue is a durable queue of byte records in lanes. It is safe for
// concurrent use.
type Queue struct {
	db    *bolt.DB
	path  string
	opts  Options
	clock Clock
	marks *markIndex // the writer's (and open's): see marks.go

	commits   atomic.Uint64 // since Open: see Stats.Written
	pageSize  int           // the file's, set by open (db.Info races with a remap)
	appended0 uint64        // appended_total at Open; set by load

	quarantine *CorruptError // set by Open, read-only after
	summedFrom uint64        // every event from this seq has a checksum; set by load

	// pend holds the requests handed to the writer and not yet taken;
	// kick tells the writer there are some. Once closing is set nothing
	// more is handed over.
	pendMu  sync.Mutex
	pend    []*appendReq
	closing bool
	kick    chan struct{}

	wake chan struct{} // an ack is waiting to be applied
	quit chan struct{} // closed by Close
	done chan struct{} // closed when the writer has exited

	closeOnce sync.Once
	closeErr  error

	mu        sync.Mutex
	st        state   // committed state
	boots     boots   // the boots table; the last is this boot
	bootDirty bool    // the current boot's offset is not yet in the file
	acks      []ackOp // waiting for the writer, in order
	ackEvents int     // roughly how many events acks holds
	cursor    []byte  // the last committed cursor
	horizon   uint64  // next seq of the newest transaction readers may see
	rejected  uint64
	closed    bool
	// commitErr and commitErrSince: the last commit's failure, until one
	// works.
	commitErr      string
	commitErrSince time.Time
	changed        chan struct{} // closed and replaced after each commit that adds events
}

// noteQuarantine records in the file that a damaged predecessor was moved
// aside, so Stats (and /status) show it after any number of restarts.
func (q *Queue) noteQuarantine(ctx context.Context, note string) error {
	err := q.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		n := getUint(meta, keyQuarantined) + 1
		if err := putUint(meta, keyQuarantined, n); err != nil {
			return err
		}
		if err := meta.Put(keyQuarantine, []byte(note)); err != nil {
			return err
		}
		q.mu.Lock()
		q.st.quarantined, q.st.quarantine = n, note
		q.mu.Unlock()
		return nil
	})
	if err != nil {
		return fmt.Errorf("buffer: record the quarantine in %s: %w", q.path, err)
	}
	return nil
}

// Open opens or creates the buffer file at path and starts its writer.
// It returns a Queue and a nil error, or a nil Queue and an error, as
// bolt.Open does.
//
// A file locked by another process gives ErrLocked after
// Options.LockTimeout. A file that is not a bbolt database, or whose
// contents are corrupt or truncated, is renamed to
// "<path>.corrupt-<UTC timestamp>", a fresh buffer is created in its place
// with every event that could still be read from it, and Open succeeds:
// the queue's Quarantine says what happened (and Stats counts it, in this
// file and its successors), so a caller can log it and carry on.
func Open(path string, opts *Options) (*Queue, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	q, err := open(path, o)
	if err == nil || !errors.Is(err, errCorrupt) {
		return q, err
	}
	aside := fmt.Sprintf("%s.corrupt-%s", path, time.Now().UTC().Format("20060102T150405.000Z"))
	if rerr := os.Rename(path, aside); rerr != nil {
		return nil, fmt.Errorf("buffer: %s is unusable (%v) and could not be moved aside: %w", path, err, rerr)
	}
	// What still reads of the damaged file goes into the fresh one, in
	// order, with seqs after every seq the damaged file may have used.
	// Events that fail their checksum go to the dead-letter lane instead.
	all, next := salvageEvents(aside)
	o.FirstSeq = max(o.FirstSeq, next)
	var recs, damaged []Record
	for _, r := range all {
		if r.Damaged != nil {
			damaged = append(damaged, r)
		} else {
			recs = append(recs, r)
		}
	}
	ce := &CorruptError{Path: path, MovedTo: aside, Err: err, Salvaged: len(recs), Damaged: len(damaged)}
	q, err2 := open(path, o)
	if err2 != nil {
		return nil, fmt.Errorf("buffer: %s was unusable (%v), moved to %s, but a fresh buffer could not be created: %w", path, err, aside, err2)
	}
	ctx := context.Background()
	for _, r := range damaged {
		why := fmt.Sprintf("%v (seq %d of %s, found when it was salvaged)", r.Damaged, r.Seq, aside)
		if err := q.AppendDead(ctx, r.Data, why); err != nil {
			q.Close()
			return nil, fmt.Errorf("buffer: %s was unusable (%v), moved to %s, but its damaged events could not be set aside: %w", path, err, aside, err)
		}
	}
	for len(recs) > 0 {
		n := min(len(recs), o.MaxBatch)
		entries := make([]Entry, n)
		for i := range n {
			entries[i] = Entry{Data: recs[i].Data, Lane: recs[i].Lane}
		}
		if _, err := q.AppendEntries(ctx, entries); err != nil {
			ce.Salvaged -= len(recs)
			break
		}
		recs = recs[n:]
	}
	note := fmt.Sprintf("%s: %s was damaged (%v); moved to %s; %d events salvaged, %d failed their checksum (dead letters)", time.Now().UTC().Format(time.RFC3339), path, err, aside, ce.Salvaged, ce.Damaged)
	if err := q.noteQuarantine(ctx, note); err != nil {
		q.Close()
		return nil, err
	}
	q.quarantine = ce
	return q, nil
}

// Quarantine is the damaged file Open moved aside to open this queue, or
// nil.
func (q *Queue) Quarantine() *CorruptError { return q.quarantine }

func open(path string, o Options) (*Queue, error) {
	if err := verify(path, o); err != nil {
		return nil, err
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:        o.LockTimeout,
		NoFreelistSync: true, // no freelist write per commit; rebuilt on open
		FreelistType:   bolt.FreelistMapType,
		// Options.PageSize: 16 KiB by default (a commit of a few dozen
		// events touches one or two pages instead of four or five); 4 KiB
		// writes less per commit (the gateway's default, for SD cards).
		// An existing file keeps the page size it was created with.
		PageSize: o.PageSize,
	})
	if err != nil {
		return nil, openError(path, err)
	}
	q := &Queue{
		db:       db,
		pageSize: db.Info().PageSize,
		path:     path,
		opts:     o,
		clock:    o.Clock,
		kick:     make(chan struct{}, 1),
		wake:     make(chan struct{}, 1),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
		changed:  make(chan struct{}),
	}
	if q.clock == nil {
		q.clock = SystemClock()
	}
	if err := migrate(db, path); err != nil {
		db.Close()
		return nil, err
	}
	if err := db.Update(q.load); err != nil {
		db.Close()
		if errors.Is(err, errCorrupt) || errors.Is(err, ErrForeign) {
			return nil, err
		}
		return nil, fmt.Errorf("buffer: open %s: %w", path, err)
	}
	q.horizon, q.appended0 = q.st.next, q.st.appended
	go q.writer()
	return q, nil
}

// load reads (or initialises) the meta bucket, enters this boot in the
// boots table, and marks the file in use, so that an unclean shutdown is
// noticed on the next open.
func (q *Queue) load(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		empty := true
		_ = tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
		if !empty {
			return fmt.Errorf("%w: %s has other buckets; point buffer.path at a file of its own", ErrForeign, q.path)
		}
		var err error
		if meta, err = tx.CreateBucket(bucketMeta); err != nil {
			return err
		}
		first := max(q.opts.FirstSeq, 1)
		q.st = state{next: first}
		if err := putUint(meta, keyFormat, formatVersion); err != nil {
			return err
		}
		if err := putUint(meta, keyNext, first); err != nil {
			return err
		}
		if err := putUint(meta, keySummedFrom, first); err != nil {
			return err
		}
		q.summedFrom = first
	} else {
		v := getUint(meta, keyFormat)
		if v != formatVersion && v != 2 {
			return fmt.Errorf("buffer: %s has format %d; this edgegw reads format %d (use the edgegw version that wrote it to drain it)", q.path, v, formatVersion)
		}
		st, err := readState(tx)
		if err != nil {
			return err
		}
		q.st = st
		q.cursor = bytes.Clone(meta.Get(keyCursor))
		if v == 2 {
			// Events appended from now on carry a checksum; those before
			// stay as they were written.
			if err := putUint(meta, keySummedFrom, st.next); err != nil {
				return err
			}
			if err := putUint(meta, keyFormat, formatVersion); err != nil {
				return err
			}
		}
		q.summedFrom = getUint(meta, keySummedFrom)
	}
	bs, err := readBoots(tx)
	if err != nil {
		return err
	}
	now := q.clock.Now()
	if len(bs) == 0 || bs[len(bs)-1].id != now.Boot {
		n := uint32(1)
		if len(bs) > 0 {
			n = bs[len(bs)-1].n + 1
		}
		bs = append(bs, boot{n: n, id: now.Boot, first: q.st.next})
		if err := putBoot(tx, bs[len(bs)-1]); err != nil {
			return err
		}
	}
	q.boots = bs
	if q.marks, err = loadMarks(tx); err != nil {
		return err
	}
	return putUint(meta, keyClean, 0)
}

// Close commits what is pending (appends already handed over and acks),
// marks the file cleanly shut down and closes it. Appends that were not yet
// handed to the writer get ErrClosed.
func (q *Queue) Close() error {
	q.closeOnce.Do(func() {
		close(q.quit)
		<-q.done
		q.mu.Lock()
		q.closed = true
		q.mu.Unlock()
		// The last commit writes the freelist (the others skip it:
		// NoFreelistSync), so the next open reads it instead of walking
		// every page of the file through the mapping — the walk that
		// made the process's lifetime peak RSS the file's size. After a
		// crash there is none, and bbolt walks.
		q.db.NoFreelistSync = false
		err := q.db.Update(func(tx *bolt.Tx) error {
			return putUint(tx.Bucket(bucketMeta), keyClean, 1)
		})
		if cerr := q.db.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			q.closeErr = fmt.Errorf("buffer: close %s: %w", q.path, err)
		}
	})
	return q.closeErr
}

func (q *Queue) isClosed() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.closed
}

package buffer

import (
	"fmt"
	"strconv"
	"time"
)

// Policy says what Append does when the queue is at MaxBytes.
type Policy int

const (
	// DropOldest deletes the oldest events to make room, counting them in
	// Stats.DroppedFull. It suits telemetry, where the newest reading matters
	// most. It is the default.
	DropOldest Policy = iota
	// Reject refuses the append with ErrFull, so the caller can push back
	// (an MQTT source leaves the message unacknowledged at the broker).
	Reject
)

func (p Policy) String() string {
	switch p {
	case DropOldest:
		return "drop_oldest"
	case Reject:
		return "reject"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// ParsePolicy parses the config spelling of a Policy.
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "", "drop_oldest":
		return DropOldest, nil
	case "reject":
		return Reject, nil
	}
	return 0, fmt.Errorf("when_full %q is not drop_oldest or reject", s)
}

// Options configure a Queue. The zero value is valid: no size or age limit,
// drop_oldest, and the defaults below.
type Options struct {
	// MaxBytes bounds the bytes held (each event counts its data plus 16
	// bytes of key and timestamp). 0 means no limit, except on a 32-bit
	// system, where it means MaxBytesLimit(). The file on disk is larger
	// than this by bbolt's page overhead: see docs/buffer.md.
	MaxBytes int64
	// MaxAge drops events older than this (by the time they were appended),
	// counting them in Stats.DroppedAge. 0 means no limit.
	MaxAge time.Duration
	// WhenFull is the policy at MaxBytes.
	WhenFull Policy
	// LockTimeout is how long Open waits for another process to release the
	// file before it returns ErrLocked. Default 2s.
	LockTimeout time.Duration
	// MaxBatch caps the events committed in one transaction. Default 4096.
	MaxBatch int
	// VerifyOnOpen walks every stored event on open, even after a clean
	// shutdown. After an unclean one (power cut, SIGKILL) the walk always
	// happens.
	VerifyOnOpen bool
	// FirstSeq is the seq of the first event of a new file (default 1). The
	// gateway seeds it from the clock, so a buffer that had to be replaced
	// never reuses the seqs of its predecessor upstream.
	FirstSeq uint64
	// DeadMaxBytes bounds the dead-letter lane (events set aside, see
	// SetAside). Past it the oldest dead letters are dropped and counted.
	// Default: MaxBytes/16, at least 1 MiB and at most 64 MiB.
	DeadMaxBytes int64
	// Clock stamps each commit (boot, boot time, wall time, synchronized)
	// for the lanes' TTLs; default SystemClock().
	Clock Clock
	// OnCommit, if set, is called by the writer after each committed
	// transaction with the time bbolt took (write and fsync): the gateway
	// feeds its commit latency histogram with it. It must not block.
	OnCommit func(time.Duration)

	// What decides the bytes written per event (SD card wear: see
	// docs/buffer.md). Every commit writes whole pages, at least a leaf,
	// the meta bucket's leaf and bbolt's meta page, so the page size and
	// the number of commits decide the wear, not the data.
	//
	// PageSize is the page size of a new file (default 16 KiB; a power
	// of two from 4 KiB to 64 KiB). A file keeps the size it was made with.
	PageSize int
	// CommitDelay gathers appends: while they trickle in, commits start
	// at least CommitDelay apart, and one goes as soon as GatherEvents
	// events wait. An append still returns only once committed, so it
	// waits up to CommitDelay. Appenders that wait for each commit before
	// they append again are not held back (see gatherer). 0 (the
	// default): no wait beyond the writer's own short linger.
	CommitDelay time.Duration
	// AckDelay is how long acknowledgements wait for an append's commit to
	// ride with before they get one of their own (default 100ms); 4096
	// waiting acks commit at once. A longer delay folds the deletes of a
	// slow stream into its appends' commits.
	AckDelay time.Duration
}

// GatherEvents is how many waiting events end a CommitDelay at once:
// enough that a commit's pages are shared widely (at 100 readings/s a
// 250 ms delay gathers 25), few enough that many concurrent appenders
// never wait for the delay. A commit of half as many or more means the
// load gathers on its own: the next does not wait.
const GatherEvents = 64

// MaxBytesLimit is the largest MaxBytes this build accepts, 0 for none. A
// 32-bit process (Raspberry Pi OS armhf) has a 3 GiB address space, and
// bbolt maps the whole file: up to 1 GiB it grows the mapping by doubling,
// past that straight to 2 GiB, which a 32-bit process cannot count on.
// 768 MiB of events keeps the file, pages and free pages included, under
// 1 GiB.
func MaxBytesLimit() int64 {
	if strconv.IntSize == 32 {
		return 768 << 20
	}
	return 0
}

const (
	defaultLockTimeout = 2 * time.Second
	defaultMaxBatch    = 4096
	defaultPageSize    = 16 << 10
	// maxDeletesPerTx bounds the work one commit does for acks and expiry,
	// so a huge ack never stalls appends behind one giant transaction.
	maxDeletesPerTx = 50_000
	// ackBatch and ackDelay: see the writer.
	ackBatch = 4096
	ackDelay = 100 * time.Millisecond
	// recordOverhead is what each event costs beyond its data: the 8-byte
	// key and the header (stamp of its commit).
	recordOverhead = 8 + headerSize
)

func (o *Options) withDefaults() (Options, error) {
	var v Options
	if o != nil {
		v = *o
	}
	if v.MaxBytes < 0 {
		return v, fmt.Errorf("buffer: max_bytes %d is negative; use 0 for no limit", v.MaxBytes)
	}
	if limit := MaxBytesLimit(); limit > 0 {
		if v.MaxBytes == 0 {
			v.MaxBytes = limit
		} else if v.MaxBytes > limit {
			return v, fmt.Errorf("buffer: max_bytes %d is more than a 32-bit system can hold: bbolt maps the whole file into memory, and past 1 GiB it needs a 2 GiB mapping that a 32-bit process cannot count on; set max_bytes to %dMiB or less, or run a 64-bit OS", v.MaxBytes, limit>>20)
		}
	}
	if v.MaxAge < 0 {
		return v, fmt.Errorf("buffer: max_age %s is negative; use 0 for no limit", v.MaxAge)
	}
	if v.WhenFull != DropOldest && v.WhenFull != Reject {
		return v, fmt.Errorf("buffer: when_full %s is not drop_oldest or reject", v.WhenFull)
	}
	if v.LockTimeout <= 0 {
		v.LockTimeout = defaultLockTimeout
	}
	if v.DeadMaxBytes <= 0 {
		v.DeadMaxBytes = 64 << 20
		if v.MaxBytes > 0 {
			v.DeadMaxBytes = min(max(v.MaxBytes/16, 1<<20), 64<<20)
		}
	}
	if v.MaxBatch <= 0 {
		v.MaxBatch = defaultMaxBatch
	}
	if v.PageSize == 0 {
		v.PageSize = defaultPageSize
	}
	if v.PageSize < 4<<10 || v.PageSize > 64<<10 || v.PageSize&(v.PageSize-1) != 0 {
		return v, fmt.Errorf("buffer: page_size %d is not a power of two from 4 KiB to 64 KiB", v.PageSize)
	}
	if v.CommitDelay < 0 || v.CommitDelay > 10*time.Second {
		return v, fmt.Errorf("buffer: commit_delay %s is outside 0..10s", v.CommitDelay)
	}
	if v.AckDelay == 0 {
		v.AckDelay = ackDelay
	}
	if v.AckDelay < 0 || v.AckDelay > time.Minute {
		return v, fmt.Errorf("buffer: ack_delay %s is outside 0..1m", v.AckDelay)
	}
	return v, nil
}

package buffer

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A Lane is where an event waits: one bbolt bucket per priority and TTL in
// use, its keys the queue's seqs (one seq space for every lane, so a seq
// names an event in the whole queue). The forwarder drains higher
// priorities first; a lane's TTL drops its events once they are older.
type Lane struct {
	// Priority 0 is the highest, MaxPriority the lowest.
	Priority int
	// TTL drops events older than this, by the rules of Age; 0: never.
	TTL time.Duration
}

const (
	// DefaultPriority is the priority of a route that sets none: the
	// middle, so that any one route can be raised above the rest or
	// lowered below them without touching the others.
	DefaultPriority = 5
	// MaxPriority is the lowest priority.
	MaxPriority = 9
	// MinTTL is the shortest TTL a lane takes.
	MinTTL = time.Second
)

// DefaultLane is where Append puts events.
var DefaultLane = Lane{Priority: DefaultPriority}

func (l Lane) String() string {
	if l.TTL == 0 {
		return fmt.Sprintf("priority %d", l.Priority)
	}
	return fmt.Sprintf("priority %d, ttl %s", l.Priority, l.TTL)
}

func (l Lane) check() error {
	if l.Priority < 0 || l.Priority > MaxPriority {
		return fmt.Errorf("buffer: priority %d is outside 0..%d", l.Priority, MaxPriority)
	}
	if l.TTL != 0 && l.TTL < MinTTL {
		return fmt.Errorf("buffer: ttl %s is under %s", l.TTL, MinTTL)
	}
	return nil
}

const lanePrefix = "lane/"

// bucket is the lane's bucket name, "lane/<priority>/<ttl>".
func (l Lane) bucket() []byte {
	return []byte(lanePrefix + strconv.Itoa(l.Priority) + "/" + l.TTL.String())
}

// parseLane reads a lane's bucket name; ok is false for other buckets.
func parseLane(name []byte) (Lane, bool) {
	rest, ok := bytes.CutPrefix(name, []byte(lanePrefix))
	if !ok {
		return Lane{}, false
	}
	p, t, ok := strings.Cut(string(rest), "/")
	if !ok {
		return Lane{}, false
	}
	pri, err := strconv.Atoi(p)
	if err != nil {
		return Lane{}, false
	}
	ttl, err := time.ParseDuration(t)
	if err != nil {
		return Lane{}, false
	}
	l := Lane{Priority: pri, TTL: ttl}
	return l, l.check() == nil
}

// compareLanes orders lanes by priority, then TTL.
func compareLanes(a, b Lane) int {
	return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.TTL, b.TTL))
}

// laneState is what the writer keeps of one lane; it mirrors the lane's
// key in the meta bucket (the counters) and its bucket (head, tail).
type laneState struct {
	lane      Lane
	head      uint64 // lowest seq held, when events > 0
	headLoose bool   // head is only a lower bound (txn.fixHead)
	events    uint64
	bytes     int64
	oldest    header // of the head event

	acked, droppedFull, droppedAge, droppedTTL uint64
}

// LaneStats is a snapshot of one lane.
type LaneStats struct {
	Lane
	Events    uint64
	Bytes     int64
	FirstSeq  uint64        // seq of its oldest event; 0 when empty
	Oldest    time.Time     // append time of its oldest event (corrected: see Record)
	OldestAge time.Duration // its age: by the boot clock if appended in this boot, else by the wall clock (a guess when it is not known: see Age)

	Acked       uint64
	DroppedFull uint64 // dropped by drop_oldest at max_bytes
	DroppedAge  uint64 // dropped at buffer.max_age
	DroppedTTL  uint64 // dropped at the lane's TTL
}

// meta is a lane's counters in the meta bucket, under its bucket name.
func (ls *laneState) meta() []byte { return ls.appendMeta(make([]byte, 0, 48)) }

func (ls *laneState) appendMeta(v []byte) []byte {
	for _, n := range []uint64{ls.events, uint64(ls.bytes), ls.acked, ls.droppedFull, ls.droppedAge, ls.droppedTTL} {
		v = binary.BigEndian.AppendUint64(v, n)
	}
	return v
}

func (ls *laneState) readMeta(v []byte) {
	if len(v) < 48 {
		return
	}
	n := func(i int) uint64 { return binary.BigEndian.Uint64(v[8*i:]) }
	ls.events, ls.bytes, ls.acked, ls.droppedFull, ls.droppedAge, ls.droppedTTL = n(0), int64(n(1)), n(2), n(3), n(4), n(5)
}

// lanes is the writer's lanes, sorted by compareLanes. It is copied for
// each transaction, so a failed one leaves the committed state untouched.
type lanes []laneState

func (ls lanes) clone() lanes { return slices.Clone(ls) }

// find returns the index of l, or -1.
func (ls lanes) find(l Lane) int {
	i, ok := slices.BinarySearchFunc(ls, l, func(s laneState, l Lane) int { return compareLanes(s.lane, l) })
	if !ok {
		return -1
	}
	return i
}

// add returns ls with l in it, and l's index.
func (ls lanes) add(l Lane) (lanes, int) {
	i, ok := slices.BinarySearchFunc(ls, l, func(s laneState, l Lane) int { return compareLanes(s.lane, l) })
	if ok {
		return ls, i
	}
	return slices.Insert(ls, i, laneState{lane: l}), i
}

// limitOf is the age past which lane l's events are dropped (0: none),
// and whether that is its TTL (else buffer.max_age).
func (q *Queue) limitOf(l Lane) (time.Duration, bool) {
	m := q.opts.MaxAge
	if l.TTL > 0 && (m == 0 || l.TTL <= m) {
		return l.TTL, true
	}
	return m, false
}

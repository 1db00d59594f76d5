package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// readState reads the committed state from the meta bucket and the lanes.
func readState(tx *bolt.Tx) (state, error) {
	meta := tx.Bucket(bucketMeta)
	st := state{
		next:        getUint(meta, keyNext),
		appended:    getUint(meta, keyAppended),
		acked:       getUint(meta, keyAcked),
		droppedFull: getUint(meta, keyDroppedFull),
		droppedAge:  getUint(meta, keyDroppedAge),
		droppedTTL:  getUint(meta, keyDroppedTTL),
		deadNext:    getUint(meta, keyDeadNext),
		deadEvents:  getUint(meta, keyDeadEvents),
		deadBytes:   int64(getUint(meta, keyDeadBytes)),
		deadTotal:   getUint(meta, keyDeadTotal),
		deadDropped: getUint(meta, keyDeadDropped),
		quarantined: getUint(meta, keyQuarantined),
		quarantine:  string(meta.Get(keyQuarantine)),
	}
	if st.next == 0 {
		st.next = 1
	}
	err := tx.ForEach(func(name []byte, b *bolt.Bucket) error {
		l, ok := parseLane(name)
		if !ok {
			return nil
		}
		ls := laneState{lane: l}
		ls.readMeta(meta.Get(name))
		c := b.Cursor()
		k, v := c.First()
		if k == nil {
			ls.events, ls.bytes = 0, 0
		} else {
			h, ok := readHeader(v)
			if len(k) != 8 || !ok {
				return corruptf("bad first record in %s", l)
			}
			ls.head, ls.oldest = binary.BigEndian.Uint64(k), h
			lk, _ := c.Last()
			if last := binary.BigEndian.Uint64(lk); last >= st.next {
				return corruptf("last seq %d of %s not below next seq %d", last, l, st.next)
			}
		}
		st.lanes, _ = st.lanes.add(l)
		st.lanes[st.lanes.find(l)] = ls
		return nil
	})
	return st, err
}

func readBoots(tx *bolt.Tx) (boots, error) {
	b := tx.Bucket(bucketBoots)
	if b == nil {
		return nil, nil
	}
	var bs boots
	err := b.ForEach(func(k, v []byte) error {
		bt, ok := decodeBoot(k, v)
		if !ok {
			return corruptf("bad boots entry %x", k)
		}
		bs = append(bs, bt)
		return nil
	})
	return bs, err
}

func putBoot(tx *bolt.Tx, bt boot) error {
	b, err := tx.CreateBucketIfNotExists(bucketBoots)
	if err != nil {
		return err
	}
	var k [4]byte
	binary.BigEndian.PutUint32(k[:], bt.n)
	return b.Put(k[:], bt.encode())
}

// stats is the Stats view of st (without Rejected, the commit error and
// FileBytes).
func (st *state) stats(bs boots, now Stamp, o Options) Stats {
	n, size := st.events()
	s := Stats{
		Events:      n,
		Bytes:       size,
		FirstSeq:    st.first(),
		NextSeq:     st.next,
		Appended:    st.appended,
		Acked:       st.acked,
		DroppedFull: st.droppedFull,
		DroppedAge:  st.droppedAge,
		DroppedTTL:  st.droppedTTL,
		DeadEvents:  st.deadEvents,
		DeadBytes:   st.deadBytes,
		DeadTotal:   st.deadTotal,
		DeadDropped: st.deadDropped,

		Quarantined:    st.quarantined,
		LastQuarantine: st.quarantine,
		ClockSynced:    now.Synced,
	}
	var cur uint32
	if len(bs) > 0 {
		cur = bs[len(bs)-1].n
	}
	for _, l := range st.lanes {
		ls := LaneStats{Lane: l.lane, Events: l.events, Bytes: l.bytes, Acked: l.acked,
			DroppedFull: l.droppedFull, DroppedAge: l.droppedAge, DroppedTTL: l.droppedTTL}
		if l.events > 0 {
			ls.FirstSeq = l.head
			ls.Oldest, _ = bs.wallOf(l.oldest)
			if age, ok := bs.age(l.oldest, now, cur); ok {
				ls.OldestAge = age
			} else {
				ls.OldestAge = max(now.Wall.Sub(ls.Oldest), 0)
			}
			if s.Oldest.IsZero() || ls.Oldest.Before(s.Oldest) {
				s.Oldest, s.OldestAge = ls.Oldest, max(ls.OldestAge, 0)
			}
		}
		s.Lanes = append(s.Lanes, ls)
	}
	return s
}

func getUint(b *bolt.Bucket, k []byte) uint64 {
	v := b.Get(k)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func putUint(b *bolt.Bucket, k []byte, v uint64) error {
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], v)
	return b.Put(k, buf[:])
}

// readOnly opens the buffer file at path read-only, which works only while
// no edgegw has it open (bbolt's lock); otherwise it returns ErrLocked
// after timeout.
func readOnly(path string, timeout time.Duration) (*bolt.DB, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("buffer: %w", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: timeout})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("%w: %s is open in a running edgegw; stop it first (systemctl stop edgegw)", ErrLocked, path)
		}
		return nil, openError(path, err)
	}
	return db, nil
}

// ReadDeadLetters reads every dead letter of the buffer file at path
// without taking it over (see ReadStats).
func ReadDeadLetters(path string, timeout time.Duration) ([]DeadLetter, error) {
	db, err := readOnly(path, timeout)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	var out []DeadLetter
	err = db.View(func(tx *bolt.Tx) error {
		var err error
		out, err = readDead(tx, 0, math.MaxInt)
		return err
	})
	return out, err
}

// ReadStats reads the stats of the buffer file at path without taking it
// over: it opens the file read-only, which works only while no edgegw has
// it open (bbolt's lock); otherwise it returns ErrLocked after timeout.
func ReadStats(path string, timeout time.Duration) (Stats, error) {
	db, err := readOnly(path, timeout)
	if err != nil {
		return Stats{}, err
	}
	defer db.Close()
	var st state
	var bs boots
	err = db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			return fmt.Errorf("%w: %s", ErrForeign, path)
		}
		if v := getUint(meta, keyFormat); v != formatVersion && v != 2 {
			return fmt.Errorf("buffer: %s has format %d; start edgegw once to bring it to format %d", path, v, formatVersion)
		}
		var err error
		if st, err = readState(tx); err != nil {
			return err
		}
		bs, err = readBoots(tx)
		return err
	})
	if err != nil {
		return Stats{}, err
	}
	s := st.stats(bs, SystemClock().Now(), Options{})
	if fi, err := os.Stat(path); err == nil {
		s.FileBytes = fi.Size()
	}
	return s, nil
}

func (q *Queue) writeMeta(meta *bolt.Bucket, st *state, cursor []byte) error {
	_, size := st.events()
	// bbolt keeps the value slices until the commit: one allocation for
	// all of them.
	vals := make([]byte, 0, 12*8+len(st.lanes)*48)
	for _, kv := range []struct {
		k []byte
		v uint64
	}{
		{keyNext, st.next},
		{keyBytes, uint64(size)},
		{keyAppended, st.appended},
		{keyAcked, st.acked},
		{keyDroppedFull, st.droppedFull},
		{keyDroppedAge, st.droppedAge},
		{keyDroppedTTL, st.droppedTTL},
		{keyDeadNext, st.deadNext},
		{keyDeadEvents, st.deadEvents},
		{keyDeadBytes, uint64(st.deadBytes)},
		{keyDeadTotal, st.deadTotal},
		{keyDeadDropped, st.deadDropped},
	} {
		vals = binary.BigEndian.AppendUint64(vals, kv.v)
		if err := meta.Put(kv.k, vals[len(vals)-8:len(vals):len(vals)]); err != nil {
			return err
		}
	}
	for i := range st.lanes {
		off := len(vals)
		vals = st.lanes[i].appendMeta(vals)
		if err := meta.Put(st.lanes[i].lane.bucket(), vals[off:len(vals):len(vals)]); err != nil {
			return err
		}
	}
	if cursor != nil {
		return meta.Put(keyCursor, cursor)
	}
	return nil
}

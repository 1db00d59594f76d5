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

// readState reads the committed state from the meta bucket and the first
// and last events.
func readState(meta, events *bolt.Bucket) (state, error) {
	st := state{
		next:        getUint(meta, keyNext),
		bytes:       int64(getUint(meta, keyBytes)),
		appended:    getUint(meta, keyAppended),
		acked:       getUint(meta, keyAcked),
		droppedFull: getUint(meta, keyDroppedFull),
		droppedAge:  getUint(meta, keyDroppedAge),
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
	c := events.Cursor()
	k, v := c.First()
	if k == nil {
		st.first, st.bytes = st.next, 0
		return st, nil
	}
	if len(k) != 8 || len(v) < 8 {
		return st, corruptf("bad first record")
	}
	st.first = binary.BigEndian.Uint64(k)
	st.oldest = time.Unix(0, int64(binary.BigEndian.Uint64(v)))
	lk, _ := c.Last()
	if last := binary.BigEndian.Uint64(lk); last >= st.next {
		return st, corruptf("last seq %d not below next seq %d", last, st.next)
	}
	return st, nil
}

// stats is the Stats view of st (without Rejected and FileBytes).
func (st state) stats() Stats {
	s := Stats{
		Events:      st.next - st.first,
		Bytes:       st.bytes,
		FirstSeq:    st.first,
		NextSeq:     st.next,
		Oldest:      st.oldest,
		Appended:    st.appended,
		Acked:       st.acked,
		DroppedFull: st.droppedFull,
		DroppedAge:  st.droppedAge,
		DeadEvents:  st.deadEvents,
		DeadBytes:   st.deadBytes,
		DeadTotal:   st.deadTotal,
		DeadDropped: st.deadDropped,

		Quarantined:    st.quarantined,
		LastQuarantine: st.quarantine,
	}
	if !st.oldest.IsZero() {
		s.OldestAge = time.Since(st.oldest)
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
	err = db.View(func(tx *bolt.Tx) error {
		meta, events := tx.Bucket(bucketMeta), tx.Bucket(bucketEvents)
		if meta == nil || events == nil {
			return fmt.Errorf("%w: %s", ErrForeign, path)
		}
		var err error
		st, err = readState(meta, events)
		return err
	})
	if err != nil {
		return Stats{}, err
	}
	s := st.stats()
	if fi, err := os.Stat(path); err == nil {
		s.FileBytes = fi.Size()
	}
	return s, nil
}

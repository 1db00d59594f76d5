package buffer

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ReadLane returns up to limit events of lane with from <= seq < to (to 0:
// no bound), in order, skipping events past the lane's TTL (or MaxAge)
// that the writer has not yet swept. It never blocks appends.
func (q *Queue) ReadLane(l Lane, from, to uint64, limit int) ([]Record, error) {
	if q.isClosed() {
		return nil, ErrClosed
	}
	now := q.clock.Now()
	q.mu.Lock()
	q.noteSync(now)
	bs := q.boots
	q.mu.Unlock()
	cur := bs[len(bs)-1].n
	maxAge, _ := q.limitOf(l)
	var out []Record
	err := q.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(l.bucket())
		if b == nil {
			return nil
		}
		c := b.Cursor()
		var key [8]byte
		binary.BigEndian.PutUint64(key[:], from)
		var slab []byte // one allocation for many records' data
		for k, v := c.Seek(key[:]); k != nil && len(out) < limit; k, v = c.Next() {
			h, ok := readHeader(v)
			if len(k) != 8 || !ok {
				return corruptf("bad record at key %x in %s", k, l)
			}
			seq := binary.BigEndian.Uint64(k)
			if to != 0 && seq >= to {
				break
			}
			if maxAge > 0 {
				if age, known := bs.age(h, now, cur); known && age > maxAge {
					continue // expired: the writer sweeps it
				}
			}
			d := dataOf(v, h)
			if cap(slab)-len(slab) < len(d) {
				slab = make([]byte, 0, max(32<<10, len(d)))
			}
			off := len(slab)
			slab = append(slab, d...)
			wall, trusted := bs.wallOf(h)
			out = append(out, Record{
				Seq:      seq,
				Lane:     l,
				Time:     wall,
				Shift:    time.Duration(wall.UnixNano() - h.wall),
				Unsynced: !trusted,
				Data:     slab[off:len(slab):len(slab)],
				Damaged:  checkValue(k, v, q.summedFrom),
			})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("buffer: read %s from %d: %w", l, from, err)
	}
	return out, nil
}

// Read returns up to limit events with seq >= from of every lane, in seq
// order (as ReadLane).
func (q *Queue) Read(from uint64, limit int) ([]Record, error) {
	var out []Record
	for _, l := range q.Lanes() {
		recs, err := q.ReadLane(l, from, 0, limit)
		if err != nil {
			return nil, err
		}
		out = append(out, recs...)
	}
	slices.SortFunc(out, func(a, b Record) int { return cmp.Compare(a.Seq, b.Seq) })
	return out[:min(len(out), limit)], nil
}

// Lanes returns the lanes that hold events, by priority (highest first).
func (q *Queue) Lanes() []Lane {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []Lane
	for _, l := range q.st.lanes {
		if l.events > 0 {
			out = append(out, l.lane)
		}
	}
	return out
}

// Changed returns a channel that is closed when events are next appended.
// Take it before checking Stats().NextSeq and no append is missed.
func (q *Queue) Changed() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.changed
}

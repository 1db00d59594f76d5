package buffer

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// migrateChunk is how many events one migration transaction moves.
const migrateChunk = 20_000

// migrate brings a format 1 file (one "events" bucket, each value the
// append time and the data) to format 2: its events move, in chunks of
// one transaction each, into DefaultLane with a header whose boot is 0
// (unknown: such events never expire by age). A crash halfway leaves a
// file that opens and goes on where it stopped.
func migrate(db *bolt.DB, path string) error {
	var old bool
	_ = db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		old = meta != nil && getUint(meta, keyFormat) == 1
		return nil
	})
	for old {
		done, err := migrateSome(db)
		if err != nil {
			return fmt.Errorf("buffer: bring %s to format 2: %w", path, err)
		}
		if done {
			return nil
		}
	}
	return nil
}

func migrateSome(db *bolt.DB) (done bool, err error) {
	err = db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil || getUint(meta, keyFormat) != 1 {
			done = true
			return nil
		}
		events := tx.Bucket(bucketEvents)
		if events == nil {
			return corruptf("format 1 without events bucket")
		}
		lane := DefaultLane
		b, err := tx.CreateBucketIfNotExists(lane.bucket())
		if err != nil {
			return err
		}
		b.FillPercent = 1
		ls := laneState{lane: lane}
		ls.readMeta(meta.Get(lane.bucket()))
		size := int64(getUint(meta, keyBytes))
		c := events.Cursor()
		n := 0
		// Seek past each deleted key: First would walk every leaf emptied
		// in this transaction again.
		for k, v := c.First(); k != nil && n < migrateChunk; k, v = c.Seek(binary.BigEndian.AppendUint64(nil, binary.BigEndian.Uint64(k)+1)) {
			if len(k) != 8 || len(v) < 8 {
				return corruptf("bad format 1 record at key %x", k)
			}
			h := header{wall: int64(binary.BigEndian.Uint64(v))}
			nv := h.append(make([]byte, 0, headerSize+len(v)-8))
			nv = append(nv, v[8:]...)
			if err := b.Put(k, nv); err != nil {
				return err
			}
			if err := c.Delete(); err != nil {
				return err
			}
			ls.events++
			ls.bytes += int64(len(v)-8) + recordOverhead
			size += recordOverhead - 16
			n++
		}
		if err := meta.Put(lane.bucket(), ls.meta()); err != nil {
			return err
		}
		if err := putUint(meta, keyBytes, uint64(size)); err != nil {
			return err
		}
		if k, _ := events.Cursor().First(); k == nil {
			if err := tx.DeleteBucket(bucketEvents); err != nil {
				return err
			}
			return putUint(meta, keyFormat, 2) // load takes it on to 3
		}
		return nil
	})
	return done, err
}

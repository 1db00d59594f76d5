package buffer_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/edgegw/edgegw/buffer"
)

// spoil flips a bit in every copy of old in the file at path (bbolt's
// copy-on-write leaves older copies of a page in free pages), as bit rot
// on an SD card does to a file that still opens.
func spoil(t *testing.T, path string, old []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i := 0; ; {
		j := bytes.Index(b[i:], old)
		if j < 0 {
			break
		}
		b[i+j+len(old)-1] ^= 0x04
		i += j + len(old)
		n++
	}
	if n == 0 {
		t.Fatalf("%q is not in %s", old, path)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A flipped bit inside an event of a file that opens fine: the read hands
// it over marked Damaged (with ErrChecksum), every other event as it was;
// set aside, it is a dead letter whose reason says checksum, and the lane
// moves on.
func TestChecksumFindsBitRotInAFileThatOpens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buf.db")
	fill(t, path, 1000)
	spoil(t, path, payload(500))

	q := openT(t, path, nil)
	if q.Quarantine() != nil {
		t.Fatalf("a flipped bit in event data moved the file aside: %v", q.Quarantine())
	}
	recs := readAll(t, q, 0)
	if len(recs) != 1000 {
		t.Fatalf("read %d events, want 1000", len(recs))
	}
	var bad buffer.Record
	for i, r := range recs {
		switch {
		case i == 500:
			if !errors.Is(r.Damaged, buffer.ErrChecksum) {
				t.Fatalf("the spoiled event reads %q, Damaged = %v", r.Data, r.Damaged)
			}
			bad = r
		case r.Damaged != nil || !bytes.Equal(r.Data, payload(i)):
			t.Fatalf("event %d: %q, Damaged = %v", i, r.Data, r.Damaged)
		}
	}
	ctx := context.Background()
	if err := q.SetAside(ctx, bad.Seq, bad.Damaged.Error()); err != nil {
		t.Fatal(err)
	}
	if err := q.AckRange(bad.Lane, bad.Seq, bad.Seq); err != nil {
		t.Fatal(err)
	}
	if err := q.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	dead, err := q.DeadLetters(0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(dead) != 1 || dead[0].Seq != bad.Seq || !strings.HasPrefix(dead[0].Reason, "checksum: ") || len(dead[0].Data) != len(payload(500)) {
		t.Fatalf("dead letters: %+v", dead)
	}
	for _, r := range readAll(t, q, 0) {
		if r.Damaged != nil {
			t.Fatalf("seq %d still damaged after it was set aside", r.Seq)
		}
	}
}

// A damaged header that clears the checksum flag is caught too: every
// event from the file's first summed seq must carry one.
func TestChecksumFlagCannotBeLost(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buf.db")
	fill(t, path, 10)
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("lane/5/0s"))
		k := binary.BigEndian.AppendUint64(nil, 3)
		v := bytes.Clone(b.Get(k))
		v[16] &^= 0x40 // the summed bit of the header's boot field
		return b.Put(k, v)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	q := openT(t, path, nil)
	for _, r := range readAll(t, q, 0) {
		if (r.Seq == 3) != (r.Damaged != nil) {
			t.Fatalf("seq %d: Damaged = %v", r.Seq, r.Damaged)
		}
	}
}

// A format 2 file (before checksums) opens, reads its events unchecked,
// and appends new ones with a checksum.
func TestFormat2FileKeepsWorking(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buf.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	u := func(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
	err = db.Update(func(tx *bolt.Tx) error {
		meta, _ := tx.CreateBucket([]byte("meta"))
		tx.CreateBucket([]byte("marks"))
		lane, _ := tx.CreateBucket([]byte("lane/5/0s"))
		meta.Put([]byte("format"), u(2))
		meta.Put([]byte("next_seq"), u(1+n))
		meta.Put([]byte("clean_shutdown"), u(1))
		size := 0
		for i := range n {
			// wall, since, boot 0: a format 2 header, no checksum.
			v := append(make([]byte, 20), payload(i)...)
			binary.BigEndian.PutUint64(v, 1)
			if err := lane.Put(u(uint64(1+i)), v); err != nil {
				return err
			}
			size += len(payload(i)) + buffer.RecordOverhead
		}
		counters := append(u(n), u(uint64(size))...)
		counters = append(counters, make([]byte, 32)...)
		meta.Put([]byte("lane/5/0s"), counters)
		return meta.Put([]byte("bytes"), u(uint64(size)))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	q := openT(t, path, &buffer.Options{VerifyOnOpen: true})
	if q.Quarantine() != nil {
		t.Fatal(q.Quarantine())
	}
	if _, err := q.Append(context.Background(), []byte("new")); err != nil {
		t.Fatal(err)
	}
	q.Close()
	spoil(t, path, []byte("new"))
	q = openT(t, path, &buffer.Options{VerifyOnOpen: true})
	recs := readAll(t, q, 0)
	if len(recs) != n+1 {
		t.Fatalf("read %d, want %d", len(recs), n+1)
	}
	for i, r := range recs[:n] {
		if r.Damaged != nil || !bytes.Equal(r.Data, payload(i)) {
			t.Fatalf("format 2 event %d: %q, %v", i, r.Data, r.Damaged)
		}
	}
	if last := recs[n]; !errors.Is(last.Damaged, buffer.ErrChecksum) {
		t.Fatalf("the event appended after the upgrade was spoiled and reads %q, Damaged = %v", last.Data, last.Damaged)
	}
}

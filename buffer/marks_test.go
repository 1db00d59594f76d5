package buffer_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/edgegw/edgegw/buffer"
)

func marked(group, slot, token string, redelivered bool) buffer.Entry {
	return buffer.Entry{
		Data: []byte(slot + "=" + token),
		Mark: &buffer.Mark{Group: []byte(group), Slot: []byte(slot), Token: []byte(token), SkipIfSame: redelivered},
	}
}

// appendMarked appends entries and returns how many were stored (not
// dropped as redelivered copies).
func appendMarked(t *testing.T, q *buffer.Queue, entries ...buffer.Entry) int {
	t.Helper()
	seqs, err := q.AppendEntries(context.Background(), entries)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range seqs {
		if s != 0 {
			n++
		}
	}
	return n
}

// A group keeps its latest MarksPerGroup marks, through restarts; another
// group's marks are not pushed out by it.
func TestMarksWindowPerGroup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buf.db")
	q := openT(t, path, nil)
	appendMarked(t, q, marked("quiet", "quiet/1", "q", false))
	const n = buffer.MarksPerGroup + 10
	for i := 0; i < n; i += 500 {
		var es []buffer.Entry
		for k := i; k < min(i+500, n); k++ {
			es = append(es, marked("busy", fmt.Sprintf("busy/%d", k), "t", false))
		}
		appendMarked(t, q, es...)
	}
	q.Close()
	q = openT(t, path, nil)
	for _, c := range []struct {
		e    buffer.Entry
		kept int
	}{
		{marked("busy", "busy/10", "t", true), 0},                   // the oldest kept
		{marked("busy", fmt.Sprintf("busy/%d", n-1), "t", true), 0}, // the latest
		{marked("quiet", "quiet/1", "q", true), 0},                  // another group's
		{marked("busy", "busy/0", "t", true), 1},                    // out of the window: forgotten
		{marked("busy", "busy/9", "t", true), 1},                    // the 10th oldest: forgotten too
	} {
		if got := appendMarked(t, q, c.e); got != c.kept {
			t.Errorf("%s: %d stored, want %d", c.e.Mark.Slot, got, c.kept)
		}
	}
}

// markLogEntries counts the entries of the closed file's mark log.
func markLogEntries(t *testing.T, path string) int {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	n := 0
	db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte("marklog")); b != nil {
			n = b.Stats().KeyN
		}
		return nil
	})
	return n
}

// Marks replaced in their slot leave the log: a device that cycles
// through ten packet ids for 3,000 messages leaves a log of about ten
// entries (plus what waits to be trimmed), and the latest token of each
// slot is what a restart remembers.
func TestMarksLogIsTrimmed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buf.db")
	q := openT(t, path, nil)
	const n, slots = 3000, 10
	for i := range n {
		appendMarked(t, q, marked("dev", fmt.Sprintf("dev/%d", i%slots), fmt.Sprint(i), false))
	}
	q.Close()
	if got := markLogEntries(t, path); got > slots+256 {
		t.Fatalf("the mark log holds %d entries for %d live marks", got, slots)
	}
	q = openT(t, path, nil)
	if got := appendMarked(t, q, marked("dev", "dev/9", fmt.Sprint(n-1), true)); got != 0 {
		t.Fatal("the latest mark of slot dev/9 was forgotten")
	}
	if got := appendMarked(t, q, marked("dev", "dev/8", fmt.Sprint(n-12), true)); got != 1 {
		t.Fatal("a replaced mark of slot dev/8 was taken for the latest")
	}
}

// A file written before the log kept one key per slot ("marks"): Open
// moves them into the log, and a redelivered copy is still dropped.
func TestMarksFromBeforeTheLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buf.db")
	q := openT(t, path, nil)
	appendMarked(t, q, buffer.Entry{Data: []byte("x")})
	q.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	slot := "mqtt/dev1/" + string([]byte{0, 7})
	err = db.Update(func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket([]byte("marklog")); err != nil && err.Error() != "bucket not found" {
			return err
		}
		b, err := tx.CreateBucket([]byte("marks"))
		if err != nil {
			return err
		}
		return b.Put([]byte(slot), []byte("tok"))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	q = openT(t, path, nil)
	if got := appendMarked(t, q, marked("mqtt/dev1", slot, "tok", true)); got != 0 {
		t.Fatal("the mark of a file from before the log was lost")
	}
	q.Close()
	if got := markLogEntries(t, path); got != 1 {
		t.Fatalf("the mark log holds %d entries, want the 1 moved in", got)
	}
	q = openT(t, path, nil)
	if got := appendMarked(t, q, marked("mqtt/dev1", slot, "tok", true)); got != 0 {
		t.Fatal("the moved mark was lost at the next open")
	}
}

// SD wear: a commit of readings from twenty devices writes a few pages,
// not a page per device (marks kept by slot did: each device's slots
// sit in a page of their own). Stats.Written counts the pages.
func TestMarksOfACommitShareAPage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buf.db")
	q := openT(t, path, &buffer.Options{PageSize: 4 << 10})
	const devices = 20
	batch := func(i int) []buffer.Entry {
		es := make([]buffer.Entry, devices)
		for d := range es {
			g := fmt.Sprintf("mqtt/dev%02d", d)
			es[d] = marked(g, fmt.Sprintf("%s/%05d", g, i), "0123456789abcdef", false)
		}
		return es
	}
	for i := range 1000 { // 20,000 marks: a log of a few hundred pages
		appendMarked(t, q, batch(i)...)
	}
	before := q.Stats()
	const commits = 50
	for i := range commits {
		appendMarked(t, q, batch(1000+i)...)
	}
	after := q.Stats()
	pages := float64(after.Written-before.Written) / 4096 / float64(after.Commits-before.Commits)
	t.Logf("%.1f pages of 4 KiB per commit of %d marked readings", pages, devices)
	// The readings' lane and the log: a leaf and two branch pages each
	// (20,000 entries), the root and the meta page, and a split now and
	// then. A page per device would be 20 or more.
	if after.Commits-before.Commits < commits || pages > 12 {
		t.Fatalf("%d commits wrote %.1f pages each", after.Commits-before.Commits, pages)
	}
}

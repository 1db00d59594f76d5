package buffer_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/edgegw/edgegw/buffer"
)

// Events set aside stay in the dead-letter lane, with their reason, across
// a reopen, after the queue acknowledged past them; an append too large for
// the queue goes there whole; drop removes them; the lane keeps to its
// bound by dropping its oldest, counted.
func TestDeadLetterLane(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buf.db")
	o := &buffer.Options{MaxBytes: 4 << 10, DeadMaxBytes: 64 << 10}
	q := openT(t, path, o)
	for i := range 5 {
		if _, err := q.Append(ctx, payload(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.SetAside(ctx, 3, "the stream refused it"); err != nil {
		t.Fatal(err)
	}
	if err := q.SetAside(ctx, 99, "never held"); !errors.Is(err, buffer.ErrNotHeld) {
		t.Fatalf("SetAside of a seq never held: %v", err)
	}
	big := bytes.Repeat([]byte("b"), 8<<10) // over max_bytes
	if _, err := q.Append(ctx, big); !errors.Is(err, buffer.ErrTooLarge) {
		t.Fatalf("append over max_bytes: %v", err)
	}
	if err := q.AppendDead(ctx, big, "larger than max_bytes"); err != nil {
		t.Fatal(err)
	}
	q.Ack(5)
	if err := q.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	q.Close()

	q = openT(t, path, o)
	st := q.Stats()
	if st.Events != 0 || st.DeadEvents != 2 || st.DeadTotal != 2 || st.DeadBytes == 0 {
		t.Fatalf("stats after reopen: %+v", st)
	}
	dead, err := q.DeadLetters(0, 10)
	if err != nil || len(dead) != 2 {
		t.Fatalf("DeadLetters: %+v, %v", dead, err)
	}
	if d := dead[0]; d.Seq != 3 || !bytes.Equal(d.Data, payload(2)) || d.Reason != "the stream refused it" || d.Size != len(payload(2)) {
		t.Fatalf("first dead letter: %+v", d)
	}
	if d := dead[1]; d.Seq != 0 || !bytes.Equal(d.Data, big) || d.Size != len(big) {
		t.Fatalf("second dead letter: seq %d, %d bytes", d.Seq, d.Size)
	}

	// Past its bound the lane drops its oldest, and keeps only the size
	// and reason of a letter too large to hold.
	for range 10 {
		if err := q.AppendDead(ctx, big, "filler"); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.AppendDead(ctx, bytes.Repeat([]byte("h"), 40<<10), "huge"); err != nil {
		t.Fatal(err)
	}
	st = q.Stats()
	if st.DeadBytes > 64<<10 || st.DeadDropped == 0 || st.DeadTotal != 13 || st.DeadEvents+st.DeadDropped != 13 {
		t.Fatalf("lane over its bound: %+v", st)
	}
	dead, _ = q.DeadLetters(0, 100)
	last := dead[len(dead)-1]
	if last.Reason != "huge" || last.Size != 40<<10 || last.Data != nil {
		t.Fatalf("huge letter: reason %q, size %d, %d bytes kept", last.Reason, last.Size, len(last.Data))
	}

	n, err := q.DropDead(ctx, last.ID-1)
	if err != nil || n != len(dead)-1 {
		t.Fatalf("DropDead: %d, %v; want %d", n, err, len(dead)-1)
	}
	if st := q.Stats(); st.DeadEvents != 1 {
		t.Fatalf("after drop: %+v", st)
	}
}

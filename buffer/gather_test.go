package buffer_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/edgegw/edgegw/buffer"
)

// Readings that trickle in share a commit: one arriving while the last
// commit is younger than CommitDelay waits for the delay, and what comes
// meanwhile goes with it (the SD wear is per commit, issue 24).
func TestCommitDelayGathersATrickle(t *testing.T) {
	q := openT(t, filepath.Join(t.TempDir(), "buf.db"), &buffer.Options{CommitDelay: 3 * time.Second})
	ctx := context.Background()
	if _, err := q.Append(ctx, []byte("first")); err != nil { // the first commit: no wait
		t.Fatal(err)
	}
	before := q.Stats().Commits
	// Two sensors read on their own clocks, 200 ms apart: not appenders
	// that waited for a commit.
	time.Sleep(200 * time.Millisecond)
	var wg sync.WaitGroup
	for _, d := range []string{"b", "c"} {
		wg.Go(func() {
			if _, err := q.Append(ctx, []byte(d)); err != nil {
				t.Error(err)
			}
		})
		time.Sleep(200 * time.Millisecond)
	}
	wg.Wait()
	if n := q.Stats().Commits - before; n != 1 {
		t.Fatalf("two readings within the delay took %d commits, want 1", n)
	}
}

// An appender that waits for each commit before it appends again (a
// device that waits for its PUBACK) is not held back: the delay would
// cap it at one append per delay and gather nothing.
func TestCommitDelaySparesASerialAppender(t *testing.T) {
	q := openT(t, filepath.Join(t.TempDir(), "buf.db"), &buffer.Options{CommitDelay: 10 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		for i := range 100 {
			if _, err := q.Append(ctx, payload(i)); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		// Held back, each append would wait 10 s: three in a row turn the
		// delay off (for 500 s), so 25 s means the appender was taken for a
		// trickle at least twice... or always.
		t.Fatalf("100 serial appends held back by a 10 s commit delay: %d committed in 25 s", q.Stats().Appended)
	}
}

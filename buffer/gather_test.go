package buffer_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/edgegw/edgegw/buffer"
)

// Readings that trickle in share a commit: one arriving while the last
// commit is younger than CommitDelay waits for the delay, and what comes
// meanwhile goes with it (the SD wear is per commit, issue 24). And
// devices that wait for their acknowledgements are not held back: once
// every device of the last commit is back, the commit goes.
func TestCommitDelayGathersATrickle(t *testing.T) {
	q := openT(t, filepath.Join(t.TempDir(), "buf.db"), &buffer.Options{CommitDelay: 3 * time.Second})
	// Devices (mark groups) that send on their own clocks, not when
	// their last message was acknowledged.
	appendMarked(t, q, marked("a", "a/1", "t", false)) // the first commit: no wait
	before := q.Stats().Commits
	time.Sleep(200 * time.Millisecond)
	var wg sync.WaitGroup
	for _, d := range []string{"b", "c"} {
		wg.Go(func() { appendMarked(t, q, marked(d, d+"/1", "t", false)) })
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
		// Held back, each append would wait 10 s (eight in a row turn the
		// delay off): 25 s means it was taken for a trickle thrice.
		t.Fatalf("100 serial appends held back by a 10 s commit delay: %d committed in 25 s", q.Stats().Appended)
	}
}

// Two devices that each send again as soon as their message is
// committed (QoS 1 with one message in flight): every commit holds both,
// and both are back at once, so no delay holds them (only the last
// messages of one wait for the other, which has stopped). Held, they
// would take 100 delays.
func TestCommitDelaySparesDevicesThatWaitForTheirAcks(t *testing.T) {
	q := openT(t, filepath.Join(t.TempDir(), "buf.db"), &buffer.Options{CommitDelay: 2 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, d := range []string{"dev1", "dev2"} {
		wg.Go(func() {
			for i := range 100 {
				e := marked(d, fmt.Sprintf("%s/%d", d, i), "t", false)
				if _, err := q.AppendEntries(ctx, []buffer.Entry{e}); err != nil {
					t.Errorf("%s: %v (%d committed in all)", d, err, q.Stats().Appended)
					return
				}
			}
		})
	}
	wg.Wait()
}

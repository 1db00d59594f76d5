package buffer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/wait"
)

func openT(t *testing.T, path string, o *buffer.Options) *buffer.Queue {
	t.Helper()
	q, err := buffer.Open(path, o)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func payload(i int) []byte { return []byte(fmt.Sprintf("event-%08d", i)) }

// readAll reads every held event from seq from, in pages.
func readAll(t *testing.T, q *buffer.Queue, from uint64) []buffer.Record {
	t.Helper()
	var all []buffer.Record
	for {
		recs, err := q.Read(from, 777)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			return all
		}
		all = append(all, recs...)
		from = recs[len(recs)-1].Seq + 1
	}
}

func TestOrderAndSeqAcrossReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buf.db")
	q := openT(t, path, nil)
	n := 0
	for batch := 1; batch <= 40; batch++ { // batches of 1..40 events
		var data [][]byte
		for range batch {
			n++
			data = append(data, payload(n))
		}
		first, err := q.Append(ctx, data...)
		if err != nil {
			t.Fatal(err)
		}
		if want := uint64(n - batch + 1); first != want {
			t.Fatalf("batch %d: first seq %d, want %d", batch, first, want)
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	q = openT(t, path, nil)
	recs := readAll(t, q, 0)
	if len(recs) != n {
		t.Fatalf("after reopen: %d events, want %d", len(recs), n)
	}
	for i, r := range recs {
		if r.Seq != uint64(i+1) || !bytes.Equal(r.Data, payload(i+1)) {
			t.Fatalf("event %d: seq %d data %q", i, r.Seq, r.Data)
		}
	}
	first, err := q.Append(ctx, []byte("after"))
	if err != nil {
		t.Fatal(err)
	}
	if first != uint64(n+1) {
		t.Fatalf("seq after reopen %d, want %d", first, n+1)
	}
}

func TestAckThenReopenNeverRedelivers(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buf.db")
	q := openT(t, path, nil)
	for i := 1; i <= 100; i++ {
		if _, err := q.Append(ctx, payload(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Ack(60); err != nil {
		t.Fatal(err)
	}
	if err := q.Ack(500); err == nil {
		t.Fatal("Ack beyond the last appended seq: want an error")
	}
	q.Close()

	q = openT(t, path, nil)
	recs := readAll(t, q, 0)
	if len(recs) != 40 || recs[0].Seq != 61 {
		t.Fatalf("after ack 60 and reopen: %d events from seq %d, want 40 from 61", len(recs), recs[0].Seq)
	}
	st := q.Stats()
	if st.Acked != 60 || st.Appended != 100 || st.Events != 40 || st.FirstSeq != 61 || st.NextSeq != 101 {
		t.Fatalf("stats after reopen: %+v", st)
	}

	// Ack everything: the seq still never repeats.
	if err := q.Ack(100); err != nil {
		t.Fatal(err)
	}
	q.Close()
	q = openT(t, path, nil)
	if st := q.Stats(); st.Events != 0 || st.Bytes != 0 || !st.Oldest.IsZero() {
		t.Fatalf("after acking all: %+v", st)
	}
	if first, err := q.Append(ctx, []byte("x")); err != nil || first != 101 {
		t.Fatalf("append after acking all: seq %d, %v; want 101", first, err)
	}
}

func TestFlushCommitsAcks(t *testing.T) {
	ctx := context.Background()
	q := openT(t, filepath.Join(t.TempDir(), "buf.db"), nil)
	for i := 1; i <= 10; i++ {
		q.Append(ctx, payload(i))
	}
	q.Ack(4)
	if err := q.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.FirstSeq != 5 || st.Events != 6 || st.Acked != 4 || st.Bytes != 6*(14+buffer.RecordOverhead) {
		t.Fatalf("stats after ack 4 + flush: %+v", st)
	}
}

// Appenders, a reader and acks race; every event is read exactly once, in
// order, and each appender's events keep their order.
func TestConcurrentAppendReadAck(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q := openT(t, filepath.Join(t.TempDir(), "buf.db"), nil)
	const appenders, per = 8, 1500

	var wg sync.WaitGroup
	for a := range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				if _, err := q.Append(ctx, []byte(fmt.Sprintf("%d/%d", a, i))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}

	got := make(map[int]int) // appender -> next expected index
	var next uint64 = 1
	total := 0
	for total < appenders*per {
		if err := q.Wait(ctx, next-1); err != nil {
			t.Fatalf("Wait after %d events: %v", total, err)
		}
		recs, err := q.Read(next, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.Seq != next {
				t.Fatalf("read seq %d, want %d", r.Seq, next)
			}
			var a, i int
			fmt.Sscanf(string(r.Data), "%d/%d", &a, &i)
			if got[a] != i {
				t.Fatalf("appender %d: event %d after %d", a, i, got[a]-1)
			}
			got[a]++
			next++
			total++
		}
		if len(recs) > 0 {
			if err := q.Ack(recs[len(recs)-1].Seq); err != nil {
				t.Fatal(err)
			}
		}
	}
	wg.Wait()
	if err := q.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.Events != 0 || st.Acked != appenders*per {
		t.Fatalf("after draining: %+v", st)
	}
}

func TestDropOldestKeepsNewestWithinMaxBytes(t *testing.T) {
	ctx := context.Background()
	const rec = 100 + buffer.RecordOverhead // each event's size as counted
	q := openT(t, filepath.Join(t.TempDir(), "buf.db"), &buffer.Options{MaxBytes: 50 * rec})
	for i := 1; i <= 500; i++ {
		if _, err := q.Append(ctx, bytes.Repeat([]byte{byte(i)}, 100)); err != nil {
			t.Fatal(err)
		}
		if st := q.Stats(); st.Bytes > 50*rec {
			t.Fatalf("after %d appends: %d bytes held, max 50*%d", i, st.Bytes, rec)
		}
	}
	st := q.Stats()
	if st.Events != 50 || st.DroppedFull != 450 || st.FirstSeq != 451 {
		t.Fatalf("stats: %+v; want the newest 50 held and 450 dropped", st)
	}
	recs := readAll(t, q, 0)
	if len(recs) != 50 || recs[0].Seq != 451 || recs[49].Data[0] != byte(500%256) {
		t.Fatalf("held %d events from %d", len(recs), recs[0].Seq)
	}

	_, err := q.Append(ctx, make([]byte, 51*rec))
	if !errors.Is(err, buffer.ErrTooLarge) {
		t.Fatalf("append over max_bytes: %v, want ErrTooLarge", err)
	}
}

func TestRejectReturnsErrFull(t *testing.T) {
	ctx := context.Background()
	q := openT(t, filepath.Join(t.TempDir(), "buf.db"), &buffer.Options{MaxBytes: 10 * (84 + buffer.RecordOverhead), WhenFull: buffer.Reject})
	for i := range 10 {
		if _, err := q.Append(ctx, make([]byte, 84)); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	_, err := q.Append(ctx, make([]byte, 84))
	if !errors.Is(err, buffer.ErrFull) {
		t.Fatalf("append to a full queue: %v, want ErrFull", err)
	}
	st := q.Stats()
	if st.Events != 10 || st.Rejected != 1 || st.DroppedFull != 0 {
		t.Fatalf("stats: %+v", st)
	}
	// Draining makes room again.
	q.Ack(3)
	if err := q.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Append(ctx, make([]byte, 84), make([]byte, 84)); err != nil {
		t.Fatalf("append after ack: %v", err)
	}
}

func TestMaxAgeExpiry(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q := openT(t, filepath.Join(t.TempDir(), "buf.db"), &buffer.Options{MaxAge: 300 * time.Millisecond})
	for i := 1; i <= 20; i++ {
		q.Append(ctx, payload(i))
	}
	start := time.Now()
	wait.For(t, "old events to expire", func() bool { return q.Stats().Events == 0 })
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Fatalf("events expired after %s, before max_age", el)
	}
	// A fresh event is kept while the expired ones are gone.
	q.Append(ctx, []byte("fresh"))
	recs := readAll(t, q, 0)
	if len(recs) != 1 || string(recs[0].Data) != "fresh" {
		t.Fatalf("held after expiry: %v", recs)
	}
	if st := q.Stats(); st.DroppedAge != 20 {
		t.Fatalf("DroppedAge %d, want 20", st.DroppedAge)
	}
}

func TestWaitAndClose(t *testing.T) {
	ctx := context.Background()
	q := openT(t, filepath.Join(t.TempDir(), "buf.db"), nil)
	done := make(chan error, 1)
	go func() { done <- q.Wait(ctx, 0) }()
	select {
	case err := <-done:
		t.Fatalf("Wait returned on an empty queue: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	q.Append(ctx, []byte("a"))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	go func() { done <- q.Wait(ctx, 1) }()
	q.Close()
	if err := <-done; !errors.Is(err, buffer.ErrClosed) {
		t.Fatalf("Wait across Close: %v, want ErrClosed", err)
	}
	if _, err := q.Append(ctx, []byte("b")); !errors.Is(err, buffer.ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	if _, err := q.Read(0, 1); !errors.Is(err, buffer.ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
}

// Acked pages are reused: a gateway that keeps appending and draining does
// not grow its file.
func TestFileStaysBoundedUnderChurn(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buf.db")
	q := openT(t, path, nil)
	data := make([][]byte, 500)
	for i := range data {
		data[i] = make([]byte, 128)
	}
	var sizes []int64
	for cycle := range 30 {
		var last uint64
		for range 10 {
			first, err := q.Append(ctx, data...)
			if err != nil {
				t.Fatal(err)
			}
			last = first + uint64(len(data)) - 1
		}
		q.Ack(last)
		if err := q.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		sizes = append(sizes, q.Stats().FileBytes)
		_ = cycle
	}
	if sizes[len(sizes)-1] > sizes[2] {
		t.Fatalf("file grew under churn: %v", sizes)
	}
}

func TestLockedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buf.db")
	openT(t, path, nil)
	start := time.Now()
	_, err := buffer.Open(path, &buffer.Options{LockTimeout: 300 * time.Millisecond})
	if !errors.Is(err, buffer.ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("second Open took %s", el)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "another edgegw") {
		t.Fatalf("error does not name the file and the likely cause: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("locked file was touched: %v", err)
	}
}

func TestUnusableFilesAreMovedAside(t *testing.T) {
	tests := []struct {
		name  string
		opts  *buffer.Options
		spoil func(t *testing.T, path string)
	}{
		{"garbage", nil, func(t *testing.T, path string) {
			os.WriteFile(path, bytes.Repeat([]byte("not a database "), 4096), 0o600)
		}},
		{"truncated", nil, func(t *testing.T, path string) {
			fill(t, path, 20000)
			fi, _ := os.Stat(path)
			if err := os.Truncate(path, fi.Size()/2); err != nil {
				t.Fatal(err)
			}
		}},
		{"short", nil, func(t *testing.T, path string) {
			fill(t, path, 10)
			if err := os.Truncate(path, 1000); err != nil {
				t.Fatal(err)
			}
		}},
		// Pages wiped at rest (a failing SD card) after a clean shutdown are
		// found by VerifyOnOpen; after an unclean one the walk is automatic
		// (see the crash test).
		{"zeroed pages", &buffer.Options{VerifyOnOpen: true}, func(t *testing.T, path string) {
			fill(t, path, 20000)
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			f.WriteAt(make([]byte, 64<<10), 64<<10) // wipe 16 pages of data
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "buf.db")
			tt.spoil(t, path)
			spoiled, _ := os.ReadFile(path)

			q, err := buffer.Open(path, tt.opts)
			if err != nil {
				t.Fatalf("Open: %v, want a fresh queue", err)
			}
			ce := q.Quarantine()
			if ce == nil {
				t.Fatal("Open's queue has no Quarantine: the file was not moved aside")
			}
			defer q.Close()
			if !strings.HasPrefix(ce.MovedTo, path+".corrupt-") {
				t.Fatalf("moved to %q", ce.MovedTo)
			}
			moved, err := os.ReadFile(ce.MovedTo)
			if err != nil || !bytes.Equal(moved, spoiled) {
				t.Fatalf("moved-aside file differs from the original (%v)", err)
			}
			checkSalvaged(t, q, ce)
			if first, err := q.Append(context.Background(), []byte("x")); err != nil || first < uint64(ce.Salvaged)+1 {
				t.Fatalf("fresh queue: append gave %d, %v", first, err)
			}
			t.Logf("error shown to the user: %v", ce)
		})
	}
}

func TestForeignBboltFileIsLeftAlone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "other.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("users")); return err })
	db.Close()
	before, _ := os.ReadFile(path)
	if _, err := buffer.Open(path, nil); !errors.Is(err, buffer.ErrForeign) {
		t.Fatalf("Open of another program's bbolt file: %v, want ErrForeign", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("foreign file was modified")
	}
}

func TestBadOptions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buf.db")
	for _, o := range []buffer.Options{{MaxBytes: -1}, {MaxAge: -time.Second}, {WhenFull: 7}} {
		if _, err := buffer.Open(path, &o); err == nil {
			t.Errorf("Open with %+v: no error", o)
		}
	}
	if _, err := buffer.Open(filepath.Join(t.TempDir(), "missing", "buf.db"), nil); err == nil || !strings.Contains(err.Error(), "directory exists") {
		t.Errorf("Open in a missing directory: %v", err)
	}
}

func fill(t *testing.T, path string, n int) {
	t.Helper()
	q, err := buffer.Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	var data [][]byte
	for i := range n {
		data = append(data, payload(i))
	}
	if _, err := q.Append(context.Background(), data...); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
}

// max_bytes bounds the file, not only the count: appending ten times the
// limit under drop_oldest leaves a file under twice the limit.
func TestMaxBytesBoundsTheFile(t *testing.T) {
	ctx := context.Background()
	const limit = 4 << 20
	q := openT(t, filepath.Join(t.TempDir(), "buf.db"), &buffer.Options{MaxBytes: limit})
	batch := make([][]byte, 100)
	for i := range batch {
		batch[i] = bytes.Repeat([]byte{byte(i)}, 128)
	}
	for written := 0; written < 10*limit; written += 100 * 144 {
		if _, err := q.Append(ctx, batch...); err != nil {
			t.Fatal(err)
		}
	}
	st := q.Stats()
	if st.Bytes > limit || st.FileBytes > 2*limit+1<<20 {
		t.Fatalf("held %d bytes in a %d-byte file; max_bytes %d", st.Bytes, st.FileBytes, limit)
	}
	t.Logf("max_bytes %d: %d held, file %d bytes, %d dropped", limit, st.Bytes, st.FileBytes, st.DroppedFull)
}

func TestMarksDropRedeliveredCopies(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buf.db")
	q := openT(t, path, nil)
	mark := func(slot, token string, redelivered bool) *buffer.Mark {
		return &buffer.Mark{Slot: []byte(slot), Token: []byte(token), SkipIfSame: redelivered}
	}
	seqs, err := q.AppendEntries(ctx, []buffer.Entry{
		{Data: []byte("a"), Mark: mark("pid1", "hashA", false)},
		{Data: []byte("b"), Mark: mark("pid2", "hashB", false)},
		{Data: []byte("plain")},
	})
	if err != nil || len(seqs) != 3 || seqs[0] != 1 || seqs[1] != 2 || seqs[2] != 3 {
		t.Fatalf("first append: %v %v", seqs, err)
	}
	q.Close()
	q = openT(t, path, nil) // marks survive a restart: that is the point

	seqs, err = q.AppendEntries(ctx, []buffer.Entry{
		{Data: []byte("a"), Mark: mark("pid1", "hashA", true)},   // a redelivered copy: dropped
		{Data: []byte("c"), Mark: mark("pid2", "hashC", true)},   // redelivered, but not what pid2 held: kept
		{Data: []byte("a2"), Mark: mark("pid1", "hashA", false)}, // a fresh message that happens to match: kept
	})
	if err != nil {
		t.Fatal(err)
	}
	if seqs[0] != 0 || seqs[1] != 4 || seqs[2] != 5 {
		t.Fatalf("seqs %v, want [0 4 5]", seqs)
	}
	recs := readAll(t, q, 0)
	var got []string
	for _, r := range recs {
		got = append(got, string(r.Data))
	}
	if strings.Join(got, ",") != "a,b,plain,c,a2" {
		t.Fatalf("held %v", got)
	}
}

// On a 32-bit system bbolt's mapping of the file limits the buffer: 0 is
// capped at MaxBytesLimit and more is refused with the fix; on 64-bit
// there is no such limit. .ci/run runs this under qemu for 32-bit ARM.
func TestMaxBytesLimitOfThisArch(t *testing.T) {
	dir := t.TempDir()
	limit := buffer.MaxBytesLimit()
	if (strconv.IntSize == 32) != (limit > 0) {
		t.Fatalf("MaxBytesLimit() = %d on a %d-bit system", limit, strconv.IntSize)
	}
	_, err := buffer.Open(filepath.Join(dir, "big.db"), &buffer.Options{MaxBytes: 1 << 40})
	if limit > 0 {
		if err == nil || !strings.Contains(err.Error(), "32-bit") || !strings.Contains(err.Error(), "768MiB") {
			t.Fatalf("1 TiB on 32-bit: %v", err)
		}
	} else if err != nil {
		t.Fatalf("1 TiB on 64-bit: %v", err)
	} else {
		return
	}
	q, err := buffer.Open(filepath.Join(dir, "default.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	// 0 ("no limit") opens and works, capped at the limit.
	if _, err := q.Append(t.Context(), make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
}

// A clean Close writes bbolt's freelist, so the next open does not walk
// every page of the file through the mapping (which made the process's
// lifetime peak RSS as large as the file); while open, commits skip it.
func TestCleanCloseWritesTheFreelist(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buf.db")
	q := openT(t, path, nil)
	for i := range 10 {
		q.Append(ctx, payload(i))
	}
	if buffer.FreelistSynced(path) {
		t.Fatal("a commit while open wrote the freelist")
	}
	q.Close()
	if !buffer.FreelistSynced(path) {
		t.Fatal("the clean close did not write the freelist")
	}
	q = openT(t, path, nil)
	q.Append(ctx, payload(11))
	if buffer.FreelistSynced(path) {
		t.Fatal("a commit after reopening wrote the freelist")
	}
	q.Close()
	q = openT(t, path, &buffer.Options{VerifyOnOpen: true})
	if st := q.Stats(); st.Events != 11 {
		t.Fatalf("%d events after two reopenings", st.Events)
	}
}

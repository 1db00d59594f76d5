package buffer_test

import (
	"context"
	"encoding/binary"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/edgegw/edgegw/buffer"
)

// fakeClock is a machine's clock under the test's control: reboots, boot
// time passing, the wall clock jumping and getting synchronized.
type fakeClock struct {
	mu sync.Mutex
	s  buffer.Stamp
}

func newFakeClock(boot string, wall time.Time, synced bool) *fakeClock {
	return &fakeClock{s: buffer.Stamp{Boot: boot, Since: 10 * time.Second, Wall: wall, Synced: synced}}
}

func (c *fakeClock) Now() buffer.Stamp {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.s
}

// pass lets d go by on both clocks.
func (c *fakeClock) pass(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.s.Since += d
	c.s.Wall = c.s.Wall.Add(d)
}

// jump moves the wall clock alone, as a manual set or an NTP step does.
func (c *fakeClock) jump(d time.Duration, synced bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.s.Wall = c.s.Wall.Add(d)
	c.s.Synced = synced
}

// reboot starts a new boot after off of wall time (the boot clock starts
// again near 0), with the wall clock at wall.
func (c *fakeClock) reboot(boot string, wall time.Time, synced bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.s = buffer.Stamp{Boot: boot, Since: 5 * time.Second, Wall: wall, Synced: synced}
}

var (
	lane5h = buffer.Lane{Priority: 5, TTL: time.Hour}
	lane0  = buffer.Lane{Priority: 0}
	lane9  = buffer.Lane{Priority: 9}
)

func appendLane(t *testing.T, q *buffer.Queue, l buffer.Lane, n int) []uint64 {
	t.Helper()
	entries := make([]buffer.Entry, n)
	for i := range entries {
		entries[i] = buffer.Entry{Data: payload(i), Lane: l}
	}
	seqs, err := q.AppendEntries(context.Background(), entries)
	if err != nil {
		t.Fatal(err)
	}
	return seqs
}

func laneStats(t *testing.T, q *buffer.Queue, l buffer.Lane) buffer.LaneStats {
	t.Helper()
	for _, ls := range q.Stats().Lanes {
		if ls.Lane == l {
			return ls
		}
	}
	return buffer.LaneStats{Lane: l}
}

func readLane(t *testing.T, q *buffer.Queue, l buffer.Lane) []buffer.Record {
	t.Helper()
	recs, err := q.ReadLane(l, 0, 0, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// sweep makes the writer run a transaction (an append to a lane of its
// own), which sweeps expired events.
func sweep(t *testing.T, q *buffer.Queue) {
	t.Helper()
	appendLane(t, q, buffer.Lane{Priority: 8}, 1)
}

func TestTTLWithinABootIgnoresWallClockJumps(t *testing.T) {
	clock := newFakeClock("boot-a", time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC), false)
	q := openT(t, filepath.Join(t.TempDir(), "buf.db"), &buffer.Options{Clock: clock})
	appendLane(t, q, lane5h, 10)

	clock.pass(30 * time.Minute)
	clock.jump(72*time.Hour, true) // NTP finds the real date, days later
	sweep(t, q)
	if n := len(readLane(t, q, lane5h)); n != 10 {
		t.Fatalf("after 30 minutes of boot time and the wall clock 3 days ahead: %d events readable, want 10", n)
	}
	clock.jump(-5*24*time.Hour, true) // and back by five
	clock.pass(29 * time.Minute)
	sweep(t, q)
	if n := len(readLane(t, q, lane5h)); n != 10 {
		t.Fatalf("after 59 minutes of boot time, the wall clock 2 days behind: %d events readable, want 10", n)
	}
	clock.pass(2 * time.Minute)
	if n := len(readLane(t, q, lane5h)); n != 0 {
		t.Fatalf("after 61 minutes of boot time: %d events readable, want 0 (skipped at read)", n)
	}
	sweep(t, q)
	ls := laneStats(t, q, lane5h)
	if ls.Events != 0 || ls.DroppedTTL != 10 || q.Stats().DroppedTTL != 10 {
		t.Fatalf("after the sweep: %+v, want 0 held and 10 dropped by ttl", ls)
	}
}

func TestTTLAcrossAReboot(t *testing.T) {
	day := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name                string
		syncedAt, syncedNow bool
		wantExpired         bool
	}{
		{"both synchronized", true, true, true},
		{"unsynchronized at append", false, true, false},
		{"unsynchronized after reboot", true, false, false},
		{"neither", false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "buf.db")
			clock := newFakeClock("boot-a", day, tc.syncedAt)
			q := openT(t, path, &buffer.Options{Clock: clock})
			appendLane(t, q, lane5h, 10)
			q.Close()

			// Powered off for two hours; the new boot's clock starts at 0.
			clock.reboot("boot-b", day.Add(2*time.Hour), tc.syncedNow)
			q = openT(t, path, &buffer.Options{Clock: clock})
			sweep(t, q)
			recs := readLane(t, q, lane5h)
			ls := laneStats(t, q, lane5h)
			if tc.wantExpired {
				if len(recs) != 0 || ls.DroppedTTL != 10 {
					t.Fatalf("%d readable, %+v; want every event expired by ttl (2h > 1h by synchronized wall clocks)", len(recs), ls)
				}
				return
			}
			if len(recs) != 10 || ls.DroppedTTL != 0 {
				t.Fatalf("%d readable, %+v; want all 10 kept: their age is unknown", len(recs), ls)
			}
			if recs[0].Unsynced == tc.syncedAt {
				t.Fatalf("record Unsynced = %v with the clock synchronized at append = %v", recs[0].Unsynced, tc.syncedAt)
			}
		})
	}
}

// A boot whose ages are unknown does not stop the sweep from reaching
// the expired events of a later boot behind it.
func TestSweepStepsOverABootOfUnknownAge(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buf.db")
	day := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := newFakeClock("boot-a", day, false)
	q := openT(t, path, &buffer.Options{Clock: clock})
	appendLane(t, q, lane5h, 5) // age unknown after the reboot
	q.Close()
	clock.reboot("boot-b", day.Add(time.Hour), false)
	q = openT(t, path, &buffer.Options{Clock: clock})
	appendLane(t, q, lane5h, 7)
	clock.pass(2 * time.Hour)
	sweep(t, q)
	ls := laneStats(t, q, lane5h)
	if ls.Events != 5 || ls.DroppedTTL != 7 {
		t.Fatalf("%+v; want boot-a's 5 kept (age unknown) and boot-b's 7 dropped", ls)
	}
}

func TestFirstSyncCorrectsTheBootsTimes(t *testing.T) {
	stale := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC) // fake-hwclock's saved time
	clock := newFakeClock("boot-a", stale, false)
	path := filepath.Join(t.TempDir(), "buf.db")
	q := openT(t, path, &buffer.Options{Clock: clock})
	appendLane(t, q, buffer.DefaultLane, 1)
	recs := readLane(t, q, buffer.DefaultLane)
	if !recs[0].Unsynced || !recs[0].Time.Equal(stale) {
		t.Fatalf("before sync: %+v, want the stale time, unsynced", recs[0])
	}
	clock.pass(time.Minute)
	clock.jump(500*24*time.Hour, true) // NTP: the real time
	recs = readLane(t, q, buffer.DefaultLane)
	want := stale.Add(500 * 24 * time.Hour)
	if recs[0].Unsynced || !recs[0].Time.Equal(want) || recs[0].Shift != 500*24*time.Hour {
		t.Fatalf("after sync: time %s shift %s unsynced %v; want %s, shifted by 500 days", recs[0].Time, recs[0].Shift, recs[0].Unsynced, want)
	}
	// The correction is in the file: it holds after a restart in the same
	// boot too.
	q.Close()
	q = openT(t, path, &buffer.Options{Clock: clock})
	if recs = readLane(t, q, buffer.DefaultLane); recs[0].Unsynced || !recs[0].Time.Equal(want) {
		t.Fatalf("after a restart: %+v", recs[0])
	}
}

func TestDropOldestTakesTheLowestPriorityFirst(t *testing.T) {
	const size = 14 + buffer.RecordOverhead
	q := openT(t, filepath.Join(t.TempDir(), "buf.db"), &buffer.Options{MaxBytes: 30 * size})
	appendLane(t, q, lane0, 10)
	appendLane(t, q, buffer.DefaultLane, 10)
	appendLane(t, q, lane9, 10)
	appendLane(t, q, buffer.DefaultLane, 5) // 5 of priority 9 go
	if ls := laneStats(t, q, lane9); ls.DroppedFull != 5 || ls.Events != 5 || ls.FirstSeq != 26 {
		t.Fatalf("priority 9: %+v; want its 5 oldest dropped", ls)
	}
	appendLane(t, q, lane0, 10) // the other 5 of priority 9, then 5 of priority 5
	for l, want := range map[buffer.Lane]uint64{lane9: 10, buffer.DefaultLane: 5, lane0: 0} {
		if ls := laneStats(t, q, l); ls.DroppedFull != want {
			t.Fatalf("%s: dropped %d, want %d", l, ls.DroppedFull, want)
		}
	}
	if ls := laneStats(t, q, buffer.DefaultLane); ls.FirstSeq != 16 {
		t.Fatalf("priority 5 starts at %d, want 16: its oldest dropped first", ls.FirstSeq)
	}
}

func TestLanesKeepTheirOwnOrderAndRanges(t *testing.T) {
	ctx := context.Background()
	q := openT(t, filepath.Join(t.TempDir(), "buf.db"), nil)
	var want = map[buffer.Lane][]uint64{}
	for i := range 30 {
		l := []buffer.Lane{lane0, buffer.DefaultLane, lane9}[i%3]
		want[l] = append(want[l], appendLane(t, q, l, 1)[0])
	}
	for l, seqs := range want {
		recs := readLane(t, q, l)
		if len(recs) != len(seqs) {
			t.Fatalf("%s: %d records, want %d", l, len(recs), len(seqs))
		}
		for i, r := range recs {
			if r.Seq != seqs[i] || r.Lane != l {
				t.Fatalf("%s: record %d is seq %d of %s, want %d", l, i, r.Seq, r.Lane, seqs[i])
			}
		}
	}
	// A range ack deletes that lane's events in the range and no other.
	if err := q.AckRange(buffer.DefaultLane, 0, want[buffer.DefaultLane][4]); err != nil {
		t.Fatal(err)
	}
	if err := q.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if ls := laneStats(t, q, buffer.DefaultLane); ls.Events != 5 || ls.Acked != 5 || ls.FirstSeq != want[buffer.DefaultLane][5] {
		t.Fatalf("priority 5 after a range ack: %+v", ls)
	}
	if st := q.Stats(); st.Events != 25 || st.FirstSeq != 1 {
		t.Fatalf("stats: %+v", st)
	}
	// AckSeq finds the lane.
	if err := q.AckSeq(want[lane9][9]); err != nil {
		t.Fatal(err)
	}
	q.Flush(ctx)
	if ls := laneStats(t, q, lane9); ls.Events != 9 || ls.Acked != 1 {
		t.Fatalf("priority 9 after AckSeq: %+v", ls)
	}
	if got := q.Lanes(); len(got) != 3 || got[0] != lane0 || got[2] != lane9 {
		t.Fatalf("lanes %v, want priority 0, 5, 9", got)
	}
	if _, err := q.AppendEntries(ctx, []buffer.Entry{{Data: []byte("x"), Lane: buffer.Lane{Priority: 10}}}); err == nil {
		t.Fatal("priority 10 accepted")
	}
}

// The cursor is never in the file before the acks handed over before it:
// with more acks than one transaction deletes, it waits for the last.
func TestCursorIsCommittedAfterTheAcksBeforeIt(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "buf.db")
	q := openT(t, path, nil)
	const n = 120_000 // more than one transaction's deletes
	for left := n; left > 0; left -= 10_000 {
		appendLane(t, q, buffer.DefaultLane, 10_000)
	}
	if err := q.AckRange(buffer.DefaultLane, 1, n); err != nil {
		t.Fatal(err)
	}
	if err := q.SetCursor([]byte("upstream 42")); err != nil {
		t.Fatal(err)
	}
	seen := false
	for !seen {
		c := q.Cursor()
		st := q.Stats()
		if c != nil {
			seen = true
			if st.Events != 0 {
				t.Fatalf("cursor committed with %d acknowledged events still held", st.Events)
			}
		} else if st.Events == 0 {
			q.Flush(ctx)
		}
	}
	q.Close()
	q = openT(t, path, nil)
	if c := q.Cursor(); string(c) != "upstream 42" {
		t.Fatalf("cursor after reopen: %q", c)
	}
}

// A format 1 file (one events bucket, 8 bytes of time before the data)
// opens with its events in DefaultLane, in order, their age unknown.
func TestFormat1FileIsMigrated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "buf.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 45_000 // more than one migration transaction
	err = db.Update(func(tx *bolt.Tx) error {
		meta, _ := tx.CreateBucket([]byte("meta"))
		ev, _ := tx.CreateBucket([]byte("events"))
		tx.CreateBucket([]byte("marks"))
		u := func(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
		meta.Put([]byte("format"), u(1))
		meta.Put([]byte("next_seq"), u(100+n))
		meta.Put([]byte("clean_shutdown"), u(1))
		var size int
		for i := range n {
			v := append(u(uint64(time.Now().UnixNano())), payload(i)...)
			size += len(payload(i)) + 16
			if err := ev.Put(u(uint64(100+i)), v); err != nil {
				return err
			}
		}
		return meta.Put([]byte("bytes"), u(uint64(size)))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	q := openT(t, path, &buffer.Options{MaxAge: time.Nanosecond})
	st := q.Stats()
	if st.Events != n || st.FirstSeq != 100 || st.NextSeq != 100+n || st.Bytes != n*(14+buffer.RecordOverhead) {
		t.Fatalf("after migration: %+v", st)
	}
	recs := readLane(t, q, buffer.DefaultLane)
	if len(recs) != n || recs[0].Seq != 100 || string(recs[n-1].Data) != string(payload(n-1)) || !recs[0].Unsynced {
		t.Fatalf("read %d events after migration (max_age 1ns: their age is unknown, none expires)", len(recs))
	}
	for _, r := range recs {
		if r.Damaged != nil {
			t.Fatalf("a migrated event has no checksum to fail, but seq %d: %v", r.Seq, r.Damaged)
		}
	}
	q.Close()
	openT(t, path, &buffer.Options{VerifyOnOpen: true})
}

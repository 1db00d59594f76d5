package buffer_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/edgegw/edgegw/buffer"
)

// BenchmarkDurableAppend measures group-committed appends of 128-byte events
// from 1, 8 and 64 goroutines, each appending one event per call, against
// the same run's baseline: one goroutine appending the same bytes to a plain
// file with one fsync per batch of as many records as there are appenders.
//
//	go test -run '^$' -bench DurableAppend -benchtime 3s ./buffer/
func BenchmarkDurableAppend(b *testing.B) {
	rec := make([]byte, 128)
	for _, appenders := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("appenders=%d", appenders), func(b *testing.B) {
			dir := b.TempDir()
			base := fileBaseline(b, filepath.Join(dir, "plain.log"), rec, appenders, b.N)
			bolt := boltCeiling(b, filepath.Join(dir, "bare.db"), rec, appenders, min(b.N, 200_000))

			q, err := buffer.Open(filepath.Join(dir, "buf.db"), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer q.Close()
			var left atomic.Int64
			left.Store(int64(b.N))
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range appenders {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for left.Add(-1) >= 0 {
						if _, err := q.Append(context.Background(), rec); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			rate := float64(b.N) / time.Since(start).Seconds()
			b.ReportMetric(rate, "rec/s")
			b.ReportMetric(base, "baseline-rec/s")
			b.ReportMetric(rate/base, "x-baseline")
			b.ReportMetric(bolt, "bare-bbolt-rec/s")
			b.ReportMetric(rate/bolt, "x-bare-bbolt")
		})
	}
}

// BenchmarkLanesAppend compares, in one run, durable appends of 128-byte
// events from 64 goroutines into one lane (what Append does) and spread
// over three lanes (priority 0; 5 with a TTL; 9), with bare bbolt
// committing the same records, as many per transaction as the three-lane
// queue's commits held on average (its group commit takes what is
// waiting: at most one per appender). The three are interleaved in rounds
// of 50,000 events each, so that the disk's drift weighs on all alike.
//
//	go test -run '^$' -bench LanesAppend -benchtime 1x ./buffer/
func BenchmarkLanesAppend(b *testing.B) {
	const appenders, round, rounds = 64, 50_000, 6
	rec := make([]byte, 128+8) // bare bbolt stores the 20-byte header too: 8 more than the key's room
	lanes := []buffer.Lane{{Priority: 0}, {Priority: 5, TTL: time.Hour}, {Priority: 9}}
	for range b.N {
		dir := b.TempDir()
		var one, three, bolt time.Duration
		var commits atomic.Int64
		for r := range rounds {
			// Fresh files each round, for all three alike.
			q1, err := buffer.Open(filepath.Join(dir, fmt.Sprintf("one%d.db", r)), nil)
			if err != nil {
				b.Fatal(err)
			}
			q3, err := buffer.Open(filepath.Join(dir, fmt.Sprintf("three%d.db", r)), &buffer.Options{OnCommit: func(time.Duration) { commits.Add(1) }})
			if err != nil {
				b.Fatal(err)
			}
			one += appendConcurrently(b, q1, appenders, round, func(int) buffer.Lane { return buffer.DefaultLane })
			c0 := commits.Load()
			three += appendConcurrently(b, q3, appenders, round, func(i int) buffer.Lane { return lanes[i%3] })
			batch := int(math.Round(round / float64(commits.Load()-c0)))
			rate := boltCeiling(b, filepath.Join(dir, fmt.Sprintf("bare%d.db", r)), rec, batch, round)
			bolt += time.Duration(float64(round) / rate * float64(time.Second))
			q1.Close()
			q3.Close()
		}
		n := float64(round * rounds)
		b.ReportMetric(n/one.Seconds(), "one-lane-rec/s")
		b.ReportMetric(n/three.Seconds(), "three-lanes-rec/s")
		b.ReportMetric(n/bolt.Seconds(), "bare-bbolt-rec/s")
		b.ReportMetric(n/float64(commits.Load()), "events/commit")
		b.ReportMetric(one.Seconds()/three.Seconds(), "x-one-lane")
		b.ReportMetric(bolt.Seconds()/three.Seconds(), "x-bare-bbolt")
	}
}

// appendConcurrently appends n 128-byte events from appenders goroutines,
// one per call, the i-th into lane(i), and returns the time it took.
func appendConcurrently(b *testing.B, q *buffer.Queue, appenders, n int, lane func(int) buffer.Lane) time.Duration {
	rec := make([]byte, 128)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				if _, err := q.AppendEntries(context.Background(), []buffer.Entry{{Data: rec, Lane: lane(int(i))}}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start)
}

// fileBaseline appends n records to a plain file, fsyncing every batch
// records, and returns records/s.
func fileBaseline(b *testing.B, path string, rec []byte, batch, n int) float64 {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 0, batch*len(rec))
	start := time.Now()
	for done := 0; done < n; {
		buf = buf[:0]
		for i := 0; i < batch && done < n; i++ {
			buf = append(buf, rec...)
			done++
		}
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}

// boltCeiling is what bbolt itself allows: one goroutine, one transaction
// per batch records, the queue's options and nothing else. It is reported
// beside the baseline to show where the queue's cost lies; each bbolt
// commit fdatasyncs twice (pages, then the meta page).
func boltCeiling(b *testing.B, path string, rec []byte, batch, n int) float64 {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{NoFreelistSync: true, FreelistType: bbolt.FreelistMapType, PageSize: 16 << 10})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var seq uint64
	start := time.Now()
	for done := 0; done < n; {
		err := db.Update(func(tx *bbolt.Tx) error {
			bk, err := tx.CreateBucketIfNotExists([]byte("e"))
			if err != nil {
				return err
			}
			bk.FillPercent = 1
			for i := 0; i < batch && done < n; i++ {
				seq++
				if err := bk.Put(binary.BigEndian.AppendUint64(nil, seq), append(make([]byte, 0, 8+len(rec)), rec...)); err != nil {
					return err
				}
				done++
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}

const backlog = 1_000_000

// fillBacklog appends n 128-byte events in large batches.
func fillBacklog(b *testing.B, q *buffer.Queue, n int) {
	b.Helper()
	rec := make([]byte, 128)
	batch := make([][]byte, 10_000)
	for i := range batch {
		batch[i] = rec
	}
	for n > 0 {
		k := min(n, len(batch))
		if _, err := q.Append(context.Background(), batch[:k]...); err != nil {
			b.Fatal(err)
		}
		n -= k
	}
}

// BenchmarkDrain reads and acks a 1,000,000-event backlog, 1000 events per
// read, and reports events/s and the file size before and after, against
// the same run's baseline: bare bbolt reading and deleting the same
// number of records 1000 per transaction.
//
//	go test -run '^$' -bench Drain -benchtime 1x ./buffer/
func BenchmarkDrain(b *testing.B) {
	for range b.N {
		b.StopTimer()
		path := filepath.Join(b.TempDir(), "buf.db")
		q, err := buffer.Open(path, nil)
		if err != nil {
			b.Fatal(err)
		}
		fillBacklog(b, q, backlog)
		before := q.Stats().FileBytes
		b.StartTimer()
		start := time.Now()
		var from uint64
		n := 0
		for {
			recs, err := q.Read(from, 1000)
			if err != nil {
				b.Fatal(err)
			}
			if len(recs) == 0 {
				break
			}
			n += len(recs)
			from = recs[len(recs)-1].Seq + 1
			if err := q.Ack(from - 1); err != nil {
				b.Fatal(err)
			}
		}
		if err := q.Flush(context.Background()); err != nil {
			b.Fatal(err)
		}
		el := time.Since(start)
		b.StopTimer()
		st := q.Stats()
		if n != backlog || st.Events != 0 {
			b.Fatalf("drained %d, %d left", n, st.Events)
		}
		base := bareDrain(b, filepath.Join(b.TempDir(), "bare.db"), backlog)
		b.ReportMetric(float64(n)/el.Seconds(), "events/s")
		b.ReportMetric(base, "bolt-events/s")
		b.ReportMetric(float64(n)/el.Seconds()/base, "x-bolt")
		b.ReportMetric(float64(before)/1e6, "MB-before")
		b.ReportMetric(float64(st.FileBytes)/1e6, "MB-after")
		q.Close()
	}
}

// BenchmarkBacklogHeap reports the Go heap in use with a 10,000- and a
// 1,000,000-event backlog held in the queue, and their ratio: the data
// stays in the file, so the heap must not grow with the backlog.
//
//	go test -run '^$' -bench BacklogHeap -benchtime 1x ./buffer/
func BenchmarkBacklogHeap(b *testing.B) {
	for range b.N {
		q, err := buffer.Open(filepath.Join(b.TempDir(), "buf.db"), nil)
		if err != nil {
			b.Fatal(err)
		}
		fillBacklog(b, q, 10_000)
		small := heapInuse()
		fillBacklog(b, q, backlog-10_000)
		if _, err := q.Read(backlog/2, 1000); err != nil { // a reader mid-backlog
			b.Fatal(err)
		}
		large := heapInuse()
		// The same run's baseline is the heap at 10k: 100 times the
		// backlog must not be 100 times the heap.
		b.ReportMetric(float64(small)/(1<<20), "heap-MiB@10k")
		b.ReportMetric(float64(large)/(1<<20), "heap-MiB@1M")
		b.ReportMetric(float64(large)/float64(small), "x-heap@10k")
		b.ReportMetric(float64(q.Stats().FileBytes)/1e6, "file-MB@1M")
		q.Close()
	}
}

// bareDrain fills a bare bbolt file with n 128-byte records under
// sequential keys, then reads and deletes them 1000 per transaction, and
// returns records/s of the drain.
func bareDrain(b *testing.B, path string, n int) float64 {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{NoFreelistSync: true, FreelistType: bbolt.FreelistMapType})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	bucket := []byte("b")
	val := make([]byte, 128+8)
	for i := 0; i < n; {
		err := db.Update(func(tx *bbolt.Tx) error {
			bk, err := tx.CreateBucketIfNotExists(bucket)
			if err != nil {
				return err
			}
			bk.FillPercent = 1.0
			for j := 0; j < 10_000 && i < n; j, i = j+1, i+1 {
				if err := bk.Put(binary.BigEndian.AppendUint64(nil, uint64(i)), val); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	start := time.Now()
	for left := n; left > 0; {
		err := db.Update(func(tx *bbolt.Tx) error {
			c := tx.Bucket(bucket).Cursor()
			k, _ := c.First()
			for j := 0; j < 1000 && k != nil; j++ {
				if err := c.Delete(); err != nil {
					return err
				}
				left--
				k, _ = c.Next()
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	return float64(n) / time.Since(start).Seconds()
}

func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// BenchmarkOpen measures Open of a cleanly closed buffer of 1M events of
// 100 bytes (the page walker that keeps a damaged page from crashing
// bbolt reads every page) against the same run's baseline: bbolt's own
// read-write Open of the same file, which walks every page to rebuild its
// freelist.
//
//	go test -run '^$' -bench Open -benchtime 5x ./buffer/
func BenchmarkOpen(b *testing.B) {
	path := filepath.Join(b.TempDir(), "buf.db")
	q, err := buffer.Open(path, nil)
	if err != nil {
		b.Fatal(err)
	}
	data := make([][]byte, 0, 4096)
	for range 4096 {
		data = append(data, make([]byte, 100))
	}
	for range 1_000_000 / 4096 {
		if _, err := q.Append(context.Background(), data...); err != nil {
			b.Fatal(err)
		}
	}
	q.Close()
	var base, ours time.Duration
	for b.Loop() {
		start := time.Now()
		db, err := bbolt.Open(path, 0o600, &bbolt.Options{NoFreelistSync: true, FreelistType: bbolt.FreelistMapType})
		if err != nil {
			b.Fatal(err)
		}
		db.Close()
		base += time.Since(start)
		start = time.Now()
		q, err := buffer.Open(path, nil)
		if err != nil {
			b.Fatal(err)
		}
		q.Close()
		ours += time.Since(start)
	}
	b.ReportMetric(float64(base.Milliseconds())/float64(b.N), "bolt-ms/open")
	b.ReportMetric(float64(ours.Milliseconds())/float64(b.N), "ms/open")
	b.ReportMetric(float64(ours)/float64(base), "x-bolt")
}

// BenchmarkWearSettings is issue 24's throughput check: 128-byte events
// from 64 goroutines over three lanes, with the wave 2 settings (16 KiB
// pages, no commit delay, acks after 100 ms), with the gateway's SD-card
// defaults (4 KiB pages, a 250 ms commit delay that appenders waiting
// for their commits never wait out, acks riding for 2 s) and with 8 KiB
// pages, interleaved in rounds on fresh files.
//
//	go test -run '^$' -bench WearSettings -benchtime 1x ./buffer/
func BenchmarkWearSettings(b *testing.B) {
	const appenders, round, rounds = 64, 50_000, 4
	lanes := []buffer.Lane{{Priority: 0}, {Priority: 5, TTL: time.Hour}, {Priority: 9}}
	settings := []buffer.Options{
		{PageSize: 16 << 10},
		{PageSize: 4 << 10, CommitDelay: 250 * time.Millisecond, AckDelay: 2 * time.Second},
		{PageSize: 8 << 10, CommitDelay: 250 * time.Millisecond, AckDelay: 2 * time.Second},
		{PageSize: 4 << 10, AckDelay: 2 * time.Second},
	}
	for range b.N {
		dir := b.TempDir()
		took := make([]time.Duration, len(settings))
		for r := range rounds {
			for i, o := range settings {
				q, err := buffer.Open(filepath.Join(dir, fmt.Sprintf("q%d-%d.db", i, r)), &o)
				if err != nil {
					b.Fatal(err)
				}
				took[i] += appendConcurrently(b, q, appenders, round, func(k int) buffer.Lane { return lanes[k%3] })
				q.Close()
			}
		}
		n := float64(round * rounds)
		b.ReportMetric(n/took[0].Seconds(), "wave2-rec/s")
		b.ReportMetric(took[0].Seconds()/took[1].Seconds(), "x-wave2-defaults")
		b.ReportMetric(took[0].Seconds()/took[2].Seconds(), "x-wave2-8KiB")
		b.ReportMetric(took[0].Seconds()/took[3].Seconds(), "x-wave2-4KiB-no-delay")
	}
}

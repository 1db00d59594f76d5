package buffer

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
)

// Dropping the pages from the page tables never changes what is read: a
// reader racing with releasePages sees every event, byte for byte.
func TestReleasePagesKeepsEveryByte(t *testing.T) {
	q, err := Open(filepath.Join(t.TempDir(), "buf.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	const n = 20_000
	want := func(i int) []byte { return fmt.Appendf(nil, "event %d %s", i, bytes.Repeat([]byte{byte(i)}, i%200)) }
	for i := 0; i < n; i += 1000 {
		batch := make([][]byte, 1000)
		for j := range batch {
			batch[j] = want(i + j)
		}
		if _, err := q.Append(context.Background(), batch...); err != nil {
			t.Fatal(err)
		}
	}
	first := q.Stats().FirstSeq
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
				q.releasePages()
			}
		}
	})
	for round := range 5 {
		recs, err := q.Read(first, n)
		if err != nil || len(recs) != n {
			t.Fatalf("round %d: read %d events: %v", round, len(recs), err)
		}
		for i, r := range recs {
			if !bytes.Equal(r.Data, want(i)) {
				t.Fatalf("round %d: event %d changed", round, i)
			}
		}
	}
	close(stop)
	wg.Wait()
}

package buffer

import (
	"context"
	"os"
)

// What the tests use and nothing else does.

// Wait blocks until an event with seq > after is held (or was appended and
// since dropped), ctx is done, or the queue is closed.
func (q *Queue) Wait(ctx context.Context, after uint64) error {
	for {
		q.mu.Lock()
		next, ch, closed := q.st.next, q.changed, q.closed
		q.mu.Unlock()
		if closed {
			return ErrClosed
		}
		if next > after+1 {
			return nil
		}
		select {
		case <-ch:
		case <-q.quit:
			return ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// RecordOverhead is what each event counts beyond its data.
const RecordOverhead = recordOverhead

// FreelistSynced reports whether the newest valid meta page of the file
// at path points at a freelist page: the next open reads it instead of
// walking every page.
func FreelistSynced(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	psz := pageSizeOf(f)
	var best []byte
	for i := range 2 {
		buf := make([]byte, pageHeaderSize+metaSize)
		if _, err := f.ReadAt(buf, int64(i*psz)); err != nil || !validMeta(buf[pageHeaderSize:]) {
			continue
		}
		if m := buf[pageHeaderSize:]; best == nil || le.Uint64(m[48:]) > le.Uint64(best[48:]) {
			best = m
		}
	}
	return best != nil && le.Uint64(best[32:]) != noFreelist
}

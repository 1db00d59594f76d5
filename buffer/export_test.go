package buffer

import "context"

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

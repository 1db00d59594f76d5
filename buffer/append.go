package buffer

import (
	"context"
	"time"
)

// Append stores data as consecutive events and returns the seq of the first
// once the transaction holding them has committed to disk. Either all of
// data is stored or none is. Once the append is handed to the writer it is
// waited for even if ctx ends, so a nil error always means committed and an
// error means not stored.
func (q *Queue) Append(ctx context.Context, data ...[]byte) (first uint64, err error) {
	if len(data) == 0 {
		return 0, nil
	}
	return q.submit(ctx, data)
}

// A Mark lets a source whose transport redelivers (MQTT QoS 1 after a
// reconnect) have copies it already committed dropped, in the same
// transaction as the append: the queue remembers the last Token stored in
// each Slot, and an entry with SkipIfSame whose Token equals it is not
// stored. Slots are grouped (an MQTT source: one group per client
// session, one slot per packet id), and a group keeps the marks of its
// latest MarksPerGroup slots, so the marks stay small.
type Mark struct {
	Group, Slot, Token []byte
	SkipIfSame         bool
}

// An Entry is one event to append, in Lane, with an optional Mark.
type Entry struct {
	Data []byte
	Lane Lane // the zero Lane is priority 0, the highest: see DefaultLane
	Mark *Mark
}

// AppendEntries is Append with marks. It returns each entry's seq, or 0 for
// an entry dropped as a copy of one already stored.
func (q *Queue) AppendEntries(ctx context.Context, entries []Entry) ([]uint64, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	r := &appendReq{data: make([][]byte, len(entries)), lanes: make([]Lane, len(entries)), marks: make([]*Mark, len(entries)), done: make(chan struct{})}
	for i, e := range entries {
		if err := e.Lane.check(); err != nil {
			return nil, err
		}
		r.data[i], r.lanes[i], r.marks[i] = e.Data, e.Lane, e.Mark
	}
	if err := q.hand(ctx, r); err != nil {
		return nil, err
	}
	return r.seqs, r.err
}

// Flush commits pending acknowledgements (and cursors), and returns when
// they are on disk.
func (q *Queue) Flush(ctx context.Context) error {
	for {
		if _, err := q.submit(ctx, nil); err != nil {
			return err
		}
		q.mu.Lock()
		done := len(q.acks) == 0
		q.mu.Unlock()
		if done {
			return nil
		}
	}
}

func (q *Queue) submit(ctx context.Context, data [][]byte) (uint64, error) {
	r := &appendReq{data: data, done: make(chan struct{})}
	if err := q.hand(ctx, r); err != nil {
		return 0, err
	}
	return r.first, r.err
}

// hand gives r to the writer and waits for its commit. A request handed
// over is always committed (or failed), Close included.
func (q *Queue) hand(ctx context.Context, r *appendReq) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	q.pendMu.Lock()
	if q.closing {
		q.pendMu.Unlock()
		return ErrClosed
	}
	r.at = time.Now()
	q.pend = append(q.pend, r)
	q.pendMu.Unlock()
	select {
	case q.kick <- struct{}{}:
	default:
	}
	<-r.done
	return nil
}

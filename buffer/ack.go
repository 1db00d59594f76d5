package buffer

import (
	"bytes"
	"fmt"
)

// Ack marks every event with seq <= upTo, in every lane, as delivered.
// The writer deletes acknowledged events in its next transactions, in
// batches; Flush (or Close) waits for that. Acking a seq that was never
// appended is an error.
func (q *Queue) Ack(upTo uint64) error {
	return q.ack(ackOp{all: true, to: upTo}, int(min(upTo, 1<<20)))
}

// AckRange marks the events of lane with from <= seq <= to as delivered
// (as Ack).
func (q *Queue) AckRange(l Lane, from, to uint64) error {
	if from > to {
		return nil
	}
	return q.ack(ackOp{lane: l, from: from, to: to}, int(min(to-from+1, 1<<20)))
}

// AckSeq marks the event seq, in whichever lane holds it, as delivered
// (as Ack).
func (q *Queue) AckSeq(seq uint64) error {
	return q.ack(ackOp{any: true, from: seq, to: seq}, 1)
}

// SetCursor stores v in the file once every acknowledgement handed to the
// queue before it is committed: in the same transaction as the last of
// them or a later one, never before. Cursor returns it, after restarts
// too. The forwarder keeps there how far upstream its acknowledgements
// are known to reach.
func (q *Queue) SetCursor(v []byte) error {
	return q.ack(ackOp{cursor: bytes.Clone(v)}, 0)
}

// Cursor returns the last committed SetCursor value, or nil.
func (q *Queue) Cursor() []byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	return bytes.Clone(q.cursor)
}

func (q *Queue) ack(op ackOp, events int) error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return ErrClosed
	}
	if op.cursor == nil && op.to >= q.horizon {
		next := q.horizon
		q.mu.Unlock()
		return fmt.Errorf("buffer: ack up to %d, but the last appended seq is %d", op.to, next-1)
	}
	op.n = events
	q.acks = append(q.acks, op)
	q.ackEvents += events
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
	return nil
}

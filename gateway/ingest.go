package gateway

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/event"
)

// The write path: a source's events go through its emit (counted), store
// (too large: the dead-letter lane) and appendEvents (marked against
// redelivery) into the buffer the runner's queueRef holds; the source
// acknowledges them once that returns.

// source is a running source with the counters the gateway keeps for it:
// every event passes through its emit.
type source struct {
	event.Source
	kind                              string
	ingested, duplicates, storeErrors atomic.Uint64
	setAside                          atomic.Uint64             // too large to store: in the dead-letter lane
	last                              atomic.Int64              // UnixNano of the last commit
	lastValue                         atomic.Pointer[lastValue] // the last event's, for a person to read
}

// lastValue is the last stored event as the page shows it: where it came
// from (the MQTT topic or the sensor) and its payload, cut short.
type lastValue struct{ from, value string }

// emit commits events to the buffer qr holds and counts them for this
// source.
func (s *source) emit(qr *queueRef) event.EmitFunc {
	return func(ctx context.Context, events ...event.Event) error {
		qr.mu.RLock()
		defer qr.mu.RUnlock()
		if qr.q == nil {
			s.storeErrors.Add(1)
			return fmt.Errorf("%w (it failed to reopen after a config change)", buffer.ErrClosed)
		}
		stored, dups, dead, err := store(ctx, qr.q, events)
		if err != nil {
			// Once per failed commit: a source retries the same events
			// until they are stored, and they are not counted again.
			s.storeErrors.Add(1)
			return err
		}
		s.duplicates.Add(uint64(dups))
		s.setAside.Add(uint64(dead))
		if stored > 0 {
			s.ingested.Add(uint64(stored))
			s.last.Store(time.Now().UnixNano())
			e := events[len(events)-1]
			s.lastValue.Store(&lastValue{from: displayValue([]byte(e.Source)), value: displayValue(e.Payload)})
		}
		return nil
	}
}

// displayValue is a payload as a person may read it: at most 120 bytes,
// control bytes and invalid UTF-8 shown as '·'.
func displayValue(p []byte) string {
	p = p[:min(len(p), 120)]
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || unicode.IsControl(r) {
			return '·'
		}
		return r
	}, string(p))
}

// store commits events to q, each with its redelivery mark, and says how
// many were stored, how many dropped as redelivered copies, and how many
// set aside in the dead-letter lane. One event alone larger than the
// buffer's max_bytes can never be stored: it is set aside there instead,
// so it neither blocks its source nor vanishes.
func store(ctx context.Context, q *buffer.Queue, events []event.Event) (stored, dups, dead int, err error) {
	stored, dups, err = appendEvents(ctx, q, events)
	if errors.Is(err, buffer.ErrTooLarge) && len(events) == 1 {
		data, merr := events[0].Marshal(nil)
		if merr != nil {
			return 0, 0, 0, merr
		}
		reason := fmt.Sprintf("%v (from %s, subject %s); raise buffer.max_bytes to store such events", err, events[0].Source, events[0].Subject)
		if err := q.AppendDead(ctx, data, reason); err != nil {
			return 0, 0, 0, err
		}
		return 0, 0, 1, nil
	}
	return stored, dups, 0, err
}

func appendEvents(ctx context.Context, q *buffer.Queue, events []event.Event) (stored, dups int, err error) {
	if len(events) == 0 {
		return 0, 0, nil
	}
	entries := make([]buffer.Entry, len(events))
	for i := range events {
		data, err := events[i].Marshal(nil)
		if err != nil {
			return 0, 0, err
		}
		entries[i].Data = data
		entries[i].Lane = buffer.Lane{Priority: events[i].Priority, TTL: events[i].TTL}
		if o := events[i].Once; o != nil {
			entries[i].Mark = &buffer.Mark{Group: []byte(o.Group), Slot: []byte(o.Slot), Token: []byte(o.Token), SkipIfSame: o.Redelivered}
		}
	}
	seqs, err := q.AppendEntries(ctx, entries)
	if err != nil {
		return 0, 0, err
	}
	for _, s := range seqs {
		if s == 0 {
			dups++
		}
	}
	return len(events) - dups, dups, nil
}

// queueRef is the buffer the sources append to. A change of the buffer
// section swaps it under them: their appends wait for the new one
// instead of failing, and an MQTT source keeps its connection. The
// runner, the only writer, reads q without the lock.
type queueRef struct {
	mu sync.RWMutex // held for reading by every append, for writing by a swap
	q  *buffer.Queue
}

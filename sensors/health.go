package sensors

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// Stats of a sensor source (a poller, an edge source or a pulse counter).
type Stats struct {
	Available bool   // the sensor or pin is open and its last read succeeded
	Reads     uint64 // readings handed to the buffer and stored
	Failures  uint64 // failed opens and reads
	NotStored uint64 // readings the buffer refused (full under when_full: reject, disk error): skipped
	// Suppressed counts readings report by exception did not send: no
	// value moved past its band and the heartbeat was not due.
	Suppressed uint64
	LastError  string
}

// health holds the counters every source in this package reports.
type health struct {
	reads, failures, notStored, suppressed atomic.Uint64
	available                              atomic.Bool
	lastErr                                atomic.Pointer[string]
}

// Stats returns the counters.
func (h *health) Stats() Stats {
	s := Stats{Available: h.available.Load(), Reads: h.reads.Load(), Failures: h.failures.Load(), NotStored: h.notStored.Load(), Suppressed: h.suppressed.Load()}
	if e := h.lastErr.Load(); e != nil {
		s.LastError = *e
	}
	return s
}

// failed records a failure and makes the source unavailable.
func (h *health) failed(msg string) {
	h.failures.Add(1)
	h.available.Store(false)
	h.lastErr.Store(&msg)
}

// emitted counts the outcome of one emit: stored, or skipped because the
// buffer refused it (full under when_full: reject, a disk error), which is
// logged at most once per throttle period. An emit cut short by ctx is
// neither.
func (h *health) emitted(ctx context.Context, err error, log *slog.Logger, t *throttle, what string) {
	switch {
	case err == nil:
		h.reads.Add(1)
	case ctx.Err() == nil:
		h.notStored.Add(1)
		if t.ok() {
			log.Warn(what+" not stored; skipping them", "err", err, "not_stored", h.notStored.Load())
		}
	}
}

// throttle says yes at most once per period: warnings about a sensor that
// keeps failing, or a buffer that keeps refusing, are logged once a minute,
// not once a reading. The zero value says yes at once. It belongs to one
// goroutine.
type throttle struct {
	last time.Time
}

func (t *throttle) ok() bool {
	if now := time.Now(); t.last.IsZero() || now.Sub(t.last) >= time.Minute {
		t.last = now
		return true
	}
	return false
}

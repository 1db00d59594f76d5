package web

import (
	"sync"
	"time"

	"github.com/edgegw/edgegw/gateway/status"
)

// The on-site page's sparklines come from rings in memory: the last hour
// at one sample every 10 s.
const (
	HistoryEvery = 10 * time.Second
	historyLen   = 360
)

// A Sample is one point of the history; the runtime takes one every
// HistoryEvery.
type Sample struct {
	At        time.Time
	Backlog   [status.MaxPriority + 1]uint64  // events held, by priority
	Oldest    [status.MaxPriority + 1]float64 // oldest age (s), by priority
	Written   uint64                          // bytes written to the buffer and sessions files since start (Status.Storage)
	Appended  uint64
	Acked     uint64
	RTTMillis float64 // uplink round trip; -1 when down

	ingest float64 // events/s appended since the sample before
	drain  float64 // events/s acknowledged upstream since the sample before
}

// History is a ring of samples: the runtime's sampler adds them, the page
// reads them.
type History struct {
	mu      sync.Mutex
	samples []Sample // oldest first, at most historyLen
}

// Add appends s, with its rates from the sample before.
func (h *History) Add(s Sample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n := len(h.samples); n > 0 {
		prev := h.samples[n-1]
		if dt := s.At.Sub(prev.At).Seconds(); dt > 0 {
			s.ingest = float64(s.Appended-prev.Appended) / dt
			s.drain = float64(s.Acked-prev.Acked) / dt
		}
	}
	h.samples = append(h.samples, s)
	if len(h.samples) > historyLen {
		h.samples = append(h.samples[:0], h.samples[len(h.samples)-historyLen:]...)
	}
}

// Snapshot is the samples, oldest first.
func (h *History) Snapshot() []Sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Sample(nil), h.samples...)
}

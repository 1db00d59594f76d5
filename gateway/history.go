package gateway

import (
	"context"
	"sync"
	"time"

	"github.com/edgegw/edgegw/buffer"
)

// The on-site page's sparklines come from rings in memory: the last hour
// at one sample every 10 s.
const (
	historyEvery = 10 * time.Second
	historyLen   = 360
)

// sample is one point of the history.
type sample struct {
	at        time.Time
	backlog   [buffer.MaxPriority + 1]uint64  // events held, by priority
	oldest    [buffer.MaxPriority + 1]float64 // oldest age (s), by priority
	ingest    float64                         // events/s appended since the sample before
	drain     float64                         // events/s acknowledged upstream since the sample before
	written   uint64                          // bytes written to the buffer and sessions files since start (Status.Storage)
	appended  uint64
	acked     uint64
	rttMillis float64 // uplink round trip; -1 when down
}

// history is a ring of samples; the sampler goroutine (Run's) writes it,
// the page reads it.
type history struct {
	mu      sync.Mutex
	samples []sample // oldest first, at most historyLen
}

func (h *history) add(s sample) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n := len(h.samples); n > 0 {
		prev := h.samples[n-1]
		if dt := s.at.Sub(prev.at).Seconds(); dt > 0 {
			s.ingest = float64(s.appended-prev.appended) / dt
			s.drain = float64(s.acked-prev.acked) / dt
		}
	}
	h.samples = append(h.samples, s)
	if len(h.samples) > historyLen {
		h.samples = append(h.samples[:0], h.samples[len(h.samples)-historyLen:]...)
	}
}

func (h *history) snapshot() []sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]sample(nil), h.samples...)
}

// sampleHistory adds a sample every historyEvery until ctx ends.
func (g *Gateway) sampleHistory(ctx context.Context) {
	t := time.NewTicker(historyEvery)
	defer t.Stop()
	for {
		g.history.add(g.takeSample())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (g *Gateway) takeSample() sample {
	g.mu.Lock()
	q, fwd, srcs, c := g.q, g.fwd, g.srcs, g.cfg
	g.mu.Unlock()
	s := sample{at: time.Now(), rttMillis: -1}
	var st buffer.Stats
	if q != nil {
		st = q.Stats()
	}
	ss := make([]SourceStatus, 0, len(srcs))
	for _, src := range srcs {
		ss = append(ss, src.status(s.at))
	}
	for _, f := range storageFiles(c, q != nil, st, ss) {
		s.written += uint64(f.Written)
	}
	if q != nil {
		s.appended = st.Appended
		for _, l := range st.Lanes {
			if l.Priority >= 0 && l.Priority < len(s.backlog) {
				s.backlog[l.Priority] += l.Events
				if l.Events > 0 {
					s.oldest[l.Priority] = max(s.oldest[l.Priority], l.OldestAge.Seconds())
				}
			}
		}
	}
	if fwd != nil {
		s.acked = fwd.Stats().Acked
		if rtt, err := fwd.RTT(); err == nil {
			s.rttMillis = float64(rtt.Microseconds()) / 1000
		}
	}
	return s
}

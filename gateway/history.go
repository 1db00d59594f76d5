package gateway

import (
	"bytes"
	"context"
	"os"
	"strconv"
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
	written   uint64                          // this process's bytes written to storage (/proc/self/io)
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
	q, fwd := g.q, g.fwd
	g.mu.Unlock()
	s := sample{at: time.Now(), written: bytesWritten(), rttMillis: -1}
	if q != nil {
		st := q.Stats()
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

// bytesWritten is what this process caused to be written to storage
// (write_bytes of /proc/self/io), 0 where there is none.
func bytesWritten() uint64 {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("write_bytes: ")); ok {
			n, _ := strconv.ParseUint(string(v), 10, 64)
			return n
		}
	}
	return 0
}

package gateway

import (
	"context"
	"time"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/status"
	"github.com/edgegw/edgegw/gateway/web"
)

// status.MaxPriority is buffer.MaxPriority (the read model imports
// nothing of edgegw): a difference does not compile.
const _ = uint(buffer.MaxPriority-status.MaxPriority) + uint(status.MaxPriority-buffer.MaxPriority)

// sampleHistory adds a sample to the page's history every
// web.HistoryEvery until ctx ends.
func (g *Gateway) sampleHistory(ctx context.Context) {
	t := time.NewTicker(web.HistoryEvery)
	defer t.Stop()
	for {
		g.web.History().Add(g.takeSample())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (g *Gateway) takeSample() web.Sample {
	g.mu.Lock()
	q, fwd, srcs, c := g.q, g.fwd, g.srcs, g.cfg
	g.mu.Unlock()
	s := web.Sample{At: time.Now(), RTTMillis: -1}
	var st buffer.Stats
	if q != nil {
		st = q.Stats()
	}
	ss := make([]status.SourceStatus, 0, len(srcs))
	for _, src := range srcs {
		ss = append(ss, src.status(s.At))
	}
	for _, f := range storageFiles(c, q != nil, st, ss) {
		s.Written += uint64(f.Written)
	}
	if q != nil {
		s.Appended = st.Appended
		for _, l := range st.Lanes {
			if l.Priority >= 0 && l.Priority < len(s.Backlog) {
				s.Backlog[l.Priority] += l.Events
				if l.Events > 0 {
					s.Oldest[l.Priority] = max(s.Oldest[l.Priority], l.OldestAge.Seconds())
				}
			}
		}
	}
	if fwd != nil {
		s.Acked = fwd.Stats().Acked
		if rtt, err := fwd.RTT(); err == nil {
			s.RTTMillis = float64(rtt.Microseconds()) / 1000
		}
	}
	return s
}

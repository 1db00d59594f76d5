package forward

import (
	"cmp"
	"math"
	"slices"

	"github.com/edgegw/edgegw/buffer"
)

// source is one stretch of one lane, read in seq order: with LiveFirst,
// each lane is two, its live events (seq >= the session's first live seq)
// and its backlog (below it, marked backfill).
type source struct {
	lane     buffer.Lane
	next, to uint64 // the next seq to read; to: bound, exclusive (0: none)
	backfill bool
	pending  []buffer.Record
	// ackFrom: the ack of pending[0] covers the lane's seqs ackFrom to
	// pending[0].Seq. Nothing in between was sent or will be: it was
	// skipped at read as expired (and the writer counts it so).
	ackFrom uint64
	// dry: the last read found nothing; a live source reads again when
	// the buffer changes, a backlog never does.
	dry bool
}

func (src *source) take() {
	src.ackFrom = src.pending[0].Seq + 1
	src.pending = src.pending[1:]
}

// scheduler picks the source of the next event: strict priority (live
// before backfill, then lane priority), except that every every-th pick
// goes to a lower source that has events, round robin, so none starves.
type scheduler struct {
	q       *buffer.Queue
	batch   int
	live    uint64 // with LiveFirst, the session's first live seq; else 0
	every   int
	sources []*source // by rank
	cands   []*source
	changed <-chan struct{} // closed when the buffer next changes
	picks   int
	rr      int
}

func newScheduler(q *buffer.Queue, o Options, live uint64) *scheduler {
	s := &scheduler{q: q, batch: o.Window, live: live, every: max(2, int(math.Round(1/o.LowerShare)))}
	s.refresh()
	return s
}

// refresh adds sources for lanes new since the last, and lets the live
// ones read again.
func (s *scheduler) refresh() {
	s.changed = s.q.Changed()
	for _, l := range s.q.Lanes() {
		if s.live == 0 {
			s.add(&source{lane: l})
		} else {
			s.add(&source{lane: l, next: s.live, ackFrom: s.live})
			s.add(&source{lane: l, to: s.live, backfill: true})
		}
	}
	for _, src := range s.sources {
		if src.to == 0 {
			src.dry = false
		}
	}
}

func (s *scheduler) add(src *source) {
	rank := func(a, b *source) int {
		if a.backfill != b.backfill {
			if a.backfill {
				return 1
			}
			return -1
		}
		return cmp.Or(cmp.Compare(a.lane.Priority, b.lane.Priority), cmp.Compare(a.lane.TTL, b.lane.TTL))
	}
	i, found := slices.BinarySearchFunc(s.sources, src, rank)
	if !found {
		s.sources = slices.Insert(s.sources, i, src)
	}
}

// pick returns the source whose first pending event goes next, or nil
// when there is none.
func (s *scheduler) pick() (*source, error) {
	select {
	case <-s.changed:
		s.refresh()
	default:
	}
	s.cands = s.cands[:0]
	for _, src := range s.sources {
		if len(src.pending) == 0 && !src.dry {
			recs, err := s.q.ReadLane(src.lane, src.next, src.to, s.batch)
			if err != nil {
				return nil, err
			}
			if len(recs) == 0 {
				src.dry = true
				continue
			}
			src.pending, src.ackFrom, src.next = recs, src.next, recs[len(recs)-1].Seq+1
		}
		if len(src.pending) > 0 {
			s.cands = append(s.cands, src)
		}
	}
	switch len(s.cands) {
	case 0:
		return nil, nil
	case 1:
		return s.cands[0], nil
	}
	if s.picks++; s.picks >= s.every {
		s.picks = 0
		s.rr = (s.rr + 1) % (len(s.cands) - 1)
		return s.cands[1+s.rr], nil
	}
	return s.cands[0], nil
}

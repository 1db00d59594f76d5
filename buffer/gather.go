package buffer

import (
	"time"
)

// A gatherer spaces commits CommitDelay apart (start to start) while
// readings trickle in, so each commit carries several: the wear is per
// commit, not per reading. It does not hold back appenders that wait for
// each commit before they append again (devices that wait for their
// PUBACK): spacing would cap each at one message per delay and gather
// nothing. Three signs tell them: every appender of the last commit is
// back (each mark group it held, and as many unmarked appends: nobody
// else is coming); the last commit carried GatherEvents/2 or more (a
// pipelining appender: its next batch waits for this commit); or
// gatherMisses delays in a row gathered nothing. The writer goroutine
// owns it.
type gatherer struct {
	delay      time.Duration
	start      time.Time       // of the last commit
	lastEvents int             // appended by the last commit
	lastGroups map[string]bool // the mark groups of its appends
	lastAnon   int             // its appends without marks
	misses     int             // delays in a row that gathered nothing
	offUntil   time.Time       // no delays before
}

// gatherMisses and gatherRest: eight delays in a row that gather nothing
// turn delays off for fifty delays. (Readings at random times leave a
// delay empty now and then: at 10/s about one in five; eight in a row,
// one in 400,000.)
const (
	gatherMisses = 8
	gatherRest   = 50
)

// committed notes a commit's start and its appenders.
func (g *gatherer) committed(start time.Time, batch []*appendReq) {
	g.start, g.lastEvents = start, events(batch)
	if g.delay <= 0 {
		return
	}
	clear(g.lastGroups)
	g.lastAnon = 0
	for _, r := range batch {
		anon := len(r.data) > 0
		for _, m := range r.marks {
			if m != nil {
				if g.lastGroups == nil {
					g.lastGroups = map[string]bool{}
				}
				g.lastGroups[string(m.Group)], anon = true, false
			}
		}
		if anon {
			g.lastAnon++
		}
	}
}

// allBack says whether batch holds every appender of the last commit
// again: each of its mark groups, and as many appends without marks.
func (g *gatherer) allBack(batch []*appendReq) bool {
	if g.lastEvents == 0 {
		return false
	}
	anon, groups := 0, 0
	var seen map[string]bool // the last commit's groups met in batch
	for _, r := range batch {
		marked := false
		for _, m := range r.marks {
			if m != nil {
				marked = true
				if g.lastGroups[string(m.Group)] && !seen[string(m.Group)] {
					if seen == nil {
						seen = make(map[string]bool, len(g.lastGroups))
					}
					seen[string(m.Group)] = true
					groups++
				}
			}
		}
		if !marked {
			anon++
		}
	}
	return groups == len(g.lastGroups) && anon >= g.lastAnon
}

// gather holds a small batch until CommitDelay after the last commit's
// start, or until GatherEvents events are waiting (or the queue closes).
func (q *Queue) gather(g *gatherer, batch []*appendReq) []*appendReq {
	if g.delay <= 0 || len(batch) == 0 || events(batch) >= GatherEvents {
		return batch
	}
	for _, r := range batch {
		if r.dead != nil || len(r.data) == 0 {
			return batch // a dead letter or a Flush: someone waits for it
		}
	}
	until := g.start.Add(g.delay)
	now := time.Now()
	if !now.Before(until) || now.Before(g.offUntil) || g.lastEvents >= GatherEvents/2 || g.allBack(batch) {
		return batch
	}
	n := events(batch)
	t := time.NewTimer(until.Sub(now))
	defer t.Stop()
	for events(batch) < GatherEvents && !g.allBack(batch) {
		select {
		case <-q.kick:
			batch = q.take(batch)
			continue
		case <-t.C:
			batch = q.take(batch)
		case <-q.quit:
			return batch // drainOnQuit commits the rest
		}
		break
	}
	if events(batch) > n {
		g.misses = 0
	} else if g.misses++; g.misses >= gatherMisses {
		g.misses, g.offUntil = 0, time.Now().Add(gatherRest*g.delay)
	}
	return batch
}

func events(batch []*appendReq) int {
	n := 0
	for _, r := range batch {
		n += len(r.data)
	}
	return n
}

func (q *Queue) batchFull(batch []*appendReq) bool {
	n := 0
	for _, r := range batch {
		n += len(r.data)
	}
	return n >= q.opts.MaxBatch
}

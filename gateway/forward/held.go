package forward

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/edgegw/edgegw/gateway/subject"
)

// A Held route is one whose events the stream does not capture. Its events
// stay in the buffer, in order, while every other route flows; once the
// stream captures it they are sent, exactly once, without a restart.
type Held struct {
	// Route is the route's subject filter (one of Options.Filters), or
	// the subject itself when no filter matches it.
	Route string
	// Subject is the first subject of the route found held.
	Subject string
	// Events counts its events passed over in this session; they stay in
	// the buffer (0: the route is not captured, none of its events was
	// read yet).
	Events uint64
	// Since is when it was found held.
	Since time.Time
	// Why says what the stream refuses and the fix.
	Why string
}

// recheckHeld is how often a session with held routes reads the stream's
// subjects again, and how often it logs each held route.
const recheckHeld = 5 * time.Second

// logHeldEvery bounds the log lines about one held route.
const logHeldEvery = time.Minute

// errStreamWidened ends a session whose stream now captures a held route:
// the next session reads the lanes from their start and sends them.
var errStreamWidened = errors.New("the stream's subjects changed")

// route is the filter of Options.Filters that subj is under, or subj.
func (f *Forwarder) route(subj string) string {
	for _, flt := range f.o.Filters {
		if subject.Covers([]string{flt}, subj) {
			return flt
		}
	}
	return subj
}

func (s *sess) heldWhy(route string) string {
	return fmt.Sprintf("stream %s does not capture %s (its subjects: %s); its events wait in the buffer: add %s to the stream's subjects (nats stream edit %s --subjects ...) or change the route's subject template",
		s.f.o.Stream.Name, route, strings.Join(s.captured, ", "), route, s.f.o.Stream.Name)
}

// holdUncovered holds, from the start of a session, each route whose
// filter the stream does not capture: it is a config problem to report
// before any of its events arrive. Entries of the previous session keep
// their Since.
func (s *sess) holdUncovered() {
	s.held = map[string]*Held{}
	for _, flt := range s.f.o.Filters {
		if !subject.Covers(s.captured, flt) {
			s.addHeld(flt, flt)
		}
	}
	s.publishHeld()
}

// hold passes over an event on subj, which the stream does not capture.
func (s *sess) hold(subj string) {
	r := s.f.route(subj)
	h := s.held[r]
	if h == nil {
		h = s.addHeld(r, subj)
	}
	if h.Subject == h.Route && r != subj {
		h.Subject = subj
	}
	h.Events++
	s.publishHeld()
}

func (s *sess) addHeld(route, subj string) *Held {
	now := time.Now()
	since := now
	if prev := s.f.held.Load(); prev != nil {
		for _, p := range *prev {
			if p.Route == route {
				since = p.Since
			}
		}
	}
	h := &Held{Route: route, Subject: subj, Since: since, Why: s.heldWhy(route)}
	s.held[route] = h
	s.checked = now
	last, logged := s.f.heldLogged[route]
	if !logged || now.Sub(last) >= logHeldEvery {
		s.f.heldLogged[route] = now
		s.f.log.Error("a route is held: the stream does not capture its subject; its events stay in the buffer and every other route flows", "route", route, "subject", subj, "fix", h.Why)
	}
	return h
}

// publishHeld makes the held routes what Stats says.
func (s *sess) publishHeld() {
	out := make([]Held, 0, len(s.held))
	for _, h := range s.held {
		out = append(out, *h)
	}
	slices.SortFunc(out, func(a, b Held) int { return strings.Compare(a.Route, b.Route) })
	s.f.held.Store(&out)
}

// recheck reads the stream's subjects again, every recheckHeld while a
// route is held, and logs each held route once a minute. Once the stream
// captures one, the session stops sending and ends when its window is
// in (s.widened).
func (s *sess) recheck(ctx context.Context) error {
	if len(s.held) == 0 || s.widened != nil || time.Since(s.checked) < recheckHeld {
		return s.widened
	}
	s.checked = time.Now()
	reqCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	info, err := s.st.Info(reqCtx)
	cancel()
	if err != nil {
		return nil // the uplink's trouble, found by the publishes
	}
	for _, h := range s.held {
		if subject.Covers(info.Config.Subjects, h.Subject) {
			s.widened = fmt.Errorf("%w: stream %s now captures %s", errStreamWidened, s.f.o.Stream.Name, h.Subject)
			return s.widened
		}
		if last := s.f.heldLogged[h.Route]; time.Since(last) >= logHeldEvery {
			s.f.heldLogged[h.Route] = time.Now()
			s.f.log.Error("a route is still held: the stream does not capture its subject", "route", h.Route, "subject", h.Subject, "events_passed_over", h.Events, "since", h.Since, "fix", h.Why)
		}
	}
	return nil
}

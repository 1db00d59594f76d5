package gateway

import (
	"context"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/event"
	"github.com/edgegw/edgegw/gateway/forward"
	"github.com/edgegw/edgegw/gateway/mqttsource"
	"github.com/edgegw/edgegw/sensors"
)

// What the tests use and nothing else does: the parts' own counters, for
// assertions finer than Status gives.

// Stats is a snapshot of the whole gateway, in the parts' own terms
// (Status is the operator's view).
type Stats struct {
	Buffer     buffer.Stats
	Forward    forward.Stats
	MQTT       mqttsource.Stats
	Duplicates uint64                   // redelivered MQTT copies dropped at commit
	Sensors    map[string]sensors.Stats // sensors and pins, by name
}

// Stats returns a snapshot; parts that are not running yet are zero.
func (g *Gateway) Stats() Stats {
	g.mu.Lock()
	q, fwd, srcs := g.q, g.fwd, g.srcs
	g.mu.Unlock()
	var s Stats
	for _, src := range srcs {
		s.Duplicates += src.duplicates.Load()
		switch p := src.Source.(type) {
		case *mqttsource.Source:
			s.MQTT = p.Stats()
		case interface{ Stats() sensors.Stats }:
			if s.Sensors == nil {
				s.Sensors = map[string]sensors.Stats{}
			}
			s.Sensors[src.Name()] = p.Stats()
		}
	}
	if q != nil {
		s.Buffer = q.Stats()
	}
	if fwd != nil {
		s.Forward = fwd.Stats()
	}
	return s
}

// FleetCaughtUp counts the fleet watches (one per reconnect) whose
// current values the agent has noted.
func (g *Gateway) FleetCaughtUp() uint64 {
	g.mu.Lock()
	a := g.fleet
	g.mu.Unlock()
	return a.caughtUp.Load()
}

// DeadLetters lists the buffer's dead-letter lane.
func (g *Gateway) DeadLetters() ([]buffer.DeadLetter, error) {
	g.mu.Lock()
	q := g.q
	g.mu.Unlock()
	return q.DeadLetters(0, 1<<20)
}

// BufferEmitter commits events to q, each with its redelivery mark (a
// redelivered copy of a stored event is dropped). Run gives each source its
// own, counting one (source.emit); this one is for benchmarks and tools.
func BufferEmitter(q *buffer.Queue) event.EmitFunc {
	return func(ctx context.Context, events ...event.Event) error {
		_, _, _, err := store(ctx, q, events)
		return err
	}
}

// ChangedSections is what the log names after a config change.
var ChangedSections = changedSections

// Stagger is how long a sensor's first poll waits.
var Stagger = stagger

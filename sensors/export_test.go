package sensors

// What the tests look at, and nothing else does.

// Bounces is the number of edges ignored inside a debounce window.
func (s *EdgeSource) Bounces() uint64 { return s.bounces.Load() }

// Total is the pulses counted since start.
func (p *PulseCounter) Total() uint64 { return p.total.Load() }

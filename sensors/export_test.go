package sensors

import "time"

// What the tests look at, and nothing else does.

// Bounces is the number of edges ignored inside a debounce window.
func (s *EdgeSource) Bounces() uint64 { return s.bounces.Load() }

// Total is the pulses counted since start.
func (p *PulseCounter) Total() uint64 { return p.total.Load() }

// Decode and Encode are a register's value from its words and back.
func (r ModbusRegister) Decode(words []uint16, byteOrder, wordOrder string) (float64, string, bool) {
	return r.decode(words, byteOrder, wordOrder)
}

func (r ModbusRegister) Encode(v float64, byteOrder, wordOrder string) ([]uint16, error) {
	return r.encode(v, byteOrder, wordOrder)
}

// Due is Report.due.
func (r Report) Due(last *LastSent, now time.Time, vals map[string]float64, text map[string]string) bool {
	d, _ := r.due(last, now, vals, text)
	return d
}

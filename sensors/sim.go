package sensors

import (
	"math"
	"math/rand/v2"
	"time"
)

// Sim is a simulated climate sensor with plausible, slowly drifting
// readings: for the demo, tests, and trying a config without hardware.
type Sim struct {
	rng   *rand.Rand
	start time.Time
	n     int
}

// NewSim returns a Sim; the same seed gives the same noise.
func NewSim(seed uint64) *Sim {
	return &Sim{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), start: time.Now()}
}

// Read returns temperature_c, humidity_pct and pressure_hpa.
func (s *Sim) Read() (map[string]float64, error) {
	s.n++
	day := 2 * math.Pi * time.Since(s.start).Hours() / 24
	round := func(v float64, digits float64) float64 { p := math.Pow(10, digits); return math.Round(v*p) / p }
	return map[string]float64{
		"temperature_c": round(21+1.5*math.Sin(day)+s.rng.NormFloat64()*0.05, 2),
		"humidity_pct":  round(45+5*math.Cos(day)+s.rng.NormFloat64()*0.3, 1),
		"pressure_hpa":  round(1013.25+s.rng.NormFloat64()*0.2, 1),
	}, nil
}

// Close does nothing.
func (s *Sim) Close() error { return nil }

package sensors_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/edgegw/edgegw/sensors"
)

// The edges of report by exception, one decision at a time.
func TestReportDue(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	last := &sensors.LastSent{Time: t0, Values: map[string]float64{"temperature_c": 20, "humidity_pct": 50}}
	r := sensors.Report{Deadband: 0.5, Heartbeat: time.Hour, Values: map[string]sensors.Band{"humidity_pct": {DeadbandPct: 10}}}
	at := t0.Add(time.Minute)
	vals := func(t, h float64) map[string]float64 {
		return map[string]float64{"temperature_c": t, "humidity_pct": h}
	}
	for _, c := range []struct {
		name string
		last *sensors.LastSent
		at   time.Time
		vals map[string]float64
		text map[string]string
		want bool
	}{
		{"first reading", nil, at, vals(20, 50), nil, true},
		{"inside the band", last, at, vals(20.5, 50), nil, false},
		{"past the band", last, at, vals(20.51, 50), nil, true},
		{"past it downwards", last, at, vals(19.4, 50), nil, true},
		{"a value's own band (10% of 50)", last, at, vals(20, 54.9), nil, false},
		{"past its own band", last, at, vals(20, 55.1), nil, true},
		{"NaN", last, at, vals(math.NaN(), 50), nil, true},
		{"a value appearing", last, at, map[string]float64{"temperature_c": 20, "humidity_pct": 50, "co2_ppm": 400}, nil, true},
		{"a value vanishing", last, at, map[string]float64{"temperature_c": 20}, nil, true},
		{"a value replaced by another", last, at, map[string]float64{"temperature_c": 20, "pressure_hpa": 50}, nil, true},
		{"heartbeat", last, t0.Add(time.Hour), vals(20, 50), nil, true},
		{"the clock went back", last, t0.Add(-time.Minute), vals(20, 50), nil, true},
		{"text changed", &sensors.LastSent{Time: t0, Values: vals(20, 50), Text: map[string]string{"mode": "auto"}}, at, vals(20, 50), map[string]string{"mode": "manual"}, true},
		{"text the same", &sensors.LastSent{Time: t0, Values: vals(20, 50), Text: map[string]string{"mode": "auto"}}, at, vals(20, 50), map[string]string{"mode": "auto"}, false},
	} {
		if got := r.Due(c.last, c.at, c.vals, c.text); got != c.want {
			t.Errorf("%s: due %v, want %v", c.name, got, c.want)
		}
	}
	// No band at all: any change is one.
	exact := sensors.Report{}
	if exact.Due(last, at, vals(20, 50), nil) || !exact.Due(last, at, vals(20.001, 50), nil) {
		t.Error("with no band, an unchanged reading must be suppressed and any change sent")
	}
	// A percent band of the last value's magnitude, and the wider band wins.
	pct := sensors.Report{Deadband: 0.1, DeadbandPct: 5}
	if pct.Due(&sensors.LastSent{Time: t0, Values: map[string]float64{"v": -100}}, at, map[string]float64{"v": -104.9}, nil) {
		t.Error("-104.9 is inside 5% of -100")
	}
}

// scripted is a Reader that returns its script's values one poll at a
// time and then ends the test's run.
type scripted struct {
	mu     sync.Mutex
	script []float64
	i      int
	done   func()
}

func (s *scripted) Read() (map[string]float64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.i >= len(s.script) {
		s.done()
		return nil, errors.New("script over")
	}
	v := s.script[s.i]
	s.i++
	return map[string]float64{"temperature_c": v}, nil
}

func (s *scripted) Close() error { return nil }

// A slowly varying temperature, noise under its deadband: it sends at
// most one poll in twenty, and each poll whose value moved past the band
// from the last value sent is sent, at that poll.
func TestReportSlowSensor(t *testing.T) {
	const polls, band = 400, 0.2
	rng := rand.New(rand.NewPCG(1, 2))
	script := make([]float64, polls)
	for i := range script {
		script[i] = 21 + 0.002*float64(i) + 0.1*(rng.Float64()-0.5) // drift 0.8, noise ±0.05
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rd := &scripted{script: script, done: cancel}
	p, err := sensors.NewPoller("boiler", time.Millisecond, func() (sensors.Reader, error) { return rd, nil }, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Report(sensors.Report{Deadband: band, Heartbeat: time.Hour}, nil)
	var sent []float64
	var states [][]byte
	p.Run(ctx, func(ctx context.Context, r sensors.Reading) error {
		var pl sensors.Payload
		json.Unmarshal(r.Payload, &pl)
		sent = append(sent, pl.Values["temperature_c"])
		states = append(states, r.State)
		return nil
	})
	if len(sent) == 0 || len(sent) > polls/20 {
		t.Fatalf("sent %d of %d polls, want 1..%d", len(sent), polls, polls/20)
	}
	// Replay: every poll past the band from the last sent is sent.
	var want []float64
	last := math.NaN()
	for _, v := range script {
		if math.IsNaN(last) || math.Abs(v-last) > band {
			want = append(want, v)
			last = v
		}
	}
	if len(want) != len(sent) {
		t.Fatalf("sent %v, want %v", sent, want)
	}
	for i := range want {
		if want[i] != sent[i] {
			t.Fatalf("reading %d: sent %v, want %v", i, sent[i], want[i])
		}
	}
	if st := p.Stats(); st.Suppressed != uint64(polls-len(sent)) {
		t.Errorf("suppressed %d, want %d", st.Suppressed, polls-len(sent))
	}
	// The state stored with the last reading gives it back.
	l := sensors.ParseLastSent(states[len(states)-1])
	if l == nil || l.Values["temperature_c"] != sent[len(sent)-1] {
		t.Errorf("last state %s", states[len(states)-1])
	}
	t.Logf("sent %d of %d polls", len(sent), polls)
}

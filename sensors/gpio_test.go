package sensors_test

import (
	"context"
	"encoding/json"
	"math"
	"sync"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"

	"github.com/edgegw/edgegw/gateway/wait"
	"github.com/edgegw/edgegw/sensors"
)

func testPin() *gpiotest.Pin {
	return &gpiotest.Pin{N: "GPIO17", Num: 17, EdgesChan: make(chan gpio.Level, 64)}
}

// configuredPin closes its channel once the source has configured it: In
// flushes pending edges, so a test sends edges only after that.
type configuredPin struct {
	*gpiotest.Pin
	done chan struct{}
	once sync.Once
}

func (p *configuredPin) In(pull gpio.Pull, edge gpio.Edge) error {
	err := p.Pin.In(pull, edge)
	p.once.Do(func() { close(p.done) })
	return err
}

var configured = map[*gpiotest.Pin]*configuredPin{}
var configuredMu sync.Mutex

func opener(p *gpiotest.Pin) sensors.PinOpener {
	configuredMu.Lock()
	cp := &configuredPin{Pin: p, done: make(chan struct{})}
	configured[p] = cp
	configuredMu.Unlock()
	return func(string) (gpio.PinIn, error) { return cp, nil }
}

// waitConfigured waits until the source has configured p.
func waitConfigured(t *testing.T, p *gpiotest.Pin) {
	t.Helper()
	configuredMu.Lock()
	cp := configured[p]
	configuredMu.Unlock()
	select {
	case <-cp.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the pin was never configured")
	}
}

func runSource(t *testing.T, run func(context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); run(ctx) }()
	return func() { cancel(); wg.Wait() }
}

func edges(t *testing.T, c *collector) []sensors.EdgePayload {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []sensors.EdgePayload
	for _, e := range c.events {
		var p sensors.EdgePayload
		if err := json.Unmarshal(e.Payload, &p); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// A door contact that bounces: three edges inside the debounce window are
// one change; a glitch that returns to the old level is none.
func TestEdgeDebounce(t *testing.T) {
	pin := testPin()
	s, err := sensors.NewEdgeSource("door", sensors.EdgeOptions{Pin: "GPIO17", Edge: sensors.Both, Pull: gpio.PullDown, Debounce: 50 * time.Millisecond}, opener(pin), nil)
	if err != nil {
		t.Fatal(err)
	}
	var c collector
	stop := runSource(t, func(ctx context.Context) error { return s.Run(ctx, c.emit) })
	defer stop()
	waitConfigured(t, pin)

	// No sleeps: each step waits for the source to have handled the last
	// one (a loaded machine only makes it slower, never wrong). Edges sent
	// together are inside one debounce window whenever the source gets
	// to them.
	pin.EdgesChan <- gpio.High // opens, bouncing
	pin.EdgesChan <- gpio.Low
	pin.EdgesChan <- gpio.High
	// Emitted once the window has closed.
	wait.For(t, "the opening", func() bool { return len(edges(t, &c)) == 1 })

	pin.EdgesChan <- gpio.Low // a glitch: back to high inside the window
	pin.EdgesChan <- gpio.High
	// Two bounces for the opening, two for the glitch (its second edge,
	// and a level that did not change), the last counted after its
	// window closed.
	wait.For(t, "the glitch", func() bool { return s.Bounces() == 4 })

	pin.EdgesChan <- gpio.Low // closes
	wait.For(t, "the closing", func() bool { return len(edges(t, &c)) == 2 })

	got := edges(t, &c)
	if !got[0].Level || got[0].Edge != "rising" || got[1].Level || got[1].Edge != "falling" {
		t.Fatalf("edges %+v", got)
	}
	if ev, bounces := s.Stats().Reads, s.Bounces(); ev != 2 || bounces < 3 {
		t.Fatalf("events %d bounces %d", ev, bounces)
	}
}

// A PIR sensor reported on rising edges only.
func TestEdgeRisingOnly(t *testing.T) {
	pin := testPin()
	s, _ := sensors.NewEdgeSource("pir", sensors.EdgeOptions{Pin: "GPIO17", Edge: sensors.Rising, Pull: gpio.PullDown, Debounce: time.Millisecond}, opener(pin), nil)
	var c collector
	stop := runSource(t, func(ctx context.Context) error { return s.Run(ctx, c.emit) })
	defer stop()
	waitConfigured(t, pin)
	for _, l := range []gpio.Level{gpio.High, gpio.Low, gpio.High, gpio.Low} {
		pin.EdgesChan <- l
		// Taken by the source, and its 1 ms window well past.
		wait.For(t, "the edge taken", func() bool { return len(pin.EdgesChan) == 0 })
		time.Sleep(20 * time.Millisecond)
	}
	wait.For(t, "two rising edges", func() bool { return len(edges(t, &c)) == 2 })
	time.Sleep(30 * time.Millisecond)
	for _, e := range edges(t, &c) {
		if e.Edge != "rising" {
			t.Fatalf("reported %+v", e)
		}
	}
}

func TestPulseArithmetic(t *testing.T) {
	v := sensors.PulseValues(30, 100, time.Minute, 0.5, "litres")
	want := map[string]float64{"pulses": 30, "pulses_total": 100, "litres_total": 50, "litres_per_s": 0.25, "interval_s": 60}
	for k, w := range want {
		if math.Abs(v[k]-w) > 1e-9 {
			t.Errorf("%s = %v, want %v", k, v[k], w)
		}
	}
	if v := sensors.PulseValues(5, 5, 0, 1, "pulses"); v["pulses_per_s"] != 0 {
		t.Errorf("zero interval: rate %v", v["pulses_per_s"])
	}
}

// A meter's pulses are counted; pulses closer than the debounce are not.
func TestPulseCounter(t *testing.T) {
	pin := testPin()
	p, err := sensors.NewPulseCounter("water", sensors.PulseOptions{Pin: "GPIO27", Pull: gpio.PullDown, Debounce: 5 * time.Millisecond, Interval: 100 * time.Millisecond, Scale: 0.5, Unit: "litres"}, opener(pin), nil)
	if err != nil {
		t.Fatal(err)
	}
	var c collector
	stop := runSource(t, func(ctx context.Context) error { return p.Run(ctx, c.emit) })
	defer stop()
	waitConfigured(t, pin)
	for i := range 10 { // ten clean pulses, each counted before the next
		pin.EdgesChan <- gpio.High
		pin.EdgesChan <- gpio.Low
		wait.For(t, "the pulse counted", func() bool { return p.Total() == uint64(i+1) })
		time.Sleep(10 * time.Millisecond) // past the 5 ms debounce from its count
	}
	for range 5 { // contact bounce: five edges inside one debounce
		pin.EdgesChan <- gpio.High
		pin.EdgesChan <- gpio.Low
	}
	wait.For(t, "the bouncing pulse counted once", func() bool { return p.Total() == 11 })
	time.Sleep(50 * time.Millisecond)
	if p.Total() != 11 {
		t.Fatalf("total %d, want 11", p.Total())
	}
	wait.For(t, "a report", func() bool { return c.count("water") >= 1 })
	c.mu.Lock()
	last := c.events[len(c.events)-1]
	c.mu.Unlock()
	var pl sensors.PulsePayload
	if err := json.Unmarshal(last.Payload, &pl); err != nil {
		t.Fatal(err)
	}
	if pl.Values["litres_total"] != pl.Values["pulses_total"]*0.5 || pl.Values["interval_s"] <= 0 {
		t.Fatalf("report %s", last.Payload)
	}
}

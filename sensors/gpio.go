package sensors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"periph.io/x/conn/v3/gpio"
)

// PinOpener returns an input pin by name ("GPIO17"). The gateway's default
// uses periph's host drivers (the GPIO character device on Raspberry Pi OS
// Bookworm and the Pi 5); tests use periph's gpiotest pins.
type PinOpener func(name string) (gpio.PinIn, error)

// Edge says which level changes an EdgeSource reports.
type Edge int

const (
	Both Edge = iota
	Rising
	Falling
)

// ParseEdge reads rising, falling or both ("" is both).
func ParseEdge(s string) (Edge, error) {
	switch s {
	case "", "both":
		return Both, nil
	case "rising":
		return Rising, nil
	case "falling":
		return Falling, nil
	}
	return 0, fmt.Errorf("edge %q is not rising, falling or both", s)
}

// ParsePull parses the config spelling of a pull: up, down (or empty)
// and none.
func ParsePull(s string) (gpio.Pull, error) {
	switch s {
	case "", "down":
		return gpio.PullDown, nil
	case "up":
		return gpio.PullUp, nil
	case "none", "float":
		return gpio.Float, nil
	}
	return 0, fmt.Errorf("pull %q is not up, down or none", s)
}

// EdgePayload is what an EdgeSource publishes for each debounced change.
type EdgePayload struct {
	Sensor string    `json:"sensor"`
	TS     time.Time `json:"ts"`
	Level  bool      `json:"level"` // true: high
	Edge   string    `json:"edge"`  // rising or falling
}

// EdgeSource reports level changes of an input pin (door contacts, PIR
// motion), debounced: after the first edge it waits Debounce, reads the
// settled level, and reports it only if it differs from the last one
// reported, timestamped with that first edge. Bounces inside the window
// are counted, not reported.
type EdgeSource struct {
	name string
	o    EdgeOptions
	open PinOpener
	log  *slog.Logger

	health
	bounces atomic.Uint64
}

// EdgeOptions configure an EdgeSource.
type EdgeOptions struct {
	Pin      string        // the GPIO line's name, e.g. GPIO17
	Edge     Edge          // which changes to report (Both by default)
	Pull     gpio.Pull     // the input's pull (gpio.PullDown in the config's default)
	Debounce time.Duration // how long a change must settle
}

// NewEdgeSource checks its arguments; it opens nothing.
func NewEdgeSource(name string, o EdgeOptions, open PinOpener, log *slog.Logger) (*EdgeSource, error) {
	if name == "" || o.Pin == "" || open == nil {
		return nil, errors.New("sensors: an edge source needs a name, a pin and an opener")
	}
	if o.Debounce < 0 {
		return nil, fmt.Errorf("sensors: %s: debounce must not be negative", name)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &EdgeSource{name: name, o: o, open: open, log: log.With("sensor", name)}, nil
}

// Name is the sensor's name.
func (s *EdgeSource) Name() string { return s.name }

// Run watches the pin until ctx ends; a pin that cannot be opened is
// retried with backoff, like a failing I²C sensor.
func (s *EdgeSource) Run(ctx context.Context, emit EmitFunc) error {
	pin, err := openPin(ctx, s.o.Pin, s.o.Pull, s.open, &s.health, s.log)
	if pin == nil {
		return err
	}
	defer s.available.Store(false)
	var storeLog throttle
	last := pin.Read()
	for ctx.Err() == nil {
		if !pin.WaitForEdge(250 * time.Millisecond) {
			continue // look at ctx now and then
		}
		first := time.Now()
		// Let it settle: every further edge inside the window is a bounce.
		for deadline := first.Add(s.o.Debounce); ; {
			rest := time.Until(deadline)
			if rest <= 0 || !pin.WaitForEdge(rest) {
				break
			}
			s.bounces.Add(1)
		}
		level := pin.Read()
		if level == last {
			s.bounces.Add(1) // went and came back inside the window
			continue
		}
		last = level
		edge := "falling"
		if level == gpio.High {
			edge = "rising"
		}
		if s.o.Edge == Rising && level != gpio.High || s.o.Edge == Falling && level != gpio.Low {
			continue
		}
		b, _ := json.Marshal(EdgePayload{Sensor: s.name, TS: first, Level: bool(level), Edge: edge})
		s.emitted(ctx, emit(ctx, Reading{Sensor: s.name, Time: first, Payload: b}), s.log, &storeLog, "edges")
	}
	return nil
}

// PulsePayload is what a PulseCounter publishes every interval.
type PulsePayload struct {
	Sensor string             `json:"sensor"`
	TS     time.Time          `json:"ts"`
	Values map[string]float64 `json:"values"`
}

// PulseCounter counts rising edges (water and energy meters) and reports,
// every interval, the pulses in it, the total since start, and the rate per
// second; Scale turns pulses into a unit (litres per pulse, Wh per impulse)
// reported as Name_total and Name_per_s. Edges closer than Debounce to the
// last counted one are ignored.
type PulseCounter struct {
	name string
	o    PulseOptions
	open PinOpener
	log  *slog.Logger

	health
	total atomic.Uint64
}

// PulseOptions configure a PulseCounter.
type PulseOptions struct {
	Pin      string        // the GPIO line's name, e.g. GPIO27
	Pull     gpio.Pull     // the input's pull
	Debounce time.Duration // edges closer than this to the last counted one are ignored
	Interval time.Duration // how often to report (required)
	Scale    float64       // unit per pulse (default 1)
	Unit     string        // e.g. litres (default "pulses")
}

// NewPulseCounter checks its arguments; it opens nothing.
func NewPulseCounter(name string, o PulseOptions, open PinOpener, log *slog.Logger) (*PulseCounter, error) {
	if name == "" || o.Pin == "" || open == nil {
		return nil, errors.New("sensors: a pulse counter needs a name, a pin and an opener")
	}
	if o.Interval <= 0 || o.Debounce < 0 {
		return nil, fmt.Errorf("sensors: %s: interval must be positive and debounce not negative", name)
	}
	if o.Scale == 0 {
		o.Scale = 1
	}
	if o.Unit == "" {
		o.Unit = "pulses"
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &PulseCounter{name: name, o: o, open: open, log: log.With("sensor", name)}, nil
}

// Name is the sensor's name.
func (p *PulseCounter) Name() string { return p.name }

// PulseValues is the arithmetic of one report: count pulses in elapsed,
// total so far, scaled.
func PulseValues(count, total uint64, elapsed time.Duration, scale float64, unit string) map[string]float64 {
	rate := 0.0
	if elapsed > 0 {
		rate = float64(count) / elapsed.Seconds()
	}
	return map[string]float64{
		"pulses":        float64(count),
		unit + "_total": float64(total) * scale,
		unit + "_per_s": rate * scale,
		"pulses_total":  float64(total),
		"interval_s":    elapsed.Seconds(),
	}
}

// Run counts until ctx ends, reporting every interval.
func (p *PulseCounter) Run(ctx context.Context, emit EmitFunc) error {
	pin, err := openPin(ctx, p.o.Pin, p.o.Pull, p.open, &p.health, p.log)
	if pin == nil {
		return err
	}
	defer p.available.Store(false)
	var storeLog throttle
	start := time.Now()
	next := start.Add(p.o.Interval)
	var count uint64
	var lastPulse time.Time
	for ctx.Err() == nil {
		if pin.WaitForEdge(min(time.Until(next), 250*time.Millisecond)) {
			now := time.Now()
			if pin.Read() == gpio.High && (lastPulse.IsZero() || now.Sub(lastPulse) >= p.o.Debounce) {
				lastPulse = now
				count++
				p.total.Add(1)
			}
		}
		if now := time.Now(); !now.Before(next) {
			vals := PulseValues(count, p.total.Load(), now.Sub(start), p.o.Scale, p.o.Unit)
			b, _ := json.Marshal(PulsePayload{Sensor: p.name, TS: now, Values: vals})
			p.emitted(ctx, emit(ctx, Reading{Sensor: p.name, Time: now, Payload: b}), p.log, &storeLog, "counts")
			count, start, next = 0, now, now.Add(p.o.Interval)
		}
	}
	return nil
}

// openPin opens and configures the pin for both edges, retrying with
// backoff until ctx ends (then it returns nil, nil).
func openPin(ctx context.Context, name string, pull gpio.Pull, open PinOpener, h *health, log *slog.Logger) (gpio.PinIn, error) {
	backoff := time.Second
	var failLog throttle
	for {
		pin, err := open(name)
		if err == nil {
			if err = pin.In(pull, gpio.BothEdges); err == nil {
				h.available.Store(true)
				return pin, nil
			}
		}
		h.failed(fmt.Sprintf("pin %s: %v", name, err))
		if failLog.ok() {
			log.Warn("GPIO pin unavailable; retrying", "pin", name, "err", err, "retry_in", backoff)
		}
		if !sleep(ctx, backoff) {
			return nil, nil
		}
		backoff = min(2*backoff, time.Minute)
	}
}

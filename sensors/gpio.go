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

	"github.com/edgegw/edgegw/gateway/event"
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
	name, subject, pinName string
	edge                   Edge
	pull                   gpio.Pull
	debounce               time.Duration
	open                   PinOpener
	log                    *slog.Logger

	health
	bounces atomic.Uint64
}

var _ event.Source = (*EdgeSource)(nil)

// NewEdgeSource checks its arguments; it opens nothing.
func NewEdgeSource(name, subject, pin string, edge Edge, pull gpio.Pull, debounce time.Duration, open PinOpener, log *slog.Logger) (*EdgeSource, error) {
	if name == "" || subject == "" || pin == "" || open == nil {
		return nil, errors.New("sensors: an edge source needs a name, a subject, a pin and an opener")
	}
	if debounce < 0 {
		return nil, fmt.Errorf("sensors: %s: debounce must not be negative", name)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &EdgeSource{name: name, subject: subject, pinName: pin, edge: edge, pull: pull, debounce: debounce, open: open, log: log.With("sensor", name)}, nil
}

// Name is the sensor's name.
func (s *EdgeSource) Name() string { return s.name }

// Bounces is the number of edges ignored inside a debounce window.
func (s *EdgeSource) Bounces() uint64 { return s.bounces.Load() }

// Run watches the pin until ctx ends; a pin that cannot be opened is
// retried with backoff, like a failing I²C sensor.
func (s *EdgeSource) Run(ctx context.Context, emit event.EmitFunc) error {
	pin, err := openPin(ctx, s.pinName, s.pull, s.open, &s.health, s.log)
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
		for deadline := first.Add(s.debounce); ; {
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
		if s.edge == Rising && level != gpio.High || s.edge == Falling && level != gpio.Low {
			continue
		}
		b, _ := json.Marshal(EdgePayload{Sensor: s.name, TS: first, Level: bool(level), Edge: edge})
		s.emitted(ctx, emit(ctx, event.Event{Subject: s.subject, Source: s.name, Time: first, Payload: b}), s.log, &storeLog, "edges")
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
	name, subject, pinName string
	pull                   gpio.Pull
	debounce, interval     time.Duration
	scale                  float64
	unit                   string
	open                   PinOpener
	log                    *slog.Logger

	health
	total atomic.Uint64
}

var _ event.Source = (*PulseCounter)(nil)

// NewPulseCounter checks its arguments; it opens nothing.
func NewPulseCounter(name, subject, pin string, pull gpio.Pull, debounce, interval time.Duration, scale float64, unit string, open PinOpener, log *slog.Logger) (*PulseCounter, error) {
	if name == "" || subject == "" || pin == "" || open == nil {
		return nil, errors.New("sensors: a pulse counter needs a name, a subject, a pin and an opener")
	}
	if interval <= 0 || debounce < 0 {
		return nil, fmt.Errorf("sensors: %s: interval must be positive and debounce not negative", name)
	}
	if scale == 0 {
		scale = 1
	}
	if unit == "" {
		unit = "pulses"
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &PulseCounter{name: name, subject: subject, pinName: pin, pull: pull, debounce: debounce, interval: interval, scale: scale, unit: unit, open: open, log: log.With("sensor", name)}, nil
}

// Name is the sensor's name.
func (p *PulseCounter) Name() string { return p.name }

// Total is the pulses counted since start.
func (p *PulseCounter) Total() uint64 { return p.total.Load() }

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
func (p *PulseCounter) Run(ctx context.Context, emit event.EmitFunc) error {
	pin, err := openPin(ctx, p.pinName, p.pull, p.open, &p.health, p.log)
	if pin == nil {
		return err
	}
	defer p.available.Store(false)
	var storeLog throttle
	start := time.Now()
	next := start.Add(p.interval)
	var count uint64
	var lastPulse time.Time
	for ctx.Err() == nil {
		if pin.WaitForEdge(min(time.Until(next), 250*time.Millisecond)) {
			now := time.Now()
			if pin.Read() == gpio.High && (lastPulse.IsZero() || now.Sub(lastPulse) >= p.debounce) {
				lastPulse = now
				count++
				p.total.Add(1)
			}
		}
		if now := time.Now(); !now.Before(next) {
			vals := PulseValues(count, p.total.Load(), now.Sub(start), p.scale, p.unit)
			b, _ := json.Marshal(PulsePayload{Sensor: p.name, TS: now, Values: vals})
			p.emitted(ctx, emit(ctx, event.Event{Subject: p.subject, Source: p.name, Time: now, Payload: b}), p.log, &storeLog, "counts")
			count, start, next = 0, now, now.Add(p.interval)
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

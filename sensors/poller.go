// Package sensors reads sensors wired to the box itself (I²C, 1-Wire, GPIO,
// and simulated ones for demos and tests) with periph.io, and produces
// their readings. It stands alone, as periph's device packages do: it
// knows nothing of the gateway, the buffer or NATS. A source's Run takes
// an EmitFunc; the gateway gives it one that turns each Reading into an
// event on the sensor's subject.
package sensors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// A Reader takes one reading of named values, each name carrying its unit
// ("temperature_c", "humidity_pct", "pressure_hpa").
type Reader interface {
	Read() (map[string]float64, error)
	Close() error
}

// OpenFunc opens a Reader: the bus and the device. It is called again,
// with backoff, after any failure, so a sensor unplugged and plugged back
// recovers on its own.
type OpenFunc func() (Reader, error)

// Payload is the JSON a reading is published as. Text values (a Modbus
// device's model or serial number) sit in "values" beside the numbers.
type Payload struct {
	Sensor string             `json:"sensor"`
	TS     time.Time          `json:"ts"`
	Values map[string]float64 `json:"values"`
	Text   map[string]string  `json:"-"`
}

// A TextReader also has text values, those of its last Read.
type TextReader interface {
	Strings() map[string]string
}

type payloadJSON struct {
	Sensor string         `json:"sensor"`
	TS     time.Time      `json:"ts"`
	Values map[string]any `json:"values"`
}

// MarshalJSON puts the text values among the numbers.
func (p Payload) MarshalJSON() ([]byte, error) {
	if len(p.Text) == 0 {
		type plain Payload
		return json.Marshal(plain(p))
	}
	vals := make(map[string]any, len(p.Values)+len(p.Text))
	for k, v := range p.Values {
		vals[k] = v
	}
	for k, v := range p.Text {
		vals[k] = v
	}
	return json.Marshal(payloadJSON{Sensor: p.Sensor, TS: p.TS, Values: vals})
}

// UnmarshalJSON sorts the values into numbers and text.
func (p *Payload) UnmarshalJSON(b []byte) error {
	var j payloadJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*p = Payload{Sensor: j.Sensor, TS: j.TS}
	for k, v := range j.Values {
		switch v := v.(type) {
		case float64:
			if p.Values == nil {
				p.Values = map[string]float64{}
			}
			p.Values[k] = v
		case string:
			if p.Text == nil {
				p.Text = map[string]string{}
			}
			p.Text[k] = v
		default:
			return fmt.Errorf("value %q: %T is neither a number nor text", k, v)
		}
	}
	return nil
}

// Poller reads one sensor every Interval and emits each reading.
type Poller struct {
	name     string
	interval time.Duration
	open     OpenFunc
	log      *slog.Logger
	now      chan chan<- nowReading // ReadNow's requests, served by Run
	phase    time.Duration          // before the first read (Stagger)
	report   *Report                // report by exception, if set
	last     *LastSent              // what was sent last (Run's)

	health
}

type nowReading struct {
	p   Payload
	err error
}

// NewPoller checks its arguments; it opens nothing.
func NewPoller(name string, interval time.Duration, open OpenFunc, log *slog.Logger) (*Poller, error) {
	if name == "" || open == nil {
		return nil, errors.New("sensors: a poller needs a name and an open function")
	}
	if interval <= 0 {
		return nil, fmt.Errorf("sensors: %s: interval must be positive", name)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Poller{name: name, interval: interval, open: open, log: log.With("sensor", name), now: make(chan chan<- nowReading)}, nil
}

// Name is the sensor's name.
func (p *Poller) Name() string { return p.name }

// Report turns on report by exception: readings are sent only when r
// says so (a value past its band, the heartbeat), the rest counted as
// suppressed. last is what was sent before a restart (the gateway stores
// it with each reading sent), or nil. Call it before Run.
func (p *Poller) Report(r Report, last *LastSent) { p.report, p.last = &r, last }

// Stagger delays the first read by d, so devices that share a line (a
// serial port, a Modbus gateway) are polled spread across the interval,
// not all at once. Call it before Run.
func (p *Poller) Stagger(d time.Duration) { p.phase = d }

// Run reads every interval until ctx ends. A failing sensor (missing bus,
// NACK, CRC error) is closed, counted, logged (the first failure and then
// at most once a minute) and reopened with backoff from one interval up to
// a minute; it never returns an error for that, so it never stops the
// other sources. Each reading is timestamped when it is taken.
func (p *Poller) Run(ctx context.Context, emit EmitFunc) error {
	var r Reader
	defer func() {
		p.available.Store(false)
		if r != nil {
			r.Close()
		}
	}()
	backoff := p.interval
	var failLog, storeLog throttle
	fail := func(what string, err error) {
		msg := fmt.Sprintf("%s: %v", what, err)
		p.failed(msg)
		if failLog.ok() {
			p.log.Warn("sensor unavailable; retrying", "err", msg, "retry_in", backoff, "failures", p.failures.Load())
		}
	}
	if p.phase > 0 && !sleep(ctx, p.phase) {
		return nil
	}
	tick := time.NewTicker(p.interval)
	defer tick.Stop()
	for {
		if r == nil {
			var err error
			if r, err = p.open(); err != nil {
				r = nil
				fail("open", err)
				if !sleep(ctx, backoff) {
					return nil
				}
				backoff = min(2*backoff, time.Minute)
				continue
			}
		}
		ts, vals, err := read(r)
		if err != nil {
			r.Close()
			r = nil
			fail("read", err)
			if !sleep(ctx, backoff) {
				return nil
			}
			backoff = min(2*backoff, time.Minute)
			continue
		}
		if !p.available.Swap(true) && p.failures.Load() > 0 {
			p.log.Info("sensor back", "failures", p.failures.Load())
		}
		backoff = p.interval
		if err := p.send(ctx, emit, ts, vals, textOf(r), &storeLog); err != nil {
			return err
		}
	wait:
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case reply := <-p.now:
			ts, vals, err := read(r)
			if err != nil {
				reply <- nowReading{err: fmt.Errorf("%s: read: %w", p.name, err)}
				r.Close()
				r = nil
				fail("read", err)
				continue // the next pass reopens it
			}
			reply <- nowReading{p: Payload{Sensor: p.name, TS: ts, Values: vals, Text: textOf(r)}}
			goto wait
		}
	}
}

// ReadNow asks the running poller for a reading between its own, on the
// reader it holds (Run owns the sensor; nothing else touches the bus). It
// is not stored. It waits for ctx while the sensor is being reopened.
func (p *Poller) ReadNow(ctx context.Context) (Payload, error) {
	reply := make(chan nowReading, 1)
	select {
	case p.now <- reply:
	case <-ctx.Done():
		msg := "not running"
		if e := p.Stats().LastError; e != "" {
			msg = e
		}
		return Payload{}, fmt.Errorf("%s: no reading (%s): %w", p.name, msg, ctx.Err())
	}
	select {
	case r := <-reply:
		return r.p, r.err
	case <-ctx.Done():
		return Payload{}, ctx.Err()
	}
}

// ReadOnce opens, reads and closes: `edgegw sensors read`.
func (p *Poller) ReadOnce() (Payload, error) {
	r, err := p.open()
	if err != nil {
		return Payload{}, fmt.Errorf("%s: open: %w", p.name, err)
	}
	defer r.Close()
	ts, vals, err := read(r)
	if err != nil {
		return Payload{}, fmt.Errorf("%s: read: %w", p.name, err)
	}
	return Payload{Sensor: p.name, TS: ts, Values: vals, Text: textOf(r)}, nil
}

// send emits a reading, or with report by exception counts it suppressed
// when nothing moved.
func (p *Poller) send(ctx context.Context, emit EmitFunc, ts time.Time, vals map[string]float64, text map[string]string, storeLog *throttle) error {
	var state []byte
	var sent *LastSent
	if p.report != nil {
		due, why := p.report.due(p.last, ts, vals, text)
		if !due {
			p.suppressed.Add(1)
			return nil
		}
		sent = &LastSent{Time: ts, Values: vals, Text: text}
		state = sent.encode()
		p.log.Debug("reading sent", "why", why)
	}
	b, err := json.Marshal(Payload{Sensor: p.name, TS: ts, Values: vals, Text: text})
	if err != nil {
		return fmt.Errorf("sensors: %s: %w", p.name, err) // NaN or Inf: a driver bug
	}
	err = emit(ctx, Reading{Sensor: p.name, Time: ts, Payload: b, State: state})
	if err == nil && sent != nil {
		p.last = sent // only once stored: a reading not stored is no reference
	}
	p.emitted(ctx, err, p.log, storeLog, "readings")
	return nil
}

// textOf is r's text values, if it has any.
func textOf(r Reader) map[string]string {
	if t, ok := r.(TextReader); ok {
		return t.Strings()
	}
	return nil
}

func read(r Reader) (time.Time, map[string]float64, error) {
	ts := time.Now()
	vals, err := r.Read()
	return ts, vals, err
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Package gateway wires edgegw together: config → sources → buffer →
// forwarder, and runs them under one context.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2creg"
	"periph.io/x/conn/v3/onewire"
	"periph.io/x/conn/v3/onewire/onewirereg"
	"periph.io/x/host/v3"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/forward"
	"github.com/edgegw/edgegw/gateway/status"
	"github.com/edgegw/edgegw/gateway/subject"
	"github.com/edgegw/edgegw/gateway/web"
	"github.com/edgegw/edgegw/sensors"
)

// Options are what New takes besides the config.
type Options struct {
	Logger *slog.Logger // nil: discard
	// Version is reported by /status and edgegw_build_info.
	Version string
	// OpenI2C opens an I²C bus by name ("1", "/dev/i2c-1"). nil means the
	// host's buses through periph.io; tests give a periph i2ctest bus.
	OpenI2C func(name string) (i2c.BusCloser, error)
	// OpenOneWire opens a 1-Wire bus by name ("" for the first). nil means
	// the host's buses through periph.io (the kernel's w1 bus via netlink).
	OpenOneWire func(name string) (onewire.BusCloser, error)
	// OpenPin opens a GPIO input by name ("GPIO17"). nil means the host's
	// GPIO lines through periph.io; tests give a periph gpiotest pin.
	OpenPin sensors.PinOpener
	// OpenOutput opens a GPIO output by name (the outputs section). nil
	// means the host's GPIO lines; tests give a periph gpiotest pin.
	OpenOutput func(name string) (gpio.PinOut, error)
}

// Gateway is one running edgegw.
type Gateway struct {
	o     Options
	local *config.Config // as New got it: the file, without fleet overlays
	log   *slog.Logger
	web   *web.Web // the page, metrics and history

	mu       sync.Mutex     // guards the parts below, set by Run
	cfg      *config.Config // the effective config: local, or with overlays (fleet)
	fleet    *fleetAgent
	started  time.Time
	httpAddr net.Addr
	q        *buffer.Queue
	fwd      *forward.Forwarder
	srcs     []*source
	outputs  map[string]*output // by name; kept across fleet config changes

	modbus *sensors.ModbusPorts // the modbus sensors' connections, shared by URL
	wire   *forward.Wire        // the uplink's bytes on the network since New

}

// New checks cfg; it opens and starts nothing.
func New(cfg *config.Config, o Options) (*Gateway, error) {
	if cfg == nil {
		return nil, errors.New("gateway: no config")
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{o: o, local: cfg, cfg: cfg, log: log, modbus: sensors.NewModbusPorts(log.With("component", "modbus")), wire: &forward.Wire{}}
	g.web = web.New(g, g.log)
	return g, nil
}

// Run opens the buffer, connects upstream, and runs the sources and the
// forwarder until ctx ends; then it stops ingest, lets the forwarder wait
// for its in-flight acks, and closes the buffer. It returns nil on a clean
// shutdown, or the error that stopped it (a refused credential, a missing
// stream, a buffer that cannot be opened). With a fleet section, the
// config can change while it runs (docs/fleet.md).
func (g *Gateway) Run(ctx context.Context) error {
	g.mu.Lock()
	g.started = time.Now()
	g.mu.Unlock()
	if g.local.Fleet != nil {
		return g.runFleet(ctx)
	}
	return g.runConfigs(ctx, g.local, nil, nil)
}

// Config is the effective config: the file's, or with a fleet, the file
// with the overlays applied.
func (g *Gateway) Config() *config.Config { return g.config() }

// config is the effective config.
func (g *Gateway) config() *config.Config {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cfg
}

// startHTTP serves an http section; the returned func stops it.
func (g *Gateway) startHTTP(h config.HTTPConfig) (stop func(), err error) {
	ln, users, err := listen(h)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	g.httpAddr = nil
	if ln != nil {
		g.httpAddr = ln.Addr()
	}
	g.mu.Unlock()
	if ln == nil {
		return func() {}, nil
	}
	return g.serveHTTP(ln, users), nil
}

// openBuffer opens the buffer file (its directory made if need be) and
// says so when a damaged one had to be set aside.
func (g *Gateway) openBuffer(c *config.Config) (*buffer.Queue, error) {
	if err := os.MkdirAll(filepath.Dir(c.Buffer.Path), 0o750); err != nil {
		return nil, fmt.Errorf("gateway: buffer directory: %w", err)
	}
	q, err := buffer.Open(c.Buffer.Path, bufferOptions(c, g.web.ObserveCommit))
	if err != nil {
		return nil, err
	}
	if ce := q.Quarantine(); ce != nil {
		g.log.Error("buffer file was unusable and has been replaced", "err", ce)
	}
	return q, nil
}

// Pollers builds a poller per configured polled sensor; it opens nothing.
func (g *Gateway) Pollers() ([]*sensors.Poller, error) {
	var out []*sensors.Poller
	for _, sc := range g.config().Sensors {
		if sensors.IsGPIO(sc.Driver) {
			continue // event-driven, not polled: see sensorSources
		}
		p, err := sensors.NewPoller(sc.Name, sc.Interval, g.opener(sc), g.log)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// sensorSource builds a configured sensor, pin or pulse counter as an
// event source on its subject, with the kind /status shows.
func (g *Gateway) sensorSource(c *config.Config, sc config.SensorConfig, q *buffer.Queue) (*source, error) {
	open := g.o.OpenPin
	if open == nil {
		open = hostPin
	}
	subj, err := subject.ForSensor(sc.Subject, c.Gateway.ID, sc.Name)
	if err != nil {
		return nil, fmt.Errorf("sensors %s: %w", sc.Name, err)
	}
	var r sensorRunner
	kind := status.KindGPIO
	pull, _ := sensors.ParsePull(sc.Pull)
	switch sc.Driver {
	case "gpio_edge":
		edge, _ := sensors.ParseEdge(sc.Edge)
		r, err = sensors.NewEdgeSource(sc.Name, sensors.EdgeOptions{Pin: sc.Pin, Edge: edge, Pull: pull, Debounce: sc.Debounce}, open, g.log)
	case "pulse_counter":
		r, err = sensors.NewPulseCounter(sc.Name, sensors.PulseOptions{Pin: sc.Pin, Pull: pull, Debounce: sc.Debounce, Interval: sc.Interval, Scale: sc.Scale, Unit: sc.Unit}, open, g.log)
	default:
		var p *sensors.Poller
		p, err = sensors.NewPoller(sc.Name, sc.Interval, g.opener(sc), g.log)
		if p != nil {
			p.Stagger(stagger(c.Sensors, sc))
			if sc.Report != nil && q != nil {
				// What it sent last, stored with that reading.
				p.Report(*sc.Report, sensors.ParseLastSent(q.MarkToken([]byte(reportSlot(sc.Name)))))
			}
		}
		r, kind = p, status.KindSensor
	}
	if err != nil {
		return nil, err
	}
	return &source{Source: sensorSource{r, subj, sc.Lane()}, kind: kind}, nil
}

// stagger is how long sc's first poll waits: the modbus devices that share
// a URL (a serial port, a TCP gateway) are spread evenly across the
// interval, so their polls do not queue for the line all at once.
func stagger(all []config.SensorConfig, sc config.SensorConfig) time.Duration {
	if sc.Driver != "modbus" {
		return 0
	}
	k, n := 0, 0
	for _, o := range all {
		if o.Driver == "modbus" && o.URL == sc.URL {
			if o.Name == sc.Name {
				k = n
			}
			n++
		}
	}
	return sc.Interval * time.Duration(k) / time.Duration(max(n, 1))
}

// hostPin opens a GPIO input of this machine.
func hostPin(name string) (gpio.PinIn, error) { return hostLine(name) }

// hostLine opens a GPIO line of this machine through periph.io.
func hostLine(name string) (gpio.PinIO, error) {
	if _, err := host.Init(); err != nil {
		return nil, err
	}
	p := gpioreg.ByName(name)
	if p == nil {
		return nil, fmt.Errorf("no GPIO line %q on this machine (is this a Raspberry Pi, and is the user in group gpio?)", name)
	}
	return p, nil
}

// opener returns how to open sc's bus and device, as the driver table
// says.
func (g *Gateway) opener(sc config.SensorConfig) sensors.OpenFunc {
	d, _ := sensors.DriverNamed(sc.Driver) // the config check knows it
	spec, _ := sc.Spec()
	spec.Address = d.Addr(spec)
	switch d.Bus {
	case sensors.BusOneWire:
		open := g.o.OpenOneWire
		if open == nil {
			open = hostOneWire
		}
		return onBus(open, sc.Bus, "1-Wire bus %q: %w (is dtoverlay=w1-gpio set in config.txt?)",
			func(b onewire.BusCloser) (sensors.Reader, error) { return d.OpenOneWire(b, spec) })
	case sensors.BusI2C:
		open := g.o.OpenI2C
		if open == nil {
			open = hostI2C
		}
		return onBus(open, sc.Bus, "I²C bus %q: %w (is I²C enabled, e.g. raspi-config, and is the user in group i2c?)",
			func(b i2c.BusCloser) (sensors.Reader, error) { return d.OpenI2C(b, spec) })
	case sensors.BusNone, sensors.BusModbus:
		spec.ModbusPorts = g.modbus
		return func() (sensors.Reader, error) { return d.Open(spec) }
	}
	return func() (sensors.Reader, error) { return nil, fmt.Errorf("driver %q opens no reader", sc.Driver) }
}

// onBus opens a device on the bus name each time it is called: the bus,
// then the device, closing the bus again if the device fails. busErr
// says what to check when the bus does not open (%q the name, %w the error).
func onBus[B io.Closer](open func(string) (B, error), name, busErr string, device func(B) (sensors.Reader, error)) sensors.OpenFunc {
	return func() (sensors.Reader, error) {
		bus, err := open(name)
		if err != nil {
			return nil, fmt.Errorf(busErr, name, err)
		}
		r, err := device(bus)
		if err != nil {
			bus.Close()
			return nil, err
		}
		return closer{r, bus}, nil
	}
}

// closer is a Reader that closes the bus it was opened on.
type closer struct {
	sensors.Reader
	bus io.Closer
}

func (b closer) Close() error {
	err := b.Reader.Close()
	if cerr := b.bus.Close(); err == nil {
		err = cerr
	}
	return err
}

// hostOneWire opens a 1-Wire bus of this machine through periph.io.
func hostOneWire(name string) (onewire.BusCloser, error) {
	if _, err := host.Init(); err != nil {
		return nil, err
	}
	return onewirereg.Open(name)
}

// hostI2C opens a bus of this machine through periph.io.
func hostI2C(name string) (i2c.BusCloser, error) {
	if _, err := host.Init(); err != nil {
		return nil, err
	}
	return i2creg.Open(name)
}

package sensors

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"time"

	"github.com/simonvetter/modbus"
)

// ModbusPorts shares Modbus connections: every device at one URL (units on
// one RS-485 port, or behind one Modbus TCP gateway) uses one connection,
// one transaction at a time. The gateway holds one for all its sensors.
type ModbusPorts struct {
	log   *slog.Logger
	mu    sync.Mutex
	ports map[string]*modbusPort
}

// NewModbusPorts makes an empty set; log gets the library's own lines at
// debug level.
func NewModbusPorts(log *slog.Logger) *ModbusPorts {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &ModbusPorts{log: log, ports: map[string]*modbusPort{}}
}

// A modbusPort is one connection and the lock that makes its devices take
// turns.
type modbusPort struct {
	url  string
	refs int // ModbusPorts.mu

	mu     sync.Mutex // one transaction at a time; guards what follows
	client *modbus.ModbusClient
	open   bool
	gap    time.Duration
	last   time.Time // the end of the last transaction
}

// acquire is s's port, made on first use. Its settings are the first
// device's (the config check makes them agree); the frame gap is the
// largest asked for.
func (ps *ModbusPorts) acquire(s ModbusSpec) (*modbusPort, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if p := ps.ports[s.URL]; p != nil {
		p.refs++
		p.mu.Lock()
		p.gap = max(p.gap, s.FrameGap)
		p.mu.Unlock()
		return p, nil
	}
	conf := &modbus.ClientConfiguration{URL: s.URL, Timeout: s.Timeout,
		Logger: slog.NewLogLogger(ps.log.Handler(), slog.LevelDebug)}
	if conf.Timeout == 0 {
		conf.Timeout = DefaultModbusTimeout
	}
	if s.Serial != nil {
		conf.Speed, conf.DataBits, conf.StopBits = uint(s.Serial.Baud), uint(s.Serial.DataBits), uint(s.Serial.StopBits)
		switch s.Serial.Parity {
		case "even":
			conf.Parity = modbus.PARITY_EVEN
		case "odd":
			conf.Parity = modbus.PARITY_ODD
		default:
			conf.Parity = modbus.PARITY_NONE
		}
	}
	if conf.Speed == 0 && s.Transport() == "rtu" {
		conf.Speed = 9600
	}
	c, err := modbus.NewClient(conf)
	if err != nil {
		return nil, fmt.Errorf("modbus %s: %w", redactURL(s.URL), err)
	}
	p := &modbusPort{url: s.URL, refs: 1, client: c, gap: s.FrameGap}
	ps.ports[s.URL] = p
	return p, nil
}

// release drops a device's hold; the last one closes the connection.
func (ps *ModbusPorts) release(p *modbusPort) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if p.refs--; p.refs > 0 {
		return
	}
	delete(ps.ports, p.url)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.open {
		p.client.Close()
		p.open = false
	}
}

// do runs one transaction for unit: it waits for the port, opens it if
// needed, keeps the frame gap, and after a failure that may leave the line
// or the connection out of step (a timeout, a bad frame, a broken or
// desynced connection, another unit's answer) closes it so the next
// transaction starts on a fresh one. A device's exception (illegal
// address, busy) leaves the connection as it is.
func (p *modbusPort) do(unit int, f func(c *modbus.ModbusClient) error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.open {
		if err := p.client.Open(); err != nil {
			return fmt.Errorf("open %s: %w", redactURL(p.url), err)
		}
		p.open = true
	}
	if wait := p.gap - time.Since(p.last); wait > 0 {
		time.Sleep(wait)
	}
	err := p.client.SetUnitId(uint8(unit))
	if err == nil {
		err = f(p.client)
	}
	p.last = time.Now()
	if err != nil && !isException(err) {
		p.client.Close()
		p.open = false
	}
	return err
}

// isException says whether err is the device's own answer: the transaction
// ended in step.
func isException(err error) bool {
	for _, e := range []error{modbus.ErrIllegalFunction, modbus.ErrIllegalDataAddress, modbus.ErrIllegalDataValue,
		modbus.ErrServerDeviceFailure, modbus.ErrAcknowledge, modbus.ErrServerDeviceBusy, modbus.ErrMemoryParityError,
		modbus.ErrGWPathUnavailable, modbus.ErrGWTargetFailedToRespond} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// OpenModbus opens a device on ports: it holds the port until Close; the
// connection itself opens with the first read.
func OpenModbus(ports *ModbusPorts, s ModbusSpec) (*ModbusDevice, error) {
	if errs := s.Check(); len(errs) > 0 {
		return nil, errs[0]
	}
	p, err := ports.acquire(s)
	if err != nil {
		return nil, err
	}
	return &ModbusDevice{ports: ports, port: p, spec: s, plan: planReads(s.Registers, true)}, nil
}

// ModbusDevice reads one unit's registers: a Reader.
type ModbusDevice struct {
	ports *ModbusPorts
	port  *modbusPort
	spec  ModbusSpec
	plan  []modbusRead
	text  map[string]string // the strings of the last reading
}

// Read takes one reading: every register, in as few requests as the plan
// has. An error names the registers of the request that failed.
func (d *ModbusDevice) Read() (map[string]float64, error) {
	vals := make(map[string]float64, len(d.spec.Registers))
	d.text = nil
	for k := 0; k < len(d.plan); k++ {
		m := d.plan[k]
		words, bits, err := d.read(m)
		if errors.Is(err, modbus.ErrIllegalDataAddress) && m.bridged {
			// The device refuses an address between two registers: read
			// without bridges from now on.
			d.plan = planReads(d.spec.Registers, false)
			k = -1
			clear(vals)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("unit %d, %s (%s): %w", d.spec.UnitID, m, m.names(d.spec.Registers), err)
		}
		for _, i := range m.regs {
			r := d.spec.Registers[i]
			off := r.Address - m.start
			var v float64
			var text string
			ok := true
			if bits != nil {
				v = 0
				if bits[off] {
					v = 1
				}
			} else {
				v, text, ok = r.decode(words[off:off+r.Width()], d.spec.ByteOrder, d.spec.WordOrder)
			}
			switch {
			case r.typ() == "string":
				if d.text == nil {
					d.text = map[string]string{}
				}
				d.text[r.Name] = text
			case ok:
				vals[r.Name] = v
			}
		}
	}
	return vals, nil
}

func (d *ModbusDevice) read(m modbusRead) (words []uint16, bits []bool, err error) {
	err = d.port.do(d.spec.UnitID, func(c *modbus.ModbusClient) error {
		var err error
		switch m.table {
		case TableHolding:
			words, err = c.ReadRegisters(uint16(m.start), uint16(m.count), modbus.HOLDING_REGISTER)
		case TableInput:
			words, err = c.ReadRegisters(uint16(m.start), uint16(m.count), modbus.INPUT_REGISTER)
		case TableCoil:
			bits, err = c.ReadCoils(uint16(m.start), uint16(m.count))
		case TableDiscrete:
			bits, err = c.ReadDiscreteInputs(uint16(m.start), uint16(m.count))
		}
		return err
	})
	if err == nil && len(words) < m.count && len(bits) < m.count {
		err = fmt.Errorf("short answer: %d of %d", max(len(words), len(bits)), m.count)
	}
	return words, bits, err
}

// Strings is the text values (type string) of the last reading.
func (d *ModbusDevice) Strings() map[string]string { return d.text }

// Close lets go of the port.
func (d *ModbusDevice) Close() error {
	if d.port != nil {
		d.ports.release(d.port)
		d.port = nil
	}
	return nil
}

// Write sets the writable register named to v (its type and range
// checked, its scale and offset undone) and reads it back: the value the
// device now holds.
func (d *ModbusDevice) Write(name string, v float64) (float64, error) {
	i := -1
	for k, r := range d.spec.Registers {
		if r.Name == name {
			i = k
		}
	}
	if i < 0 {
		return 0, fmt.Errorf("%s has no register %q", redactURL(d.spec.URL), name)
	}
	r := d.spec.Registers[i]
	if !r.Writable {
		return 0, fmt.Errorf("register %q is not writable: mark it writable: true in the config to allow it", name)
	}
	words, err := r.encode(v, d.spec.ByteOrder, d.spec.WordOrder)
	if err != nil {
		return 0, err
	}
	err = d.port.do(d.spec.UnitID, func(c *modbus.ModbusClient) error {
		if r.Table == TableCoil {
			return c.WriteCoil(uint16(r.Address), words[0] != 0)
		}
		if len(words) == 1 {
			return c.WriteRegister(uint16(r.Address), words[0])
		}
		return c.WriteRegisters(uint16(r.Address), words)
	})
	if err != nil {
		return 0, fmt.Errorf("write %s %d (%s): %w", r.Table, r.Address, name, err)
	}
	m := modbusRead{table: r.Table, start: r.Address, count: r.Width(), regs: []int{i}}
	back, bits, err := d.read(m)
	if err != nil {
		return 0, fmt.Errorf("read back %s (%s): %w", m, name, err)
	}
	if bits != nil {
		if bits[0] {
			return 1, nil
		}
		return 0, nil
	}
	got, _, _ := r.decode(back, d.spec.ByteOrder, d.spec.WordOrder)
	return got, nil
}

// redactURL drops a URL's user info, should one carry it.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	u.User = nil
	return u.String()
}

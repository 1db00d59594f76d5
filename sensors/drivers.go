package sensors

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/onewire"
)

// BusKind is what a driver's device hangs on.
type BusKind string

const (
	BusI2C     BusKind = "i2c"
	BusOneWire BusKind = "1-wire"
	BusGPIO    BusKind = "gpio"
	BusModbus  BusKind = "modbus" // TCP, RTU (RS-485) or RTU over TCP
	BusNone    BusKind = "none"   // simulated
)

// Spec is one configured sensor, in the terms the drivers need.
type Spec struct {
	Address  uint16        // I²C address; 0: the driver's default
	Interval time.Duration // how often a polled sensor is read
	Channels []ADCChannel  // ads1015, ads1115
	Register *Register     // register (its Addr is Address)
	ROM      uint64        // ds18b20: the probe's 64-bit 1-Wire address
	Bits     int           // ds18b20: resolution 9-12 (0: 12)
	Seed     uint64        // sim

	Pin      string        // gpio_edge, pulse_counter
	Edge     string        // gpio_edge
	Pull     string        // up, down, none
	Debounce time.Duration // gpio_edge, pulse_counter

	Modbus *ModbusSpec // modbus
	// ModbusPorts shares the connections of the modbus sensors: the
	// gateway's; nil, the device gets its own.
	ModbusPorts *ModbusPorts
}

// A SpecError is a problem with one field of a Spec: the config check
// reports it at that key.
type SpecError struct {
	Field string // address, channels[1], register, rom, bits, interval, pin, edge, pull, debounce
	Msg   string
}

func (e *SpecError) Error() string { return e.Field + ": " + e.Msg }

func specErr(field, format string, args ...any) *SpecError {
	return &SpecError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// A Driver is one row of the table: everything edgegw knows about a kind
// of sensor. The config check, the gateway's opener, i2c scan and the
// docs test all read it; adding a driver is a file and a row.
type Driver struct {
	Name  string
	Bus   BusKind
	Parts string   // the devices it reads, as i2c scan names them
	Addrs []uint16 // the I²C addresses the device can have
	// DefaultAddr is the address when the config gives none; 0: required.
	DefaultAddr uint16
	MinInterval time.Duration // the device's own measurement period
	// Check, if set, checks what is particular to the driver.
	Check func(Spec) []*SpecError
	// One of these opens the device (gpio drivers have none: the gateway
	// builds an EdgeSource or a PulseCounter).
	OpenI2C     func(bus i2c.Bus, s Spec) (Reader, error)
	OpenOneWire func(bus onewire.Bus, s Spec) (Reader, error)
	Open        func(s Spec) (Reader, error)
}

func span(from, to uint16) []uint16 {
	var out []uint16
	for a := from; a <= to; a++ {
		out = append(out, a)
	}
	return out
}

// Drivers is the table, in the order the docs list them.
var Drivers = []Driver{
	{Name: "bme280", Bus: BusI2C, Parts: "BME280/BMP280", Addrs: []uint16{0x76, 0x77},
		OpenI2C: func(b i2c.Bus, s Spec) (Reader, error) { return OpenBME280(b, s.Address) }},
	{Name: "bmp280", Bus: BusI2C, Parts: "BME280/BMP280", Addrs: []uint16{0x76, 0x77},
		OpenI2C: func(b i2c.Bus, s Spec) (Reader, error) { return OpenBME280(b, s.Address) }},
	{Name: "aht20", Bus: BusI2C, Parts: "AHT20/AHT10", Addrs: []uint16{0x38}, DefaultAddr: 0x38,
		OpenI2C: func(b i2c.Bus, s Spec) (Reader, error) { return OpenAHT20(b) }},
	{Name: "tmp102", Bus: BusI2C, Parts: "TMP102", Addrs: span(0x48, 0x4b), DefaultAddr: 0x48,
		OpenI2C: func(b i2c.Bus, s Spec) (Reader, error) { return OpenTMP102(b, s.Address) }},
	{Name: "mcp9808", Bus: BusI2C, Parts: "MCP9808", Addrs: span(0x18, 0x1f), DefaultAddr: 0x18,
		OpenI2C: func(b i2c.Bus, s Spec) (Reader, error) { return OpenMCP9808(b, s.Address) }},
	{Name: "ina219", Bus: BusI2C, Parts: "INA219", Addrs: span(0x40, 0x4f), DefaultAddr: 0x40,
		OpenI2C: func(b i2c.Bus, s Spec) (Reader, error) { return OpenINA219(b, s.Address) }},
	{Name: "bh1750", Bus: BusI2C, Parts: "BH1750", Addrs: []uint16{0x23, 0x5c}, DefaultAddr: 0x23,
		OpenI2C: func(b i2c.Bus, s Spec) (Reader, error) { return OpenBH1750(b, s.Address) }},
	{Name: "scd4x", Bus: BusI2C, Parts: "SCD4x", Addrs: []uint16{0x62}, DefaultAddr: 0x62, MinInterval: 5 * time.Second,
		OpenI2C: func(b i2c.Bus, s Spec) (Reader, error) { return OpenSCD4x(b, s.Address) }},
	{Name: "ads1015", Bus: BusI2C, Parts: "ADS1x15", Addrs: span(0x48, 0x4b), DefaultAddr: 0x48, Check: checkChannels,
		OpenI2C: func(b i2c.Bus, s Spec) (Reader, error) {
			return OpenADS1x15(b, ADCOptions{Model: ADS1015, Addr: s.Address, Channels: s.Channels})
		}},
	{Name: "ads1115", Bus: BusI2C, Parts: "ADS1x15", Addrs: span(0x48, 0x4b), DefaultAddr: 0x48, Check: checkChannels,
		OpenI2C: func(b i2c.Bus, s Spec) (Reader, error) {
			return OpenADS1x15(b, ADCOptions{Model: ADS1115, Addr: s.Address, Channels: s.Channels})
		}},
	{Name: "ds18b20", Bus: BusOneWire, Parts: "DS18B20", Check: checkDS18B20,
		OpenOneWire: func(b onewire.Bus, s Spec) (Reader, error) { return OpenDS18B20(b, onewire.Address(s.ROM), s.Bits) }},
	{Name: "register", Bus: BusI2C, Check: checkRegister,
		OpenI2C: func(b i2c.Bus, s Spec) (Reader, error) { return OpenRegister(b, s.register()) }},
	{Name: "modbus", Bus: BusModbus, Parts: "Modbus device", Check: checkModbus,
		Open: func(s Spec) (Reader, error) {
			ports := s.ModbusPorts
			if ports == nil {
				ports = NewModbusPorts(nil)
			}
			return OpenModbus(ports, *s.Modbus)
		}},
	{Name: "sim", Bus: BusNone,
		Open: func(s Spec) (Reader, error) { return NewSim(s.Seed), nil }},
	{Name: "gpio_edge", Bus: BusGPIO, Check: checkGPIO},
	{Name: "pulse_counter", Bus: BusGPIO, Check: checkGPIO},
}

// DriverNamed finds a driver of the table.
func DriverNamed(name string) (Driver, bool) {
	for _, d := range Drivers {
		if d.Name == name {
			return d, true
		}
	}
	return Driver{}, false
}

// IsGPIO says whether the driver named reads a pin, event-driven
// (BusGPIO: gpio_edge, pulse_counter), rather than a polled sensor.
func IsGPIO(name string) bool {
	d, ok := DriverNamed(name)
	return ok && d.Bus == BusGPIO
}

// DriverNames lists the table's names, for messages.
func DriverNames() string {
	names := make([]string, len(Drivers))
	for i, d := range Drivers {
		names[i] = d.Name
	}
	return strings.Join(names, ", ")
}

// CheckSpec reports every problem of s for this driver.
func (d Driver) CheckSpec(s Spec) []*SpecError {
	var errs []*SpecError
	if d.Bus == BusI2C {
		switch {
		case s.Address > 0x7f:
			errs = append(errs, specErr("address", "%#x is not a 7-bit I²C address", s.Address))
		case s.Address == 0 && d.DefaultAddr == 0 && len(d.Addrs) > 0:
			errs = append(errs, specErr("address", "missing; a %s answers at %s", d.Parts, addrList(d.Addrs)))
		case s.Address == 0 && len(d.Addrs) == 0 && d.Name == "register":
			errs = append(errs, specErr("address", "missing; the device's 7-bit I²C address, e.g. 0x48"))
		case s.Address != 0 && len(d.Addrs) > 0 && !slices.Contains(d.Addrs, s.Address):
			errs = append(errs, specErr("address", "%#x: a %s answers at %s", s.Address, d.Parts, addrList(d.Addrs)))
		}
	}
	if d.MinInterval > 0 && s.Interval < d.MinInterval {
		errs = append(errs, specErr("interval", "%s is shorter than the %s's %s measurement period", s.Interval, d.Parts, d.MinInterval))
	}
	if d.Check != nil {
		errs = append(errs, d.Check(s)...)
	}
	return errs
}

// Addr is the address a sensor of this driver is opened at.
func (d Driver) Addr(s Spec) uint16 {
	if s.Address == 0 {
		return d.DefaultAddr
	}
	return s.Address
}

func addrList(as []uint16) string {
	if len(as) > 2 && as[len(as)-1]-as[0] == uint16(len(as)-1) {
		return fmt.Sprintf("%#x to %#x", as[0], as[len(as)-1])
	}
	parts := make([]string, len(as))
	for i, a := range as {
		parts[i] = fmt.Sprintf("%#x", a)
	}
	return strings.Join(parts, " or ")
}

func checkChannels(s Spec) []*SpecError {
	if len(s.Channels) == 0 {
		return []*SpecError{specErr("channels", `missing; list the inputs to read, e.g. - {input: "0", name: voltage_v}`)}
	}
	var errs []*SpecError
	for j, ch := range s.Channels {
		if err := ch.Check(); err != nil {
			errs = append(errs, specErr(fmt.Sprintf("channels[%d]", j), "%v", err))
		}
	}
	return errs
}

func checkDS18B20(s Spec) []*SpecError {
	var errs []*SpecError
	if s.ROM == 0 {
		errs = append(errs, specErr("rom", "missing; the probe's 64-bit ROM address, e.g. 0x740000070e41ac28 (ls /sys/bus/w1/devices)"))
	}
	if s.Bits != 0 && (s.Bits < 9 || s.Bits > 12) {
		errs = append(errs, specErr("bits", "%d is not 9 to 12", s.Bits))
	}
	return errs
}

func checkRegister(s Spec) []*SpecError {
	if s.Register == nil {
		return []*SpecError{specErr("register", "missing; a register sensor needs reg, length and name")}
	}
	if err := s.register().Check(); err != nil {
		return []*SpecError{specErr("register", "%v", err)}
	}
	return nil
}

func (s Spec) register() Register {
	r := *s.Register
	r.Addr = s.Address
	return r
}

func checkModbus(s Spec) []*SpecError {
	if s.Modbus == nil {
		return []*SpecError{specErr("url", "missing; a modbus sensor needs url, unit_id and registers")}
	}
	errs := s.Modbus.Check()
	if t := s.Modbus.Timeout; t > 0 && s.Interval > 0 && t >= s.Interval {
		errs = append(errs, specErr("timeout", "%s is not shorter than the interval (%s)", t, s.Interval))
	}
	return errs
}

func checkGPIO(s Spec) []*SpecError {
	var errs []*SpecError
	if s.Pin == "" {
		errs = append(errs, specErr("pin", "missing; the GPIO line's name, e.g. GPIO17"))
	}
	if _, err := ParseEdge(s.Edge); err != nil {
		errs = append(errs, specErr("edge", "%v", err))
	}
	if _, err := ParsePull(s.Pull); err != nil {
		errs = append(errs, specErr("pull", "%v", err))
	}
	if s.Debounce < 0 {
		errs = append(errs, specErr("debounce", "must not be negative"))
	}
	return errs
}

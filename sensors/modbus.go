package sensors

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// ModbusSpec is a Modbus device: a meter or a controller on Modbus TCP,
// RTU (RS-485) or RTU over TCP, read with github.com/simonvetter/modbus.
// One poll reads every register and is one reading. The yaml tags are
// the config's keys (docs/modbus.md).
type ModbusSpec struct {
	URL       string        `yaml:"url"`     // tcp://host:502, rtu:///dev/ttyUSB0, rtuovertcp://host:port
	UnitID    int           `yaml:"unit_id"` // the slave id, 1..247 (tcp: 0..255)
	Timeout   time.Duration `yaml:"timeout,omitempty"`
	Serial    *SerialSpec   `yaml:"serial,omitempty"`     // rtu only
	ByteOrder string        `yaml:"byte_order,omitempty"` // big | little (within a register)
	WordOrder string        `yaml:"word_order,omitempty"` // high_first | low_first (across registers)
	// FrameGap is the silence kept on the port between the end of one
	// transaction and the start of the next, whichever device each is for
	// (the port's largest applies); the library keeps RTU's 3.5 characters
	// on its own.
	FrameGap  time.Duration    `yaml:"frame_gap,omitempty"`
	Registers []ModbusRegister `yaml:"registers"`
}

// SerialSpec is an RTU port's line settings.
type SerialSpec struct {
	Baud     int    `yaml:"baud"`      // default 9600
	DataBits int    `yaml:"data_bits"` // 7 or 8 (default 8)
	Parity   string `yaml:"parity"`    // none, even, odd (default none)
	StopBits int    `yaml:"stop_bits"` // 1 or 2 (default: 2 without parity, else 1, as the spec says)
}

// ModbusRegister is one value of a device: where it is and how to read it.
type ModbusRegister struct {
	Name      string   `yaml:"name"`
	Table     string   `yaml:"table"` // holding | input | coil | discrete
	Address   int      `yaml:"address"`
	Type      string   `yaml:"type"`             // int16 uint16 int32 uint32 int64 uint64 float32 float64 bool string (coil, discrete: bool)
	Scale     *float64 `yaml:"scale,omitempty"`  // value × scale + offset
	Offset    float64  `yaml:"offset,omitempty"` //
	WordOrder string   `yaml:"word_order,omitempty"`
	Length    int      `yaml:"length,omitempty"` // string: registers (two characters each)
	Writable  bool     `yaml:"writable,omitempty"`
}

// The Modbus tables, as the config names them.
const (
	TableHolding  = "holding"
	TableInput    = "input"
	TableCoil     = "coil"
	TableDiscrete = "discrete"
)

// DefaultModbusTimeout is a transaction's timeout when the config gives none.
const DefaultModbusTimeout = time.Second

var modbusTypes = map[string]int{ // registers each takes
	"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "int64": 4, "uint64": 4,
	"float32": 2, "float64": 4, "bool": 1, "string": 0,
}

// bits says whether the table holds bits (coils, discrete inputs).
func bits(table string) bool { return table == TableCoil || table == TableDiscrete }

// Width is how many registers (or bits) r takes; 0 for a string without
// its length.
func (r ModbusRegister) Width() int {
	if bits(r.Table) {
		return 1
	}
	if r.Type == "string" {
		return r.Length
	}
	return modbusTypes[r.Type]
}

// typ is r's type, bool where a bit table leaves it out.
func (r ModbusRegister) typ() string {
	if r.Type == "" && bits(r.Table) {
		return "bool"
	}
	return r.Type
}

// Transport is the URL's scheme: tcp, rtu or rtuovertcp.
func (s ModbusSpec) Transport() string {
	u, err := url.Parse(s.URL)
	if err != nil {
		return ""
	}
	return u.Scheme
}

// Check reports every problem of s, each at its key.
func (s ModbusSpec) Check() []*SpecError {
	var errs []*SpecError
	bad := func(field, format string, args ...any) { errs = append(errs, specErr(field, format, args...)) }
	u, err := url.Parse(s.URL)
	switch {
	case s.URL == "":
		bad("url", "missing; tcp://10.0.0.20:502, rtu:///dev/ttyUSB0 or rtuovertcp://host:port")
	case err != nil:
		bad("url", "%q is not a URL: %v", s.URL, err)
	case u.Scheme == "rtu":
		if u.Path == "" {
			bad("url", "%q names no serial port; e.g. rtu:///dev/ttyUSB0", s.URL)
		}
	case u.Scheme == "tcp" || u.Scheme == "rtuovertcp":
		if u.Hostname() == "" || u.Port() == "" {
			bad("url", "%q needs a host and a port, e.g. %s://10.0.0.20:502", s.URL, u.Scheme)
		}
	default:
		bad("url", "%q: the scheme is not tcp, rtu or rtuovertcp", s.URL)
	}
	maxUnit := 247
	if u != nil && u.Scheme == "tcp" {
		maxUnit = 255 // a TCP device often answers at 255 or 0
	}
	if s.UnitID < 0 || s.UnitID > maxUnit || (s.UnitID == 0 && maxUnit == 247) {
		bad("unit_id", "%d is outside 1..%d", s.UnitID, maxUnit)
	}
	if s.Timeout < 0 {
		bad("timeout", "must not be negative (default %s)", DefaultModbusTimeout)
	}
	if s.FrameGap < 0 || s.FrameGap > time.Second {
		bad("frame_gap", "%s is outside 0..1s", s.FrameGap)
	}
	if s.Serial != nil {
		if u != nil && u.Scheme != "rtu" {
			bad("serial", "only an rtu:// device has serial settings; remove it")
		}
		errs = append(errs, s.Serial.check()...)
	}
	if !oneOf(s.ByteOrder, "", "big", "little") {
		bad("byte_order", "%q is not big or little", s.ByteOrder)
	}
	if !oneOf(s.WordOrder, "", "high_first", "low_first") {
		bad("word_order", "%q is not high_first or low_first", s.WordOrder)
	}
	return append(errs, checkRegisters(s.Registers)...)
}

func (p *SerialSpec) check() []*SpecError {
	var errs []*SpecError
	if p.Baud < 0 || p.Baud > 1_000_000 {
		errs = append(errs, specErr("serial.baud", "%d is outside 1..1000000 (default 9600)", p.Baud))
	}
	if p.DataBits != 0 && p.DataBits != 7 && p.DataBits != 8 {
		errs = append(errs, specErr("serial.data_bits", "%d is not 7 or 8", p.DataBits))
	}
	if !oneOf(p.Parity, "", "none", "even", "odd") {
		errs = append(errs, specErr("serial.parity", "%q is not none, even or odd", p.Parity))
	}
	if p.StopBits != 0 && p.StopBits != 1 && p.StopBits != 2 {
		errs = append(errs, specErr("serial.stop_bits", "%d is not 1 or 2", p.StopBits))
	}
	return errs
}

func checkRegisters(regs []ModbusRegister) []*SpecError {
	var errs []*SpecError
	if len(regs) == 0 {
		return []*SpecError{specErr("registers", "missing; list the values to read, e.g. - {name: voltage_v, table: input, address: 0, type: float32}")}
	}
	names := map[string]int{}
	for i, r := range regs {
		p := fmt.Sprintf("registers[%d]", i)
		bad := func(field, format string, args ...any) { errs = append(errs, specErr(p+"."+field, format, args...)) }
		if r.Name == "" {
			bad("name", "missing; the value's name with its unit, e.g. voltage_l1_v")
		} else if j, ok := names[r.Name]; ok {
			bad("name", "%q is also registers[%d]'s", r.Name, j)
		}
		names[r.Name] = i
		t := r.typ()
		_, known := modbusTypes[t]
		switch {
		case !oneOf(r.Table, TableHolding, TableInput, TableCoil, TableDiscrete):
			bad("table", "%q is not holding, input, coil or discrete", r.Table)
		case bits(r.Table) && t != "bool":
			bad("type", "%q: a %s is one bit; its type is bool (or leave it out)", r.Type, r.Table)
		case !known:
			bad("type", "%q is not one of int16 uint16 int32 uint32 int64 uint64 float32 float64 bool string", r.Type)
		}
		if t == "string" && (r.Length < 1 || r.Length > 125) {
			bad("length", "a string needs its length in registers, 1..125 (two characters each)")
		}
		if r.Address < 0 || r.Address+max(r.Width(), 1)-1 > 0xffff {
			bad("address", "%d is outside 0..65535 (with its %d registers)", r.Address, max(r.Width(), 1))
		}
		if (t == "bool" || t == "string") && (r.Scale != nil || r.Offset != 0) {
			bad("scale", "a %s has no scale or offset", t)
		}
		if !oneOf(r.WordOrder, "", "high_first", "low_first") {
			bad("word_order", "%q is not high_first or low_first", r.WordOrder)
		}
		if r.Writable && (r.Table == TableInput || r.Table == TableDiscrete || t == "string") {
			bad("writable", "a %s %s cannot be written; only holding registers and coils can", r.Table, t)
		}
	}
	return append(errs, overlaps(regs)...)
}

// overlaps names registers of one table that share an address.
func overlaps(regs []ModbusRegister) []*SpecError {
	idx := make([]int, 0, len(regs))
	for i, r := range regs {
		if r.Width() > 0 {
			idx = append(idx, i)
		}
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		ra, rb := regs[a], regs[b]
		if c := strings.Compare(ra.Table, rb.Table); c != 0 {
			return c
		}
		return ra.Address - rb.Address
	})
	var errs []*SpecError
	for k := 1; k < len(idx); k++ {
		prev, cur := regs[idx[k-1]], regs[idx[k]]
		if prev.Table == cur.Table && cur.Address < prev.Address+prev.Width() {
			errs = append(errs, specErr(fmt.Sprintf("registers[%d].address", idx[k]),
				"%d overlaps registers[%d] (%s, %d..%d)", cur.Address, idx[k-1], prev.Name, prev.Address, prev.Address+prev.Width()-1))
		}
	}
	return errs
}

func oneOf(s string, of ...string) bool { return slices.Contains(of, s) }

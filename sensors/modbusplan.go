package sensors

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// A modbusRead is one request: consecutive registers (or bits) of one
// table, serving the registers at regs.
type modbusRead struct {
	table        string
	start, count int
	regs         []int // indexes into the spec's registers
	bridged      bool  // it reads addresses no register names
}

// The protocol's limits per request, and the gaps bridged: a request costs
// a round trip and about 12 bytes of framing (more on a 9600-baud line:
// the 3.5-character silences), so reading up to 8 unnamed registers (16
// bytes) or 128 unnamed bits (16 bytes) is cheaper than a request more.
// A device that refuses a bridged address (illegal data address) is read
// without bridges from then on (see modbusDevice.Read).
const (
	maxReadRegs = 125
	maxReadBits = 2000
	bridgeRegs  = 8
	bridgeBits  = 128
)

var tableOrder = []string{TableHolding, TableInput, TableCoil, TableDiscrete}

// planReads groups regs into as few requests as the protocol allows,
// bridging cheap gaps when bridge is set.
func planReads(regs []ModbusRegister, bridge bool) []modbusRead {
	idx := make([]int, len(regs))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		ta, tb := slices.Index(tableOrder, regs[a].Table), slices.Index(tableOrder, regs[b].Table)
		if ta != tb {
			return ta - tb
		}
		return regs[a].Address - regs[b].Address
	})
	var out []modbusRead
	for _, i := range idx {
		r := regs[i]
		limit, gap := maxReadRegs, bridgeRegs
		if bits(r.Table) {
			limit, gap = maxReadBits, bridgeBits
		}
		if !bridge {
			gap = 0
		}
		if n := len(out); n > 0 {
			last := &out[n-1]
			end := last.start + last.count // first address past it
			if last.table == r.Table && r.Address <= end+gap && r.Address+r.Width()-last.start <= limit {
				last.count = max(last.count, r.Address+r.Width()-last.start)
				last.bridged = last.bridged || r.Address > end
				last.regs = append(last.regs, i)
				continue
			}
		}
		out = append(out, modbusRead{table: r.Table, start: r.Address, count: r.Width(), regs: []int{i}})
	}
	return out
}

// names lists the registers a read serves, for its errors.
func (m modbusRead) names(regs []ModbusRegister) string {
	var b strings.Builder
	for k, i := range m.regs {
		if k > 0 {
			b.WriteString(", ")
		}
		if k == 3 && len(m.regs) > 4 {
			fmt.Fprintf(&b, "%d more", len(m.regs)-3)
			break
		}
		b.WriteString(regs[i].Name)
	}
	return b.String()
}

func (m modbusRead) String() string {
	return fmt.Sprintf("%s %d..%d", m.table, m.start, m.start+m.count-1)
}

// registerBytes lays out a register's words as bytes, most significant
// first: each word's two bytes as byteOrder says, the words as wordOrder
// says.
func registerBytes(words []uint16, byteOrder, wordOrder string) []byte {
	b := make([]byte, 2*len(words))
	for k, w := range words {
		if wordOrder == "low_first" {
			k = len(words) - 1 - k
		}
		if byteOrder == "little" {
			w = w<<8 | w>>8
		}
		binary.BigEndian.PutUint16(b[2*k:], w)
	}
	return b
}

// decode is r's value from its words: a number (scaled), or text for a
// string. ok is false for a float that is NaN or infinite (a meter's "no
// value"): the reading leaves it out.
func (r ModbusRegister) decode(words []uint16, byteOrder, wordOrder string) (v float64, text string, ok bool) {
	if r.WordOrder != "" {
		wordOrder = r.WordOrder
	}
	if r.typ() == "string" {
		b := registerBytes(words, byteOrder, "high_first") // characters in address order
		return 0, strings.TrimRight(string(b), "\x00 "), true
	}
	b := registerBytes(words, byteOrder, wordOrder)
	switch r.typ() {
	case "bool":
		v = 0
		if words[0] != 0 {
			v = 1
		}
		return v, "", true
	case "int16":
		v = float64(int16(binary.BigEndian.Uint16(b)))
	case "uint16":
		v = float64(binary.BigEndian.Uint16(b))
	case "int32":
		v = float64(int32(binary.BigEndian.Uint32(b)))
	case "uint32":
		v = float64(binary.BigEndian.Uint32(b))
	case "int64":
		v = float64(int64(binary.BigEndian.Uint64(b)))
	case "uint64":
		v = float64(binary.BigEndian.Uint64(b))
	case "float32":
		v = float64(math.Float32frombits(binary.BigEndian.Uint32(b)))
	case "float64":
		v = math.Float64frombits(binary.BigEndian.Uint64(b))
	}
	v = v*r.scale() + r.Offset
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, "", false
	}
	if r.Scale != nil || r.Offset != 0 {
		// 2240 × 0.01 is 22.400000000000002 in binary: 12 significant
		// digits are more than any register holds.
		v, _ = strconv.ParseFloat(strconv.FormatFloat(v, 'g', 12, 64), 64)
	}
	return v, "", true
}

func (r ModbusRegister) scale() float64 {
	if r.Scale == nil {
		return 1
	}
	return *r.Scale
}

// encode is the words that make r read v (its scale and offset undone),
// or why v does not fit r's type.
func (r ModbusRegister) encode(v float64, byteOrder, wordOrder string) ([]uint16, error) {
	if r.WordOrder != "" {
		wordOrder = r.WordOrder
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil, fmt.Errorf("%s: %v is not a number", r.Name, v)
	}
	raw := (v - r.Offset) / r.scale()
	t := r.typ()
	lo, hi := typeRange(t)
	if t != "float32" && t != "float64" {
		raw = math.Round(raw)
	}
	if raw < lo || raw > hi {
		return nil, fmt.Errorf("%s: %v is outside the range of its type, %s: %v..%v with its scale and offset", r.Name, v, t, lo*r.scale()+r.Offset, hi*r.scale()+r.Offset)
	}
	b := make([]byte, 2*max(modbusTypes[t], 1))
	switch t {
	case "bool", "uint16", "int16":
		binary.BigEndian.PutUint16(b, uint16(int64(raw)))
	case "uint32", "int32":
		binary.BigEndian.PutUint32(b, uint32(int64(raw)))
	case "int64":
		binary.BigEndian.PutUint64(b, uint64(int64(raw)))
	case "uint64":
		binary.BigEndian.PutUint64(b, uint64(raw))
	case "float32":
		binary.BigEndian.PutUint32(b, math.Float32bits(float32(raw)))
	case "float64":
		binary.BigEndian.PutUint64(b, math.Float64bits(raw))
	}
	// registerBytes in reverse: bytes → words in the device's orders.
	words := make([]uint16, len(b)/2)
	for k := range words {
		src := k
		if wordOrder == "low_first" {
			src = len(words) - 1 - k
		}
		w := binary.BigEndian.Uint16(b[2*src:])
		if byteOrder == "little" {
			w = w<<8 | w>>8
		}
		words[k] = w
	}
	return words, nil
}

func typeRange(t string) (lo, hi float64) {
	switch t {
	case "bool":
		return 0, 1
	case "int16":
		return math.MinInt16, math.MaxInt16
	case "uint16":
		return 0, math.MaxUint16
	case "int32":
		return math.MinInt32, math.MaxInt32
	case "uint32":
		return 0, math.MaxUint32
	case "int64":
		return math.MinInt64, math.MaxInt64
	case "uint64":
		return 0, math.MaxUint64
	case "float32":
		return -math.MaxFloat32, math.MaxFloat32
	}
	return -math.MaxFloat64, math.MaxFloat64
}

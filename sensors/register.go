package sensors

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"periph.io/x/conn/v3/i2c"
)

// Register describes a sensor that has no driver, read as one register:
// write the register address, read Length bytes, decode them as an
// integer (big- or little-endian, signed or not), and report
// raw*Scale + Offset under Name (which should carry the unit, e.g.
// "temperature_c").
type Register struct {
	Addr      uint16
	Reg       byte
	Length    int // 1, 2, 3 or 4
	BigEndian bool
	Signed    bool
	Scale     float64 // 0 means 1
	Offset    float64
	Name      string
}

// Check reports what is wrong with r.
func (r Register) Check() error {
	if r.Length < 1 || r.Length > 4 {
		return fmt.Errorf("length %d is not 1 to 4 bytes", r.Length)
	}
	if r.Addr > 0x7f {
		return fmt.Errorf("address %#x is not a 7-bit I²C address", r.Addr)
	}
	if r.Name == "" {
		return errors.New("the value needs a name, e.g. temperature_c")
	}
	if math.IsNaN(r.Scale) || math.IsInf(r.Scale, 0) || math.IsNaN(r.Offset) || math.IsInf(r.Offset, 0) {
		return errors.New("scale and offset must be finite")
	}
	return nil
}

// Decode turns the bytes read into the value.
func (r Register) Decode(b []byte) (float64, error) {
	if len(b) != r.Length || r.Length < 1 || r.Length > 4 {
		return 0, fmt.Errorf("got %d bytes, want %d", len(b), r.Length)
	}
	var buf [4]byte
	var raw uint32
	if r.BigEndian {
		copy(buf[4-len(b):], b)
		raw = binary.BigEndian.Uint32(buf[:])
	} else {
		copy(buf[:], b)
		raw = binary.LittleEndian.Uint32(buf[:])
	}
	v := float64(raw)
	if r.Signed {
		bits := uint(8 * r.Length)
		v = float64(int64(raw<<(32-bits)) << 32 >> (64 - bits))
	}
	scale := r.Scale
	if scale == 0 {
		scale = 1
	}
	return v*scale + r.Offset, nil
}

// RegisterReader reads a Register on a bus.
type RegisterReader struct {
	bus i2c.Bus
	r   Register
}

// OpenRegister checks r; the bus is the caller's.
func OpenRegister(bus i2c.Bus, r Register) (*RegisterReader, error) {
	if err := r.Check(); err != nil {
		return nil, err
	}
	return &RegisterReader{bus: bus, r: r}, nil
}

// Read reads and decodes the register.
func (rr *RegisterReader) Read() (map[string]float64, error) {
	b := make([]byte, rr.r.Length)
	if err := rr.bus.Tx(rr.r.Addr, []byte{rr.r.Reg}, b); err != nil {
		return nil, fmt.Errorf("register %#x at %#x: %w", rr.r.Reg, rr.r.Addr, err)
	}
	v, err := rr.r.Decode(b)
	if err != nil {
		return nil, err
	}
	return map[string]float64{rr.r.Name: v}, nil
}

// Close does nothing: the bus is the caller's.
func (rr *RegisterReader) Close() error { return nil }

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

package sensors_test

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/simonvetter/modbus"
	"golang.org/x/term"

	"github.com/edgegw/edgegw/sensors"
)

// rtuResponder is a small Modbus RTU slave line for the tests: it answers
// read holding / input registers (functions 3 and 4) for several units,
// each register holding 1000 × unit + its address, and can misbehave per
// unit: answer as another unit, with a bad CRC, or not at all.
type rtuResponder struct {
	mu    sync.Mutex
	modes map[byte]string // unit → "ok", "wrong-unit", "bad-crc"; absent: silent
	seen  map[byte]int    // requests per unit, CRC good
}

func crc16(b []byte) uint16 {
	crc := uint16(0xffff)
	for _, x := range b {
		crc ^= uint16(x)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xa001
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}

func (r *rtuResponder) count(unit byte) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[unit]
}

// serve answers requests on rw until it fails.
func (r *rtuResponder) serve(rw io.ReadWriter) {
	req := make([]byte, 8)
	for {
		if _, err := io.ReadFull(rw, req); err != nil {
			return
		}
		if binary.LittleEndian.Uint16(req[6:]) != crc16(req[:6]) || (req[1] != 3 && req[1] != 4) {
			continue // noise: a real slave stays quiet
		}
		unit, addr, qty := req[0], binary.BigEndian.Uint16(req[2:]), binary.BigEndian.Uint16(req[4:])
		r.mu.Lock()
		r.seen[unit]++
		mode, ok := r.modes[unit]
		r.mu.Unlock()
		if !ok {
			continue // a dead unit
		}
		res := []byte{unit, req[1], byte(2 * qty)}
		if mode == "wrong-unit" {
			res[0] = unit + 100
		}
		for k := range qty {
			res = binary.BigEndian.AppendUint16(res, uint16(unit)*1000+addr+k)
		}
		crc := crc16(res)
		if mode == "bad-crc" {
			crc ^= 0x5555
		}
		res = binary.LittleEndian.AppendUint16(res, crc)
		if _, err := rw.Write(res); err != nil {
			return
		}
	}
}

func newResponder() *rtuResponder {
	return &rtuResponder{modes: map[byte]string{1: "ok", 2: "ok", 3: "wrong-unit", 4: "bad-crc"}, seen: map[byte]int{}}
}

// rtuDevice is a device of one holding register (address 7) at unit.
func rtuDevice(t *testing.T, ports *sensors.ModbusPorts, url string, unit int) *sensors.ModbusDevice {
	t.Helper()
	spec := sensors.ModbusSpec{URL: url, UnitID: unit, Timeout: 150 * time.Millisecond,
		Registers: []sensors.ModbusRegister{{Name: "v", Table: "holding", Address: 7, Type: "uint16"}}}
	if strings.HasPrefix(url, "rtu://") {
		spec.Serial = &sensors.SerialSpec{Baud: 115200, Parity: "none"}
	}
	return openModbus(t, ports, spec)
}

// checkRTULine reads units 1 and 2 on a line with a unit that answers as
// another (3), one with bad CRCs (4) and one that is dead (5): each
// failure is named, and the good units read right after every one.
func checkRTULine(t *testing.T, url string, r *rtuResponder) {
	ports := sensors.NewModbusPorts(nil)
	good := []*sensors.ModbusDevice{rtuDevice(t, ports, url, 1), rtuDevice(t, ports, url, 2)}
	readGood := func(after string) {
		t.Helper()
		for i, d := range good {
			v, err := d.Read()
			if err != nil || v["v"] != float64(1000*(i+1)+7) {
				t.Fatalf("unit %d after %s: %v, %v", i+1, after, v, err)
			}
		}
	}
	readGood("nothing")
	for unit, want := range map[int]error{3: modbus.ErrBadUnitId, 4: modbus.ErrBadCRC, 5: modbus.ErrRequestTimedOut} {
		_, err := rtuDevice(t, ports, url, unit).Read()
		if !errors.Is(err, want) || !strings.Contains(err.Error(), "holding 7..7 (v)") {
			t.Fatalf("unit %d: %v; want %v naming the register", unit, err, want)
		}
		readGood(want.Error())
	}
	if r.count(5) != 1 || r.count(1) != 4 {
		t.Errorf("requests: unit 5 %d (want 1), unit 1 %d (want 4)", r.count(5), r.count(1))
	}
}

// Modbus RTU through a pseudo-terminal pair: the device's side is the
// pty's master, where the responder reads the frames the driver sends on
// the slave, as on a USB RS-485 adapter.
func TestModbusRTU(t *testing.T) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	defer ptmx.Close()
	defer tty.Close()
	if _, err := term.MakeRaw(int(tty.Fd())); err != nil { // no echo, no line editing
		t.Fatal(err)
	}
	r := newResponder()
	go r.serve(ptmx)
	checkRTULine(t, "rtu://"+tty.Name(), r)
}

// Modbus RTU over TCP: RTU frames through a serial-to-Ethernet converter.
func TestModbusRTUOverTCP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r := newResponder()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); r.serve(c) }()
		}
	}()
	checkRTULine(t, "rtuovertcp://"+l.Addr().String(), r)
}

package sensors_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/simonvetter/modbus"

	"github.com/edgegw/edgegw/gateway/wait"
	"github.com/edgegw/edgegw/sensors"
	"github.com/edgegw/edgegw/sensors/modbussim"
)

func f64(v float64) *float64 { return &v }

func startSim(t *testing.T, units map[uint8]*modbussim.Unit) *modbussim.Server {
	t.Helper()
	s, err := modbussim.Start("127.0.0.1:0", units)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// openModbus opens a device on ports for the test's length.
func openModbus(t *testing.T, ports *sensors.ModbusPorts, spec sensors.ModbusSpec) *sensors.ModbusDevice {
	t.Helper()
	d, err := sensors.OpenModbus(ports, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func put32(t map[uint16]uint16, addr uint16, v uint32, lowFirst bool) {
	hi, lo := uint16(v>>16), uint16(v)
	if lowFirst {
		hi, lo = lo, hi
	}
	t[addr], t[addr+1] = hi, lo
}

func put64(t map[uint16]uint16, addr uint16, v uint64) {
	for k := range 4 {
		t[addr+uint16(k)] = uint16(v >> (48 - 16*k))
	}
}

// TestModbusEveryTypeAndOrder reads one of each type from both tables, in
// both word orders and byte orders, scaled, a string, coils and discrete
// inputs, and counts the requests: one per table, adjacent registers
// grouped.
func TestModbusEveryTypeAndOrder(t *testing.T) {
	u := modbussim.NewUnit()
	u.Holding[0] = 2301                                  // uint16 ×0.1
	u.Holding[1] = uint16(0xffff)                        // int16 -1
	put32(u.Holding, 2, uint32(0xfffffffe), false)       // int32 -2
	put32(u.Holding, 4, 123456, true)                    // uint32 low first
	put32(u.Holding, 6, math.Float32bits(21.5), false)   // float32
	put64(u.Holding, 8, math.Float64bits(-3.25))         // float64
	put64(u.Holding, 12, uint64(1)<<40)                  // uint64
	put64(u.Holding, 16, uint64(math.MaxUint64))         // int64 -1
	u.Holding[20] = 1                                    // bool
	for k, w := range []uint16{0x454d, 0x3334, 0x3000} { // "EM340" + NUL
		u.Holding[100+uint16(k)] = w
	}
	u.Input[10] = 0x3412 // little-endian bytes: 0x1234
	u.Input[11] = 7
	u.Coils[0], u.Coils[1], u.Coils[2] = true, false, true
	u.Discrete[5] = true
	sim := startSim(t, map[uint8]*modbussim.Unit{1: u})

	spec := sensors.ModbusSpec{URL: sim.URL, UnitID: 1, Registers: []sensors.ModbusRegister{
		{Name: "voltage_v", Table: "holding", Address: 0, Type: "uint16", Scale: f64(0.1)},
		{Name: "i16", Table: "holding", Address: 1, Type: "int16"},
		{Name: "i32", Table: "holding", Address: 2, Type: "int32"},
		{Name: "energy_kwh", Table: "holding", Address: 4, Type: "uint32", WordOrder: "low_first"},
		{Name: "temp_c", Table: "holding", Address: 6, Type: "float32", Offset: 0.5},
		{Name: "f64", Table: "holding", Address: 8, Type: "float64"},
		{Name: "u64", Table: "holding", Address: 12, Type: "uint64"},
		{Name: "i64", Table: "holding", Address: 16, Type: "int64"},
		{Name: "running", Table: "holding", Address: 20, Type: "bool"},
		{Name: "model", Table: "holding", Address: 100, Type: "string", Length: 3},
		{Name: "le", Table: "input", Address: 10, Type: "uint16"},
		{Name: "in11", Table: "input", Address: 11, Type: "int16", Scale: f64(2), Offset: 1},
		{Name: "pump", Table: "coil", Address: 0},
		{Name: "valve", Table: "coil", Address: 2, Type: "bool"},
		{Name: "door", Table: "discrete", Address: 5},
	}}
	// The little-endian register is read on a device of its own order.
	le := spec
	le.ByteOrder, le.Registers = "little", []sensors.ModbusRegister{{Name: "le", Table: "input", Address: 10, Type: "uint16"}}
	spec.Registers = append(spec.Registers[:10], spec.Registers[11:]...)

	ports := sensors.NewModbusPorts(nil)
	d, err := sensors.OpenModbus(ports, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	vals, err := d.Read()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"voltage_v": 230.1, "i16": -1, "i32": -2, "energy_kwh": 123456, "temp_c": 22,
		"f64": -3.25, "u64": 1 << 40, "i64": -1, "running": 1, "in11": 15, "pump": 1, "valve": 1, "door": 1}
	for k, w := range want {
		if got, ok := vals[k]; !ok || math.Abs(got-w) > 1e-9 {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, w)
		}
	}
	if len(vals) != len(want) {
		t.Errorf("values %v, want %d of them", vals, len(want))
	}
	if got := d.Strings()["model"]; got != "EM340" {
		t.Errorf("model = %q, want EM340", got)
	}
	// holding 0..20 with a bridged gap to 100? No: 21..99 is too far.
	// holding 0..20, holding 100..102, input 11, coils 0..2, discrete 5.
	if got := sim.Requests(1); got != 5 {
		t.Errorf("%d requests, want 5 (one per group)", got)
	}
	dl, err := sensors.OpenModbus(ports, le)
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Close()
	if v, err := dl.Read(); err != nil || v["le"] != 0x1234 {
		t.Errorf("little-endian register = %v, %v; want %d", v, err, 0x1234)
	}
	// The payload puts the string among the numbers.
	b, _ := json.Marshal(sensors.Payload{Sensor: "m", Values: vals, Text: d.Strings()})
	if !strings.Contains(string(b), `"model":"EM340"`) || !strings.Contains(string(b), `"voltage_v":230.1`) {
		t.Errorf("payload %s", b)
	}
	var back sensors.Payload
	if err := json.Unmarshal(b, &back); err != nil || back.Text["model"] != "EM340" || back.Values["door"] != 1 {
		t.Errorf("payload read back: %+v, %v", back, err)
	}
}

// TestModbusGrouping counts requests at the protocol's limits: 125
// registers and 2,000 coils a request, gaps bridged up to 8 registers.
func TestModbusGrouping(t *testing.T) {
	u := modbussim.NewUnit()
	var regs []sensors.ModbusRegister
	for a := range 130 { // 130 adjacent: 2 requests
		u.Holding[uint16(a)] = uint16(a)
		regs = append(regs, sensors.ModbusRegister{Name: "h" + itoa(a), Table: "holding", Address: a, Type: "uint16"})
	}
	for _, a := range []int{1000, 1009, 1030} { // a gap of 8 bridged, of 20 not: 2 requests
		u.Input[uint16(a)] = 1
		regs = append(regs, sensors.ModbusRegister{Name: "i" + itoa(a), Table: "input", Address: a, Type: "uint16"})
	}
	for a := 1001; a < 1009; a++ {
		u.Input[uint16(a)] = 0 // mapped, so the bridge is read
	}
	for a := range 2001 { // 2 requests
		u.Coils[uint16(a)] = a%3 == 0
		regs = append(regs, sensors.ModbusRegister{Name: "c" + itoa(a), Table: "coil", Address: a})
	}
	sim := startSim(t, map[uint8]*modbussim.Unit{7: u})
	d := openModbus(t, sensors.NewModbusPorts(nil), sensors.ModbusSpec{URL: sim.URL, UnitID: 7, Registers: regs})
	vals, err := d.Read()
	if err != nil {
		t.Fatal(err)
	}
	if got := sim.Requests(7); got != 6 {
		t.Errorf("%d requests, want 6", got)
	}
	if vals["h129"] != 129 || vals["i1009"] != 1 || vals["c2000"] != 0 || vals["c1998"] != 1 || len(vals) != len(regs) {
		t.Errorf("h129=%v i1009=%v c2000=%v c1998=%v, %d values of %d", vals["h129"], vals["i1009"], vals["c2000"], vals["c1998"], len(vals), len(regs))
	}
}

// TestModbusBridgeRefused: a device that refuses an address inside a
// bridged gap is read without bridges, and the reading is whole.
func TestModbusBridgeRefused(t *testing.T) {
	u := modbussim.NewUnit()
	u.Input[0], u.Input[1], u.Input[5] = 1, 2, 3 // 2..4 unmapped: illegal data address
	sim := startSim(t, map[uint8]*modbussim.Unit{1: u})
	d := openModbus(t, sensors.NewModbusPorts(nil), sensors.ModbusSpec{URL: sim.URL, UnitID: 1, Registers: []sensors.ModbusRegister{
		{Name: "a", Table: "input", Address: 0, Type: "uint32"}, {Name: "b", Table: "input", Address: 5, Type: "uint16"},
	}})
	for range 2 {
		vals, err := d.Read()
		if err != nil || vals["a"] != 1<<16|2 || vals["b"] != 3 {
			t.Fatalf("%v, %v", vals, err)
		}
	}
	if got := sim.Requests(1); got != 5 { // the bridged try, then 2 each
		t.Errorf("%d requests, want 5", got)
	}
}

// TestModbusExceptionNamesTheRegister: an exception answer names the
// table, the addresses and the registers, and leaves the connection up.
func TestModbusExceptionNamesTheRegister(t *testing.T) {
	u := modbussim.NewUnit()
	u.Holding[0] = 1
	sim := startSim(t, map[uint8]*modbussim.Unit{1: u})
	d := openModbus(t, sensors.NewModbusPorts(nil), sensors.ModbusSpec{URL: sim.URL, UnitID: 1, Registers: []sensors.ModbusRegister{
		{Name: "ok", Table: "holding", Address: 0, Type: "uint16"}, {Name: "setpoint_c", Table: "holding", Address: 300, Type: "int16"},
	}})
	_, err := d.Read()
	if !errors.Is(err, modbus.ErrIllegalDataAddress) || !strings.Contains(err.Error(), "holding 300..300 (setpoint_c)") || !strings.Contains(err.Error(), "unit 1") {
		t.Fatalf("err = %v; want illegal data address naming holding 300..300 (setpoint_c)", err)
	}
}

// TestModbusWrite: a writable register is set (type and range checked,
// scale undone) and read back; nothing else is writable.
func TestModbusWrite(t *testing.T) {
	u := modbussim.NewUnit()
	u.Holding[10] = 200
	u.Holding[11] = 5
	u.Coils[3] = false
	sim := startSim(t, map[uint8]*modbussim.Unit{1: u})
	d := openModbus(t, sensors.NewModbusPorts(nil), sensors.ModbusSpec{URL: sim.URL, UnitID: 1, Registers: []sensors.ModbusRegister{
		{Name: "setpoint_c", Table: "holding", Address: 10, Type: "int16", Scale: f64(0.1), Writable: true},
		{Name: "mode", Table: "holding", Address: 11, Type: "uint16"},
		{Name: "fan", Table: "coil", Address: 3, Writable: true},
	}})
	if got, err := d.Write("setpoint_c", -21.5); err != nil || got != -21.5 {
		t.Fatalf("write setpoint_c: %v, %v", got, err)
	}
	sim.Do(func(units map[uint8]*modbussim.Unit) {
		if w := units[1].Holding[10]; int16(w) != -215 {
			t.Errorf("register 10 holds %d, want -215", int16(w))
		}
	})
	if got, err := d.Write("fan", 1); err != nil || got != 1 {
		t.Fatalf("write fan: %v, %v", got, err)
	}
	if _, err := d.Write("mode", 3); err == nil || !strings.Contains(err.Error(), "not writable") {
		t.Errorf("write mode: %v, want not writable", err)
	}
	if _, err := d.Write("setpoint_c", 4000); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Errorf("write 4000 into an int16 ×0.1: %v, want outside", err)
	}
	if _, err := d.Write("nope", 1); err == nil {
		t.Error("write to an unknown register worked")
	}
}

// TestModbusDeadUnitDoesNotStopOthers: three units behind one connection
// (a Modbus TCP gateway in front of an RS-485 line), polled together; one
// stops answering. The other two keep their interval: each of their
// readings comes at most one interval plus one timeout after the last,
// while the dead one fails, is retried with backoff and says why.
func TestModbusDeadUnitDoesNotStopOthers(t *testing.T) {
	units := map[uint8]*modbussim.Unit{1: modbussim.NewUnit(), 2: modbussim.NewUnit(), 3: modbussim.NewUnit()}
	for _, u := range units {
		u.Holding[0] = 1
	}
	const interval, timeout = 200 * time.Millisecond, 50 * time.Millisecond
	units[3].Silent = 4 * timeout
	sim := startSim(t, units)
	ports := sensors.NewModbusPorts(nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	times := map[string][]time.Time{}
	var pollers []*sensors.Poller
	for id := 1; id <= 3; id++ {
		spec := sensors.ModbusSpec{URL: sim.URL, UnitID: id, Timeout: timeout, Registers: []sensors.ModbusRegister{{Name: "v", Table: "holding", Address: 0, Type: "uint16"}}}
		name := "unit" + itoa(id)
		p, err := sensors.NewPoller(name, interval, func() (sensors.Reader, error) { return sensors.OpenModbus(ports, spec) }, nil)
		if err != nil {
			t.Fatal(err)
		}
		p.Stagger(interval * time.Duration(id-1) / 3)
		pollers = append(pollers, p)
		wg.Go(func() {
			p.Run(ctx, func(ctx context.Context, r sensors.Reading) error {
				mu.Lock()
				times[name] = append(times[name], r.Time)
				mu.Unlock()
				return nil
			})
		})
	}
	wait.For(t, "the dead unit's 4th failure", func() bool { return pollers[2].Stats().Failures >= 4 })
	cancel()
	wg.Wait()
	st := pollers[2].Stats()
	if st.Available || st.Reads != 0 || !strings.Contains(st.LastError, "unit 3") || !strings.Contains(st.LastError, "timed out") {
		t.Errorf("dead unit: %+v; want unavailable, no reads, the unit and the timeout named", st)
	}
	for _, name := range []string{"unit1", "unit2"} {
		ts := times[name]
		if len(ts) < 5 {
			t.Fatalf("%s: %d readings while the dead one failed 4 times", name, len(ts))
		}
		for k := 1; k < len(ts); k++ {
			// A tick can wait for one dead transaction on the line, and
			// the machine is busy: one interval, a timeout and slack.
			if gap := ts[k].Sub(ts[k-1]); gap > interval+timeout+150*time.Millisecond {
				t.Errorf("%s: %s between readings %d and %d; the interval is %s", name, gap, k-1, k, interval)
			}
		}
	}
}

// TestModbusDeviceRestarted: the device goes away mid-poll and comes back
// at the same address; the connection is reopened and readings go on.
func TestModbusDeviceRestarted(t *testing.T) {
	u := modbussim.NewUnit()
	u.Holding[0] = 1
	sim := startSim(t, map[uint8]*modbussim.Unit{1: u})
	addr := strings.TrimPrefix(sim.URL, "tcp://")
	spec := sensors.ModbusSpec{URL: sim.URL, UnitID: 1, Timeout: 200 * time.Millisecond, Registers: []sensors.ModbusRegister{{Name: "v", Table: "holding", Address: 0, Type: "uint16"}}}
	ports := sensors.NewModbusPorts(nil)
	p, _ := sensors.NewPoller("meter", 50*time.Millisecond, func() (sensors.Reader, error) { return sensors.OpenModbus(ports, spec) }, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan float64, 1000)
	go p.Run(ctx, func(ctx context.Context, r sensors.Reading) error {
		var pl sensors.Payload
		json.Unmarshal(r.Payload, &pl)
		got <- pl.Values["v"]
		return nil
	})
	if v := <-got; v != 1 {
		t.Fatalf("first reading %v", v)
	}
	sim.Close()
	wait.For(t, "a failure with the device gone", func() bool { return p.Stats().Failures > 0 })
	u2 := modbussim.NewUnit()
	u2.Holding[0] = 2
	sim2, err := modbussim.Start(addr, map[uint8]*modbussim.Unit{1: u2})
	if err != nil {
		t.Fatal(err)
	}
	defer sim2.Close()
	for v := range got {
		if v == 2 {
			break // read from the restarted device
		}
	}
	if !p.Stats().Available {
		t.Error("not available again")
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// FuzzModbusDecode: any words decode in every type and order without a
// panic; a number decoded is finite; and what a number encodes to decodes
// to it again.
//
//	go test -run '^$' -fuzz FuzzModbusDecode ./sensors/
func FuzzModbusDecode(f *testing.F) {
	f.Add([]byte{0x43, 0x66, 0x00, 0x00, 0, 0, 0, 0}, uint8(6), false, false, 0.1)
	f.Add([]byte{0xff, 0xff, 0xff, 0xfe, 1, 2, 3, 4}, uint8(2), true, true, 1.0)
	f.Add([]byte{0x7f, 0xc0, 0, 0, 0, 0, 0, 0}, uint8(6), false, false, 1.0) // NaN
	types := []string{"int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "bool", "string"}
	f.Fuzz(func(t *testing.T, raw []byte, ti uint8, little, lowFirst bool, scale float64) {
		typ := types[int(ti)%len(types)]
		r := sensors.ModbusRegister{Name: "v", Table: "holding", Type: typ, Length: 4}
		if typ != "bool" && typ != "string" && scale != 0 && !math.IsNaN(scale) && !math.IsInf(scale, 0) && math.Abs(scale) < 1e6 && math.Abs(scale) > 1e-6 {
			r.Scale = &scale
		}
		bo, wo := "big", "high_first"
		if little {
			bo = "little"
		}
		if lowFirst {
			wo = "low_first"
		}
		words := make([]uint16, r.Width())
		for k := range words {
			if 2*k+1 < len(raw) {
				words[k] = uint16(raw[2*k])<<8 | uint16(raw[2*k+1])
			}
		}
		v, _, ok := r.Decode(words, bo, wo)
		if !ok || typ == "string" {
			return
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			t.Fatalf("%s %v decoded to %v", typ, words, v)
		}
		if typ == "int64" || typ == "uint64" || typ == "float32" {
			return // float64 holds neither exactly
		}
		back, err := r.Encode(v, bo, wo)
		if err != nil {
			t.Fatalf("%s: %v read %v, which does not encode: %v", typ, words, v, err)
		}
		if v2, _, _ := r.Decode(back, bo, wo); math.Abs(v2-v) > 1e-9*math.Max(1, math.Abs(v)) {
			t.Fatalf("%s: %v read %v, encoded %v, read %v", typ, words, v, back, v2)
		}
	})
}

// frame_gap: the line is kept quiet that long between two transactions,
// whichever devices they are for.
func TestModbusFrameGap(t *testing.T) {
	units := map[uint8]*modbussim.Unit{1: modbussim.NewUnit(), 2: modbussim.NewUnit()}
	units[1].Holding[0], units[2].Holding[0] = 1, 2
	sim := startSim(t, units)
	ports := sensors.NewModbusPorts(nil)
	const gap = 30 * time.Millisecond
	var devs []*sensors.ModbusDevice
	for id := 1; id <= 2; id++ {
		d, err := sensors.OpenModbus(ports, sensors.ModbusSpec{URL: sim.URL, UnitID: id, FrameGap: gap,
			Registers: []sensors.ModbusRegister{{Name: "v", Table: "holding", Address: 0, Type: "uint16"}}})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		devs = append(devs, d)
	}
	start := time.Now()
	for k := range 6 {
		if _, err := devs[k%2].Read(); err != nil {
			t.Fatal(err)
		}
	}
	if took := time.Since(start); took < 5*gap {
		t.Fatalf("6 transactions in %s: the 5 gaps between them need %s", took, 5*gap)
	}
}

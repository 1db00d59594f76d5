package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/edgegw/edgegw/sensors"
)

// cmdModbusRead reads registers of one device once, the installer's probe
// before the config is written (as i2c scan is for I²C): what the device
// answers at an address, in a type and order, or the exception it gives.
func cmdModbusRead(args []string, stdout, stderr io.Writer) int {
	fs := flags("modbus read", stderr)
	u := fs.String("url", "", "the device: tcp://HOST:502, rtu:///dev/ttyUSB0 or rtuovertcp://HOST:PORT")
	unit := fs.Int("unit", 1, "unit id (slave id)")
	table := fs.String("table", "holding", "holding, input, coil or discrete")
	addr := fs.Int("address", 0, "the first register's address (0-based, as on the wire: register 40001 is holding 0)")
	typ := fs.String("type", "uint16", "int16 uint16 int32 uint32 int64 uint64 float32 float64 bool string")
	count := fs.Int("count", 1, "how many values of that type, one after another")
	length := fs.Int("length", 0, "string: its length in registers")
	byteOrder := fs.String("byte-order", "big", "big or little (within a register)")
	wordOrder := fs.String("word-order", "high_first", "high_first or low_first (across registers)")
	timeout := fs.Duration("timeout", time.Second, "a transaction's timeout")
	baud := fs.Int("baud", 9600, "rtu: line speed")
	parity := fs.String("parity", "none", "rtu: none, even or odd")
	stop := fs.Int("stop-bits", 0, "rtu: 1 or 2 (default: 2 without parity, else 1)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	spec := sensors.ModbusSpec{URL: *u, UnitID: *unit, Timeout: *timeout, ByteOrder: *byteOrder, WordOrder: *wordOrder}
	if spec.Transport() == "rtu" {
		spec.Serial = &sensors.SerialSpec{Baud: *baud, DataBits: 8, Parity: *parity, StopBits: *stop}
	}
	if *count < 1 || *count > 2000 {
		fmt.Fprintf(stderr, "edgegw: --count %d is outside 1..2000\n", *count)
		return 2
	}
	at := *addr
	for k := range *count {
		r := sensors.ModbusRegister{Name: fmt.Sprintf("%s %d", *table, at), Table: *table, Address: at, Type: *typ, Length: *length}
		spec.Registers = append(spec.Registers, r)
		w := r.Width()
		if w == 0 || k == *count-1 {
			break
		}
		at += w
	}
	if errs := spec.Check(); len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintf(stderr, "edgegw: --%s\n", modbusFlag(e))
		}
		return 2
	}
	d, err := sensors.OpenModbus(sensors.NewModbusPorts(nil), spec)
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
	}
	defer d.Close()
	vals, err := d.Read()
	if err != nil {
		fmt.Fprintf(stderr, "edgegw: %s: %v\n", *u, err)
		return 1
	}
	for _, r := range spec.Registers {
		if t, ok := d.Strings()[r.Name]; ok {
			fmt.Fprintf(stdout, "%-16s %-8s %q\n", r.Name, r.Type, t)
		} else if v, ok := vals[r.Name]; ok {
			fmt.Fprintf(stdout, "%-16s %-8s %g\n", r.Name, r.Type, v)
		} else {
			fmt.Fprintf(stdout, "%-16s %-8s not a number (NaN or infinite)\n", r.Name, r.Type)
		}
	}
	return 0
}

// modbusFlag names a spec problem by its flag: registers[0].table is --table.
func modbusFlag(e *sensors.SpecError) string {
	f := e.Field
	if i := strings.LastIndex(f, "."); i >= 0 {
		f = f[i+1:]
	}
	switch f {
	case "unit_id":
		f = "unit"
	case "name":
		f = "address"
	}
	return strings.ReplaceAll(f, "_", "-") + ": " + e.Msg
}

package sensors

import (
	"slices"

	"periph.io/x/conn/v3/i2c"
)

// Found is an address that answered a scan, with the sensors known to use
// it (an address alone cannot tell them apart).
type Found struct {
	Addr  uint16
	Known []string
}

// Scan probes every 7-bit address from 0x03 to 0x77 with a one-byte read
// (as i2cdetect -r does) and returns those that acknowledge. A read can
// upset a few write-only devices; none of the sensors above.
func Scan(bus i2c.Bus) []Found {
	var out []Found
	var b [1]byte
	for addr := uint16(0x03); addr <= 0x77; addr++ {
		if bus.Tx(addr, nil, b[:]) == nil {
			out = append(out, Found{Addr: addr, Known: knownAt(addr)})
		}
	}
	return out
}

// knownAt names the drivers of the table whose devices can answer at addr.
func knownAt(addr uint16) []string {
	var out []string
	for _, d := range Drivers {
		if d.Bus == BusI2C && slices.Contains(d.Addrs, addr) && !slices.Contains(out, d.Name) {
			out = append(out, d.Name)
		}
	}
	return out
}

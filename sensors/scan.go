package sensors

import (
	"periph.io/x/conn/v3/i2c"
)

// Found is an address that answered a scan, with the sensors known to use
// it (an address alone cannot tell them apart).
type Found struct {
	Addr  uint16
	Known []string
}

// known maps addresses to the drivers (and common parts) that use them.
var known = map[uint16][]string{
	0x18: {"mcp9808"}, 0x19: {"mcp9808"}, 0x1a: {"mcp9808"}, 0x1b: {"mcp9808"},
	0x1c: {"mcp9808"}, 0x1d: {"mcp9808"}, 0x1e: {"mcp9808"}, 0x1f: {"mcp9808"},
	0x23: {"bh1750"}, 0x5c: {"bh1750"},
	0x38: {"AHT20"},
	0x40: {"ina219"}, 0x41: {"ina219"}, 0x44: {"ina219", "SHT3x"}, 0x45: {"ina219", "SHT3x"},
	0x48: {"ADS1x15", "TMP102"}, 0x49: {"ADS1x15", "TMP102"}, 0x4a: {"ADS1x15", "TMP102"}, 0x4b: {"ADS1x15", "TMP102"},
	0x62: {"SCD4x"},
	0x76: {"bme280", "bmp280"}, 0x77: {"bme280", "bmp280", "BMP180"},
}

// Scan probes every 7-bit address from 0x03 to 0x77 with a one-byte read
// (as i2cdetect -r does) and returns those that acknowledge. A read can
// upset a few write-only devices; none of the sensors above.
func Scan(bus i2c.Bus) []Found {
	var out []Found
	var b [1]byte
	for addr := uint16(0x03); addr <= 0x77; addr++ {
		if bus.Tx(addr, nil, b[:]) == nil {
			out = append(out, Found{Addr: addr, Known: known[addr]})
		}
	}
	return out
}

package sensors

import (
	"fmt"

	"periph.io/x/conn/v3/onewire"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/ds18b20"
)

// DS18B20 reads a Maxim DS18B20 1-Wire temperature probe with periph's
// ds18b20 driver. Wiring on a Pi: data to GPIO4 (pin 7) with a 4.7 kΩ
// pull-up to 3.3 V, `dtoverlay=w1-gpio` in config.txt; several probes share
// the line, each known by its 64-bit ROM address.
type DS18B20 struct{ dev *ds18b20.Dev }

// OpenDS18B20 opens the probe with ROM address rom at the given resolution
// (9 to 12 bits; 0 means 12: 0.0625 °C, 750 ms per conversion).
func OpenDS18B20(bus onewire.Bus, rom onewire.Address, bits int) (*DS18B20, error) {
	if bits == 0 {
		bits = 12
	}
	dev, err := ds18b20.New(bus, rom, bits)
	if err != nil {
		return nil, fmt.Errorf("ds18b20 %#016x: %w", uint64(rom), err)
	}
	return &DS18B20{dev: dev}, nil
}

// Read converts and returns temperature_c.
func (d *DS18B20) Read() (map[string]float64, error) {
	var e physic.Env
	if err := d.dev.Sense(&e); err != nil {
		return nil, err
	}
	return map[string]float64{"temperature_c": round(e.Temperature.Celsius(), 4)}, nil
}

// Close halts the probe.
func (d *DS18B20) Close() error { return d.dev.Halt() }

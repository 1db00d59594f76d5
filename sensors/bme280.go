package sensors

import (
	"fmt"
	"strings"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/bmxx80"
)

// BME280 reads a Bosch BME280 (temperature, humidity, pressure) or BMP280
// (no humidity) with periph's bmxx80 driver. Wiring: VIN 3.3 V, GND, SDA
// to GPIO2 (pin 3), SCL to GPIO3 (pin 5); address 0x76 (SDO to GND) or
// 0x77.
type BME280 struct {
	dev      *bmxx80.Dev
	humidity bool
}

// OpenBME280 initialises the sensor at addr on bus (which the caller owns
// and closes).
func OpenBME280(bus i2c.Bus, addr uint16) (*BME280, error) {
	dev, err := bmxx80.NewI2C(bus, addr, &bmxx80.DefaultOpts)
	if err != nil {
		return nil, fmt.Errorf("bme280 at %#x: %w", addr, err)
	}
	return &BME280{dev: dev, humidity: strings.HasPrefix(dev.String(), "BME280")}, nil
}

// Read takes one forced-mode measurement.
func (b *BME280) Read() (map[string]float64, error) {
	var e physic.Env
	if err := b.dev.Sense(&e); err != nil {
		return nil, err
	}
	v := map[string]float64{
		"temperature_c": round(e.Temperature.Celsius(), 2),
		"pressure_hpa":  round(float64(e.Pressure)/float64(100*physic.Pascal), 2),
	}
	if b.humidity {
		v["humidity_pct"] = round(float64(e.Humidity)/float64(physic.PercentRH), 2)
	}
	return v, nil
}

// Close halts the sensor.
func (b *BME280) Close() error { return b.dev.Halt() }

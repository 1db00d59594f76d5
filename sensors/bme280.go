package sensors

import (
	"fmt"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/devices/v3/bmxx80"
)

// OpenBME280 opens a Bosch BME280 (temperature, humidity, pressure) or
// BMP280 (no humidity: its Precision says so) at addr on bus (which the
// caller owns and closes), with periph's bmxx80 driver. Wiring: VIN 3.3 V,
// GND, SDA to GPIO2 (pin 3), SCL to GPIO3 (pin 5); address 0x76 (SDO to
// GND) or 0x77.
func OpenBME280(bus i2c.Bus, addr uint16) (*EnvSensor, error) {
	dev, err := bmxx80.NewI2C(bus, addr, &bmxx80.DefaultOpts)
	if err != nil {
		return nil, fmt.Errorf("bme280 at %#x: %w", addr, err)
	}
	return NewEnvSensor(dev), nil
}

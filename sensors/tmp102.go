package sensors

import (
	"fmt"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/devices/v3/tmp102"
)

// OpenTMP102 opens a TI TMP102 temperature sensor (0.0625 °C steps,
// ±0.5 °C) at addr (0x48 to 0x4b by its ADD0 pin) with periph's tmp102
// driver, converting at 4 Hz.
func OpenTMP102(bus i2c.Bus, addr uint16) (*EnvSensor, error) {
	dev, err := tmp102.NewI2C(bus, addr, nil)
	if err != nil {
		return nil, fmt.Errorf("tmp102 at %#x: %w", addr, err)
	}
	return NewEnvSensor(dev), nil
}

package sensors

import (
	"fmt"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/devices/v3/aht20"
)

// OpenAHT20 opens an Aosong AHT20 (or AHT10) temperature and humidity
// sensor, at its fixed address 0x38, with periph's aht20 driver: it checks
// the calibration status (0x71) and calibrates the sensor if needed; each
// read triggers a measurement (0xAC 0x33 0x00), waits the datasheet's
// 80 ms, and checks the CRC.
func OpenAHT20(bus i2c.Bus) (*EnvSensor, error) {
	dev, err := aht20.NewI2C(bus, nil)
	if err != nil {
		return nil, fmt.Errorf("aht20 at 0x38: %w", err)
	}
	return NewEnvSensor(aht20Dev{dev}), nil
}

// aht20Dev completes periph's aht20.Dev as a physic.SenseEnv (it lacks
// String).
type aht20Dev struct{ *aht20.Dev }

func (aht20Dev) String() string { return "AHT20" }

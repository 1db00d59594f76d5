package sensors

import (
	"fmt"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/scd4x"
)

// SCD4x reads a Sensirion SCD40/SCD41 CO₂ sensor (with temperature and
// humidity) with periph's scd4x driver, in periodic measurement mode (a
// new value every 5 s; poll no faster). Address 0x62.
type SCD4x struct{ dev *scd4x.Dev }

// OpenSCD4x starts periodic measurement at addr (0 means 0x62) on bus.
func OpenSCD4x(bus i2c.Bus, addr uint16) (*SCD4x, error) {
	if addr == 0 {
		addr = scd4x.SensorAddress
	}
	dev, err := scd4x.NewI2C(bus, addr)
	if err != nil {
		return nil, fmt.Errorf("scd4x at %#x: %w", addr, err)
	}
	return &SCD4x{dev: dev}, nil
}

// Read waits for the next measurement and returns co2_ppm, temperature_c
// and humidity_pct.
func (s *SCD4x) Read() (map[string]float64, error) {
	var e scd4x.Env
	if err := s.dev.Sense(&e); err != nil {
		return nil, err
	}
	return map[string]float64{
		"co2_ppm":       float64(e.CO2),
		"temperature_c": round(e.Temperature.Celsius(), 2),
		"humidity_pct":  round(float64(e.Humidity)/float64(physic.PercentRH), 2),
	}, nil
}

// Close stops periodic measurement.
func (s *SCD4x) Close() error { return s.dev.Halt() }

package sensors

import (
	"periph.io/x/conn/v3/physic"
)

// EnvSensor reads a periph device that implements physic.SenseEnv
// (BME280/BMP280, AHT20, TMP102, …). Which values it reports comes from the
// device's own Precision, not from its name: a quantity the device does
// not measure has a zero precision.
type EnvSensor struct {
	dev  physic.SenseEnv
	prec physic.Env
}

// NewEnvSensor wraps dev.
func NewEnvSensor(dev physic.SenseEnv) *EnvSensor {
	s := &EnvSensor{dev: dev}
	dev.Precision(&s.prec)
	return s
}

// Read takes one measurement: temperature_c, humidity_pct and
// pressure_hpa, those the device measures.
func (s *EnvSensor) Read() (map[string]float64, error) {
	var e physic.Env
	if err := s.dev.Sense(&e); err != nil {
		return nil, err
	}
	v := map[string]float64{}
	if s.prec.Temperature != 0 {
		v["temperature_c"] = round(e.Temperature.Celsius(), 2)
	}
	if s.prec.Humidity != 0 {
		v["humidity_pct"] = round(float64(e.Humidity)/float64(physic.PercentRH), 2)
	}
	if s.prec.Pressure != 0 {
		v["pressure_hpa"] = round(float64(e.Pressure)/float64(100*physic.Pascal), 2)
	}
	return v, nil
}

// Close halts the device.
func (s *EnvSensor) Close() error { return s.dev.Halt() }

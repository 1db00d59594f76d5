package sensors

import (
	"fmt"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/ina219"
)

// INA219 reads a TI INA219 current/power monitor with periph's ina219
// driver (100 mΩ shunt, 3.2 A full scale: the common breakout boards).
// Addresses 0x40 to 0x4f (A0, A1).
type INA219 struct{ dev *ina219.Dev }

// OpenINA219 calibrates the monitor at addr (0 means 0x40) on bus.
func OpenINA219(bus i2c.Bus, addr uint16) (*INA219, error) {
	o := ina219.DefaultOpts
	if addr != 0 {
		o.Address = int(addr)
	}
	dev, err := ina219.New(bus, &o)
	if err != nil {
		return nil, fmt.Errorf("ina219 at %#x: %w", o.Address, err)
	}
	return &INA219{dev: dev}, nil
}

// Read returns bus_voltage_v, shunt_voltage_mv, current_a and power_w.
func (d *INA219) Read() (map[string]float64, error) {
	pm, err := d.dev.Sense()
	if err != nil {
		return nil, err
	}
	return map[string]float64{
		"bus_voltage_v":    round(float64(pm.Voltage)/float64(physic.Volt), 3),
		"shunt_voltage_mv": round(float64(pm.Shunt)/float64(physic.MilliVolt), 3),
		"current_a":        round(float64(pm.Current)/float64(physic.Ampere), 4),
		"power_w":          round(float64(pm.Power)/float64(physic.Watt), 4),
	}, nil
}

// Close does nothing: the INA219 keeps measuring.
func (d *INA219) Close() error { return nil }

package modbussim

import (
	"math"
	"time"
)

// The energy meter's input registers, as an Eastron SDM630 maps them
// (float32, high word first, big-endian): docs/modbus.md's worked example.
const (
	MeterVoltageL1 = 0x0000 // V
	MeterCurrentL1 = 0x0006 // A
	MeterPowerL1   = 0x000C // W
	MeterFrequency = 0x0046 // Hz
	MeterEnergy    = 0x0156 // total kWh
)

// EnergyMeter is a unit that reads like a single-phase load on an SDM630:
// the voltage and current wander, the energy counts up with the power.
func EnergyMeter(start time.Time) *Unit {
	u := NewUnit()
	kwh, last := 1234.5, start
	u.Hook = func(u *Unit) {
		now := time.Now()
		t := now.Sub(start).Seconds()
		v := 230 + 2*math.Sin(t/60)
		a := 4 + 1.5*math.Sin(t/17) + 0.3*math.Sin(t/3)
		w := v * a
		kwh += w * now.Sub(last).Hours() / 1000
		last = now
		setFloat32(u.Input, MeterVoltageL1, v)
		setFloat32(u.Input, MeterCurrentL1, a)
		setFloat32(u.Input, MeterPowerL1, w)
		setFloat32(u.Input, MeterFrequency, 50+0.02*math.Sin(t/7))
		setFloat32(u.Input, MeterEnergy, kwh)
	}
	u.Hook(u)
	return u
}

func setFloat32(t map[uint16]uint16, addr uint16, v float64) {
	b := math.Float32bits(float32(v))
	t[addr], t[addr+1] = uint16(b>>16), uint16(b)
}

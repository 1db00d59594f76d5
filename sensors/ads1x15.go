package sensors

import (
	"errors"
	"fmt"
	"math"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/ads1x15"
)

// ADCChannel is one ADS1x15 input and how to turn its voltage into a value:
// Name = volts × Scale + Offset (a 4–20 mA loop over 250 Ω, a divider…).
type ADCChannel struct {
	Input      string  // "0".."3" single-ended, or "0-1", "0-3", "1-3", "2-3"
	MaxVoltage float64 // full scale in volts: picks the gain (default 4.096)
	Scale      float64 // 0 means 1
	Offset     float64
	Name       string // with its unit, e.g. tank_level_pct
}

var adcInputs = map[string]ads1x15.Channel{
	"0": ads1x15.Channel0, "1": ads1x15.Channel1, "2": ads1x15.Channel2, "3": ads1x15.Channel3,
	"0-1": ads1x15.Channel0Minus1, "0-3": ads1x15.Channel0Minus3, "1-3": ads1x15.Channel1Minus3, "2-3": ads1x15.Channel2Minus3,
}

// Check reports what is wrong with c.
func (c ADCChannel) Check() error {
	if _, ok := adcInputs[c.Input]; !ok {
		return fmt.Errorf("input %q is not 0, 1, 2, 3, 0-1, 0-3, 1-3 or 2-3", c.Input)
	}
	if c.Name == "" {
		return errors.New("the value needs a name, e.g. voltage_v")
	}
	if c.MaxVoltage < 0 || c.MaxVoltage > 6.144 {
		return fmt.Errorf("max_voltage %g is not between 0 and 6.144 V", c.MaxVoltage)
	}
	if math.IsNaN(c.Scale) || math.IsInf(c.Scale, 0) || math.IsNaN(c.Offset) || math.IsInf(c.Offset, 0) {
		return errors.New("scale and offset must be finite")
	}
	return nil
}

// ADS1x15 reads channels of a TI ADS1015 (12-bit) or ADS1115 (16-bit)
// with periph's ads1x15 driver. Addresses 0x48 to 0x4b (ADDR pin).
type ADS1x15 struct {
	dev  *ads1x15.Dev
	pins []ads1x15.PinADC
	chs  []ADCChannel
}

// ADCModel is which of the two parts an ADS1x15 is.
type ADCModel int

const (
	ADS1015 ADCModel = iota // 12-bit, up to 3300 samples/s
	ADS1115                 // 16-bit, up to 860 samples/s
)

// ADCOptions configure an ADS1x15.
type ADCOptions struct {
	Model    ADCModel
	Addr     uint16 // 0x48 to 0x4b by the ADDR pin; 0 means 0x48
	Channels []ADCChannel
}

// OpenADS1x15 opens the converter and its channels.
func OpenADS1x15(bus i2c.Bus, ao ADCOptions) (*ADS1x15, error) {
	chs := ao.Channels
	if len(chs) == 0 {
		return nil, errors.New("ads1x15: no channels")
	}
	o := ads1x15.DefaultOpts
	if ao.Addr != 0 {
		o.I2cAddress = ao.Addr
	}
	var dev *ads1x15.Dev
	var err error
	if ao.Model == ADS1115 {
		dev, err = ads1x15.NewADS1115(bus, &o)
	} else {
		dev, err = ads1x15.NewADS1015(bus, &o)
	}
	if err != nil {
		return nil, fmt.Errorf("ads1x15 at %#x: %w", o.I2cAddress, err)
	}
	a := &ADS1x15{dev: dev, chs: chs}
	for _, c := range chs {
		if err := c.Check(); err != nil {
			return nil, err
		}
		maxV := c.MaxVoltage
		if maxV == 0 {
			maxV = 4.096
		}
		p, err := dev.PinForChannel(adcInputs[c.Input], physic.ElectricPotential(maxV*float64(physic.Volt)), physic.Hertz, ads1x15.BestQuality)
		if err != nil {
			return nil, fmt.Errorf("ads1x15 input %s: %w", c.Input, err)
		}
		a.pins = append(a.pins, p)
	}
	return a, nil
}

// Read converts every channel.
func (a *ADS1x15) Read() (map[string]float64, error) {
	out := make(map[string]float64, len(a.pins))
	for i, p := range a.pins {
		s, err := p.Read()
		if err != nil {
			return nil, fmt.Errorf("input %s: %w", a.chs[i].Input, err)
		}
		out[a.chs[i].Name] = ScaleVolts(float64(s.V)/float64(physic.Volt), a.chs[i].Scale, a.chs[i].Offset)
	}
	return out, nil
}

// ScaleVolts is the linear scale of a channel: volts × scale + offset
// (scale 0 means 1), rounded to a microunit.
func ScaleVolts(v, scale, offset float64) float64 {
	if scale == 0 {
		scale = 1
	}
	return round(v*scale+offset, 6)
}

// Close halts the pins and the converter.
func (a *ADS1x15) Close() error {
	for _, p := range a.pins {
		p.Halt()
	}
	return a.dev.Halt()
}

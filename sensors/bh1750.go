package sensors

import (
	"fmt"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/physic"
	"periph.io/x/devices/v3/bh1750"
)

// BH1750 reads a ROHM BH1750 ambient light sensor with periph's bh1750
// driver (continuous high-resolution mode, 1 lx). Address 0x23 (ADDR low)
// or 0x5c (ADDR high). A reading takes about 180 ms.
type BH1750 struct{ dev *bh1750.Dev }

// OpenBH1750 powers the sensor on at addr (0 means 0x23) on bus.
func OpenBH1750(bus i2c.Bus, addr uint16) (*BH1750, error) {
	if addr == 0 {
		addr = bh1750.I2CAddr
	}
	dev, err := bh1750.NewI2C(bus, addr)
	if err != nil {
		return nil, fmt.Errorf("bh1750 at %#x: %w", addr, err)
	}
	return &BH1750{dev: dev}, nil
}

// Read returns illuminance_lux.
func (d *BH1750) Read() (map[string]float64, error) {
	lux, err := d.dev.Sense()
	if err != nil {
		return nil, err
	}
	// periph reports illuminance in its LuminousFlux type, one lux per
	// lumen (a lux is a lumen per square metre).
	return map[string]float64{"illuminance_lux": round(float64(lux)/float64(physic.Lumen), 1)}, nil
}

// Close does nothing.
func (d *BH1750) Close() error { return nil }

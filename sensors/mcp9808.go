package sensors

import (
	"fmt"

	"periph.io/x/conn/v3/i2c"
	"periph.io/x/devices/v3/mcp9808"
)

// MCP9808 reads a Microchip MCP9808 temperature sensor (±0.25 °C) with
// periph's mcp9808 driver. Addresses 0x18 to 0x1f (A0–A2).
type MCP9808 struct{ dev *mcp9808.Dev }

// OpenMCP9808 initialises the sensor at addr (0 means 0x18) on bus.
func OpenMCP9808(bus i2c.Bus, addr uint16) (*MCP9808, error) {
	o := mcp9808.DefaultOpts
	if addr != 0 {
		o.Addr = int(addr)
	}
	dev, err := mcp9808.New(bus, &o)
	if err != nil {
		return nil, fmt.Errorf("mcp9808 at %#x: %w", o.Addr, err)
	}
	return &MCP9808{dev: dev}, nil
}

// Read returns temperature_c.
func (m *MCP9808) Read() (map[string]float64, error) {
	t, err := m.dev.SenseTemp()
	if err != nil {
		return nil, err
	}
	return map[string]float64{"temperature_c": round(t.Celsius(), 4)}, nil
}

// Close halts the sensor.
func (m *MCP9808) Close() error { return m.dev.Halt() }

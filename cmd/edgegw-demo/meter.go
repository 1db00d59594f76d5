package main

import (
	"fmt"
	"time"

	"github.com/edgegw/edgegw/gateway/status"
	"github.com/edgegw/edgegw/sensors/modbussim"
)

// meterName is the demo's field-bus device: a simulated energy meter
// (sensors/modbussim, registers as an Eastron SDM630 maps them) on Modbus
// TCP, read by the gateway's modbus driver every second.
const meterName = "main-meter"

// startMeter starts the meter; the config text reads it (docs/modbus.md).
func startMeter() (*modbussim.Server, string, error) {
	sim, err := modbussim.Start("127.0.0.1:0", map[uint8]*modbussim.Unit{1: modbussim.EnergyMeter(time.Now())})
	if err != nil {
		return nil, "", fmt.Errorf("the simulated Modbus meter: %w", err)
	}
	cfg := fmt.Sprintf(`sensors:
  - name: %s
    driver: modbus
    url: %s
    unit_id: 1
    interval: 1s
    registers:
      - {name: voltage_l1_v, table: input, address: 0x0000, type: float32}
      - {name: current_l1_a, table: input, address: 0x0006, type: float32}
      - {name: power_l1_w, table: input, address: 0x000C, type: float32}
      - {name: frequency_hz, table: input, address: 0x0046, type: float32}
      - {name: energy_kwh, table: input, address: 0x0156, type: float32}
`, meterName, sim.URL)
	return sim, cfg, nil
}

// meterOf is the meter's part of a gateway's status.
func meterOf(st status.Status) status.SourceStatus {
	for _, s := range st.Sources {
		if s.Name == meterName {
			return s
		}
	}
	return status.SourceStatus{}
}

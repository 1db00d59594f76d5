package gateway

import (
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/micro"

	"github.com/edgegw/edgegw/sensors"
)

// ModbusWriteRequest sets a register marked writable: true. Sensor may be
// left out when only one modbus sensor has a writable register of that
// name.
type ModbusWriteRequest struct {
	Sensor string  `json:"sensor,omitempty"`
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
}

// ModbusWriteReply is the value the device holds after the write, read
// back.
type ModbusWriteReply struct {
	Sensor string  `json:"sensor"`
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
}

// modbusWrite is the modbus.write endpoint. The write goes through the
// gateway's shared connection, between the polls' transactions.
func (g *Gateway) modbusWrite(r micro.Request) {
	var req ModbusWriteRequest
	if !decode(r, &req) {
		return
	}
	if req.Name == "" {
		r.Error("400", `name missing: {"sensor": "…", "name": "<a register marked writable: true>", "value": 21.5}`, nil)
		return
	}
	spec, sensor, err := g.writableRegister(req.Sensor, req.Name)
	if err != nil {
		r.Error("404", err.Error(), nil)
		return
	}
	d, err := sensors.OpenModbus(g.modbus, spec)
	if err != nil {
		r.Error("500", err.Error(), nil)
		return
	}
	defer d.Close()
	got, err := d.Write(req.Name, req.Value)
	if err != nil {
		r.Error("400", fmt.Sprintf("%s: %v", sensor, err), nil)
		return
	}
	g.log.Info("modbus register written", "sensor", sensor, "register", req.Name, "value", got)
	r.RespondJSON(ModbusWriteReply{Sensor: sensor, Name: req.Name, Value: got})
}

// writableRegister finds the modbus sensor with a writable register of
// that name: the one named, or the only one.
func (g *Gateway) writableRegister(sensor, name string) (sensors.ModbusSpec, string, error) {
	var found []string
	var spec sensors.ModbusSpec
	for _, sc := range g.config().Sensors {
		if sc.Driver != "modbus" || (sensor != "" && sc.Name != sensor) {
			continue
		}
		if slices.ContainsFunc(sc.Registers, func(r sensors.ModbusRegister) bool { return r.Name == name && r.Writable }) {
			found = append(found, sc.Name)
			spec = sc.ModbusSpec
		}
	}
	switch {
	case len(found) == 1:
		return spec, found[0], nil
	case len(found) > 1:
		return spec, "", fmt.Errorf("%q is writable on %v: say which sensor", name, found)
	case sensor != "":
		return spec, "", fmt.Errorf("modbus sensor %q has no register %q marked writable: true", sensor, name)
	}
	return spec, "", fmt.Errorf("no modbus sensor has a register %q marked writable: true", name)
}

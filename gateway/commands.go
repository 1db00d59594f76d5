package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"periph.io/x/conn/v3/gpio"

	"github.com/edgegw/edgegw/gateway/mqttroute"
	"github.com/edgegw/edgegw/gateway/status"
	"github.com/edgegw/edgegw/sensors"
)

// serveCommands registers the gateway as an instance of the NATS micro
// service "edgegw" on nc (nats micro ls finds every gateway), with its
// endpoints under edgegw.<gateway id>. (docs/fleet.md, "Commands"):
// status, buffer, config, sensors.read, mqtt.publish, gpio.set and
// modbus.write. A hub
// that does not grant the subjects gets permission errors on them and
// nothing else changes.
func (g *Gateway) serveCommands(nc *nats.Conn) (micro.Service, error) {
	version := g.o.Version
	if version == "" {
		version = "0.0.0"
	}
	id := g.local.Gateway.ID
	svc, err := micro.AddService(nc, micro.Config{
		Name:        "edgegw",
		Version:     semver(version),
		Description: "edgegw gateway " + id, // what nats micro ls shows beside the instance's id
		Metadata:    map[string]string{"gateway": id, "version": version},
	})
	if err != nil {
		return nil, fmt.Errorf("commands: %w", err)
	}
	grp := svc.AddGroup("edgegw." + id)
	for name, h := range map[string]micro.HandlerFunc{
		"status":       func(r micro.Request) { r.RespondJSON(g.Status()) },
		"buffer":       func(r micro.Request) { r.RespondJSON(g.Status().Buffer) },
		"config":       g.configCommand,
		"sensors.read": g.sensorsRead,
		"mqtt.publish": g.mqttPublish,
		"gpio.set":     g.gpioSet,
		"modbus.write": g.modbusWrite,
	} {
		// micro's endpoint names take no dots; the subjects do.
		if err := grp.AddEndpoint(strings.ReplaceAll(name, ".", "_"), h, micro.WithEndpointSubject(name)); err != nil {
			svc.Stop()
			return nil, fmt.Errorf("commands: endpoint %s: %w", name, err)
		}
	}
	return svc, nil
}

// ConfigReply is what the config endpoint answers.
type ConfigReply struct {
	Revision string              `json:"revision"` // a hash of the effective config, as on the page
	Config   string              `json:"config"`   // the effective config, secrets masked
	Fleet    *status.FleetStatus `json:"fleet,omitempty"`
}

func (g *Gateway) configCommand(r micro.Request) {
	reply := ConfigReply{Revision: g.configRev(), Config: g.config().Summary()}
	if fs, ok := g.FleetStatus(); ok {
		reply.Fleet = &fs
	}
	r.RespondJSON(reply)
}

// decode reads a request's JSON body into v (an empty body leaves v as
// it is) and answers 400 when it cannot.
func decode(r micro.Request, v any) bool {
	if len(bytes.TrimSpace(r.Data())) == 0 {
		return true
	}
	dec := json.NewDecoder(bytes.NewReader(r.Data()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		r.Error("400", "bad request: "+err.Error(), nil)
		return false
	}
	return true
}

// A readNower is a polled sensor that can be read on demand
// (sensors.Poller).
type readNower interface {
	Name() string
	ReadNow(ctx context.Context) (sensors.Payload, error)
}

// SensorsReadRequest names one sensor; empty: every polled sensor.
type SensorsReadRequest struct {
	Sensor string `json:"sensor,omitempty"`
}

// SensorsReadReply has a reading per sensor read, and an error per
// sensor that could not be.
type SensorsReadReply struct {
	Readings []sensors.Payload `json:"readings"`
	Errors   map[string]string `json:"errors,omitempty"`
}

// sensorsRead reads the polled sensors now, through their running
// pollers (which own the buses); the readings are not stored.
func (g *Gateway) sensorsRead(r micro.Request) {
	var req SensorsReadRequest
	if !decode(r, &req) {
		return
	}
	g.mu.Lock()
	srcs := g.srcs
	g.mu.Unlock()
	reply := SensorsReadReply{Readings: []sensors.Payload{}}
	found := false
	for _, s := range srcs {
		ss, ok := s.Source.(sensorSource)
		if !ok {
			continue
		}
		p, ok := ss.sensorRunner.(readNower)
		if !ok || req.Sensor != "" && p.Name() != req.Sensor {
			continue
		}
		found = true
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		reading, err := p.ReadNow(ctx)
		cancel()
		if err != nil {
			if reply.Errors == nil {
				reply.Errors = map[string]string{}
			}
			reply.Errors[p.Name()] = err.Error()
			continue
		}
		reply.Readings = append(reply.Readings, reading)
	}
	if !found {
		if req.Sensor == "" {
			r.Error("404", "this gateway runs no polled sensor (sensors: in its config)", nil)
		} else {
			r.Error("404", fmt.Sprintf("no polled sensor %q is running", req.Sensor), nil)
		}
		return
	}
	r.RespondJSON(reply)
}

// MQTTPublishRequest is a downlink: a message for the site's devices.
// Payload is text; PayloadBase64 is for bytes (one of the two).
type MQTTPublishRequest struct {
	Topic         string `json:"topic"`
	Payload       string `json:"payload,omitempty"`
	PayloadBase64 []byte `json:"payload_base64,omitempty"`
	QoS           byte   `json:"qos,omitempty"`
	Retain        bool   `json:"retain,omitempty"`
}

// mqttPublish publishes to the embedded broker's devices, or else
// through the connection to mqtt.broker.
func (g *Gateway) mqttPublish(r micro.Request) {
	var req MQTTPublishRequest
	if !decode(r, &req) {
		return
	}
	if req.QoS > 2 {
		r.Error("400", fmt.Sprintf("qos %d is not 0, 1 or 2", req.QoS), nil)
		return
	}
	if err := mqttroute.ValidTopic(req.Topic); err != nil {
		r.Error("400", "topic: "+err.Error(), nil)
		return
	}
	payload := []byte(req.Payload)
	if req.PayloadBase64 != nil {
		payload = req.PayloadBase64
	}
	g.mu.Lock()
	srcs := g.srcs
	g.mu.Unlock()
	type publisher interface {
		Publish(topic string, payload []byte, retain bool, qos byte) error
	}
	var pub publisher
	for _, s := range srcs {
		// The embedded broker before an MQTT client: local subscribers
		// are its.
		if p, ok := s.Source.(publisher); ok && (pub == nil || s.kind == status.KindMQTTServer) {
			pub = p
		}
	}
	if pub == nil {
		r.Error("409", "no MQTT here: configure mqtt.server or mqtt.broker", nil)
		return
	}
	if err := pub.Publish(req.Topic, payload, req.Retain, req.QoS); err != nil {
		r.Error("502", "publish: "+err.Error(), nil)
		return
	}
	r.RespondJSON(map[string]any{"published": req.Topic, "bytes": len(payload)})
}

// GPIOSetRequest drives an output of the outputs section.
type GPIOSetRequest struct {
	Name  string `json:"name"`
	Level string `json:"level"` // high or low
}

func (g *Gateway) gpioSet(r micro.Request) {
	var req GPIOSetRequest
	if !decode(r, &req) {
		return
	}
	var level gpio.Level
	switch req.Level {
	case "high":
		level = gpio.High
	case "low":
		level = gpio.Low
	default:
		r.Error("400", fmt.Sprintf("level %q is not high or low", req.Level), nil)
		return
	}
	if err := g.setOutput(req.Name, level); err != nil {
		r.Error("404", err.Error(), nil)
		return
	}
	r.RespondJSON(map[string]string{"name": req.Name, "level": req.Level})
}

// semver makes a version micro accepts (semantic versioning): "v1.2.3"
// and "1.2.3" as they are, anything else (a development build) as 0.0.0.
func semver(v string) string {
	s := v
	if len(s) > 0 && s[0] == 'v' {
		s = s[1:]
	}
	var a, b, c int
	if n, _ := fmt.Sscanf(s, "%d.%d.%d", &a, &b, &c); n == 3 {
		return fmt.Sprintf("%d.%d.%d", a, b, c)
	}
	return "0.0.0"
}

package gateway_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/status"
	"github.com/edgegw/edgegw/gateway/wait"
	"github.com/edgegw/edgegw/sensors"
	"github.com/edgegw/edgegw/sensors/modbussim"
)

// An energy meter on Modbus TCP, through the real gateway, buffer and
// forwarder, into JetStream: one poll is one reading, the same JSON as
// every sensor, on the sensor's subject. A second unit behind the same
// connection does not answer: it is shown down with the reason, and the
// meter's readings go on.
func TestModbusToJetStream(t *testing.T) {
	srv := natstest.Start(t, nil)
	meter := modbussim.EnergyMeter(time.Now())
	meter.Holding[100], meter.Holding[101] = 0x5344, 0x4d36 // "SDM6"
	dead := modbussim.NewUnit()
	dead.Silent = 300 * time.Millisecond
	sim, err := modbussim.Start("127.0.0.1:0", map[uint8]*modbussim.Unit{1: meter, 2: dead})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	dir := t.TempDir()
	text := fmt.Sprintf(`gateway:
  id: gw1
  data_dir: %[1]s
sensors:
  - name: main-meter
    driver: modbus
    url: %[2]s
    unit_id: 1
    interval: 50ms
    timeout: 40ms
    priority: 2
    registers:
      - {name: voltage_l1_v, table: input, address: 0x0000, type: float32}
      - {name: power_l1_w, table: input, address: 0x000C, type: float32}
      - {name: energy_kwh, table: input, address: 0x0156, type: float32}
      - {name: model, table: holding, address: 100, type: string, length: 2}
  - name: boiler
    driver: modbus
    url: %[2]s
    unit_id: 2
    interval: 50ms
    timeout: 40ms
    registers:
      - {name: flow_temp_c, table: input, address: 0, type: int16, scale: 0.1}
upstream:
  servers: [%[3]s]
  stream:
    create: true
`, dir, sim.URL, srv.URL())
	path := filepath.Join(dir, "edgegw.yaml")
	os.WriteFile(path, []byte(text), 0o600)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTP.Listen = "off"
	g, err := gateway.New(cfg, gateway.Options{})
	if err != nil {
		t.Fatal(err)
	}
	stop := runGateway(t, g)
	defer stop()
	source := func(name string) status.SourceStatus {
		for _, s := range g.Status().Sources {
			if s.Name == name {
				return s
			}
		}
		return status.SourceStatus{}
	}
	wait.For(t, "ten readings in the stream and the boiler's second failure", func() bool {
		return streamMsgs(t, srv.URL()) >= 10 && source("boiler").Errors >= 2
	})
	b := source("boiler")
	if b.Up || !strings.Contains(b.LastError, "unit 2") || !strings.Contains(b.LastError, "flow_temp_c") {
		t.Errorf("boiler: up %v, last error %q; want down, naming the unit and the register", b.Up, b.LastError)
	}
	if m := source("main-meter"); !m.Up || m.Kind != status.KindSensor {
		t.Errorf("main-meter: %+v", m)
	}
	m := firstMsg(t, srv.URL())
	if m.Subject() != "telemetry.gw1.main-meter" || m.Headers().Get("Edgegw-Source") != "main-meter" {
		t.Fatalf("subject %q source %q", m.Subject(), m.Headers().Get("Edgegw-Source"))
	}
	var p sensors.Payload
	if err := json.Unmarshal(m.Data(), &p); err != nil {
		t.Fatal(err)
	}
	if p.Sensor != "main-meter" || p.Values["voltage_l1_v"] < 227 || p.Values["voltage_l1_v"] > 233 || p.Values["energy_kwh"] < 1234 || p.Text["model"] != "SDM6" {
		t.Errorf("reading %s", m.Data())
	}
	for _, m := range natstest.Messages(t, srv.URL()) {
		if m.Subject() != "telemetry.gw1.main-meter" {
			t.Errorf("a message from %s", m.Subject())
		}
	}
}

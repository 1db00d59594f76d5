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
	cfg := loadConfig(t, writeConfig(t, dir, text))
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

// modbus.write, the fleet command: a register marked writable is set and
// read back through the gateway's connection; nothing else is writable,
// and a value its type cannot hold is refused.
func TestFleetModbusWrite(t *testing.T) {
	srv := natstest.Start(t, nil)
	hub := newFleetHub(t, srv.URL())
	u := modbussim.NewUnit()
	u.Holding[10], u.Holding[11] = 200, 1
	sim, err := modbussim.Start("127.0.0.1:0", map[uint8]*modbussim.Unit{5: u})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	cfg := fleetFileWith(t, t.TempDir(), srv.URL(), "", "sensors:\n", fmt.Sprintf(`sensors:
  - name: ahu
    driver: modbus
    url: %s
    unit_id: 5
    interval: 1s
    registers:
      - {name: setpoint_c, table: holding, address: 10, type: int16, scale: 0.1, writable: true}
      - {name: mode, table: holding, address: 11, type: uint16}
`, sim.URL))
	g, err := gateway.New(cfg, gateway.Options{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(runGateway(t, g))
	wait.For(t, "the service", func() bool {
		_, err := hub.nc.Request("edgegw.gw1.status", nil, time.Second)
		return err == nil
	})
	call := func(body string) (string, string) {
		t.Helper()
		m, err := hub.nc.Request("edgegw.gw1.modbus.write", []byte(body), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return string(m.Data), m.Header.Get("Nats-Service-Error-Code") + " " + m.Header.Get("Nats-Service-Error")
	}
	if data, code := call(`{"name":"setpoint_c","value":19.5}`); code != " " {
		t.Fatalf("write: %s %s", code, data)
	} else {
		var rep gateway.ModbusWriteReply
		if err := json.Unmarshal([]byte(data), &rep); err != nil || rep.Sensor != "ahu" || rep.Value != 19.5 {
			t.Fatalf("reply %s: %v", data, err)
		}
	}
	sim.Do(func(units map[uint8]*modbussim.Unit) {
		if w := units[5].Holding[10]; w != 195 {
			t.Errorf("register 10 holds %d, want 195", w)
		}
	})
	for body, want := range map[string]string{
		`{"name":"mode","value":3}`:                        "404 no modbus sensor has a register \"mode\" marked writable",
		`{"sensor":"ahu","name":"setpoint_c","value":4e3}`: "400 ahu: setpoint_c: 4000 is outside the range of its type, int16",
		`{"value":3}`: "400 name missing",
	} {
		if _, code := call(body); !strings.HasPrefix(code, want) {
			t.Errorf("%s: %q, want %q", body, code, want)
		}
	}
	sim.Do(func(units map[uint8]*modbussim.Unit) {
		if w := units[5].Holding[11]; w != 1 {
			t.Errorf("mode holds %d after refused writes, want 1", w)
		}
	})
}

// Report by exception through the gateway, across a restart: a
// temperature whose noise stays inside its band is sent once; a move past
// the band is sent; after a restart on the same buffer the gateway knows
// what it sent last, so it neither sends the unchanged value again nor
// misses the next move.
func TestReportByExceptionAcrossRestart(t *testing.T) {
	srv := natstest.Start(t, nil)
	u := modbussim.NewUnit()
	u.Holding[0] = 2150 // 21.50 °C
	sim, err := modbussim.Start("127.0.0.1:0", map[uint8]*modbussim.Unit{1: u})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	set := func(v uint16) { sim.Do(func(units map[uint8]*modbussim.Unit) { units[1].Holding[0] = v }) }
	dir := t.TempDir()
	path := writeConfig(t, dir, fmt.Sprintf(`gateway:
  id: gw1
  data_dir: %s
sensors:
  - name: boiler
    driver: modbus
    url: %s
    unit_id: 1
    interval: 10ms
    report: {deadband: 0.5, heartbeat: 1h}
    registers:
      - {name: flow_temp_c, table: holding, address: 0, type: int16, scale: 0.01}
upstream:
  servers: [%s]
  stream:
    create: true
http:
  listen: "off"
`, dir, sim.URL, srv.URL()))
	start := func() (*gateway.Gateway, func()) {
		g, err := gateway.New(loadConfig(t, path), gateway.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return g, runGateway(t, g)
	}
	suppressed := func(g *gateway.Gateway) uint64 {
		for _, s := range g.Status().Sources {
			if s.Name == "boiler" {
				return s.Suppressed
			}
		}
		return 0
	}
	temps := func() []float64 {
		var out []float64
		for _, m := range natstest.Messages(t, srv.URL()) {
			var p sensors.Payload
			json.Unmarshal(m.Data(), &p)
			out = append(out, p.Values["flow_temp_c"])
		}
		return out
	}
	g, stop := start()
	wait.For(t, "the first reading and 20 suppressed", func() bool { return streamMsgs(t, srv.URL()) == 1 && suppressed(g) >= 20 })
	set(2195) // +0.45: noise, inside the band
	n := suppressed(g)
	wait.For(t, "20 more polls suppressed", func() bool { return suppressed(g) >= n+20 })
	set(2210) // +0.60: past it
	wait.For(t, "the move in the stream", func() bool { return streamMsgs(t, srv.URL()) == 2 })
	stop()

	set(2240) // +0.30 from what was sent last: inside the band
	g, stop = start()
	defer stop()
	wait.For(t, "20 polls suppressed after the restart", func() bool { return suppressed(g) >= 20 })
	if got := temps(); len(got) != 2 || got[0] != 21.5 || got[1] != 22.1 {
		t.Fatalf("the stream holds %v; want [21.5 22.1]: a restart must not send an unchanged value", got)
	}
	set(2070) // -1.40: past it
	wait.For(t, "the move after the restart", func() bool { return streamMsgs(t, srv.URL()) == 3 })
	if got := temps(); got[2] != 20.7 {
		t.Fatalf("the stream holds %v; want 20.7 last", got)
	}
}

// writeConfig writes a config file edgegw.yaml in dir.
func writeConfig(t testing.TB, dir, text string) string {
	t.Helper()
	path := filepath.Join(dir, "edgegw.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// loadConfig loads the config at path, as edgegw run does.
func loadConfig(t testing.TB, path string) *config.Config {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Modbus devices that share a URL are polled spread across the interval;
// others start at once.
func TestModbusPollsStaggered(t *testing.T) {
	m := func(name, url string) config.SensorConfig {
		sc := config.SensorConfig{Name: name, Driver: "modbus", Interval: 30 * time.Second}
		sc.URL = url
		return sc
	}
	all := []config.SensorConfig{
		m("a", "rtu:///dev/ttyUSB0"), {Name: "climate", Driver: "sim", Interval: 30 * time.Second},
		m("b", "rtu:///dev/ttyUSB0"), m("meter", "tcp://10.0.0.20:502"), m("c", "rtu:///dev/ttyUSB0"),
	}
	want := map[string]time.Duration{"a": 0, "climate": 0, "b": 10 * time.Second, "meter": 0, "c": 20 * time.Second}
	for _, sc := range all {
		if got := gateway.Stagger(all, sc); got != want[sc.Name] {
			t.Errorf("%s starts after %s, want %s", sc.Name, got, want[sc.Name])
		}
	}
}

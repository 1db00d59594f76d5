package gateway_test

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
	"periph.io/x/conn/v3/i2c"
	"periph.io/x/conn/v3/i2c/i2ctest"
	"periph.io/x/conn/v3/onewire"
	"periph.io/x/conn/v3/onewire/onewiretest"

	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/wait"
	"github.com/edgegw/edgegw/sensors"
)

// nopCloser lets the test keep the playback bus across the gateway's
// opens and closes.
type nopCloser struct{ *i2ctest.Playback }

func (nopCloser) Close() error { return nil }

// A fake BME280 on a periph playback bus, through the real gateway, buffer
// and forwarder, into an in-process JetStream stream.
func TestBME280ToJetStream(t *testing.T) {
	srv := natstest.Start(t, nil)
	dir := t.TempDir()
	text := fmt.Sprintf(`gateway:
  id: gw1
  data_dir: %s
sensors:
  - name: lobby-climate
    driver: bme280
    bus: "1"
    address: 0x76
    interval: 20ms
upstream:
  servers: [%s]
  stream:
    create: true
`, dir, srv.URL())
	path := filepath.Join(dir, "edgegw.yaml")
	os.WriteFile(path, []byte(text), 0o600)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ops := []i2ctest.IO{
		{Addr: 0x76, W: []byte{0xd0}, R: []byte{0x60}},
		{Addr: 0x76, W: []byte{0x88}, R: []byte{0x10, 0x6e, 0x6c, 0x66, 0x32, 0x0, 0x5d, 0x95, 0xb8, 0xd5, 0xd0, 0xb, 0x77, 0x1e, 0x9d, 0xff, 0xf9, 0xff, 0xac, 0x26, 0xa, 0xd8, 0xbd, 0x10, 0x0, 0x4b}},
		{Addr: 0x76, W: []byte{0xe1}, R: []byte{0x6e, 0x1, 0x0, 0x13, 0x5, 0x0, 0x1e}},
		{Addr: 0x76, W: []byte{0xf4, 0x6c, 0xf2, 0x3, 0xf5, 0xa0, 0xf4, 0x6c}},
	}
	for range 1000 {
		ops = append(ops,
			i2ctest.IO{Addr: 0x76, W: []byte{0xf4, 0x6d}},
			i2ctest.IO{Addr: 0x76, W: []byte{0xf3}, R: []byte{0}},
			i2ctest.IO{Addr: 0x76, W: []byte{0xf7}, R: []byte{0x4a, 0x52, 0xc0, 0x80, 0x96, 0xc0, 0x7a, 0x76}})
	}
	bus := &i2ctest.Playback{Ops: ops, DontPanic: true}
	cfg.HTTP.Listen = "127.0.0.1:0"
	g, err := gateway.New(cfg, gateway.Options{OpenI2C: func(name string) (i2c.BusCloser, error) {
		if name != "1" {
			return nil, fmt.Errorf("no bus %q", name)
		}
		return nopCloser{bus}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	stop := runGateway(t, g)
	wait.For(t, "five readings in the stream", func() bool { return streamMsgs(t, srv.URL()) >= 5 })
	stop()

	m := firstMsg(t, srv.URL())
	if m.Subject() != "telemetry.gw1.lobby-climate" || m.Headers().Get("Edgegw-Source") != "lobby-climate" {
		t.Fatalf("subject %q source %q", m.Subject(), m.Headers().Get("Edgegw-Source"))
	}
	var p sensors.Payload
	if err := json.Unmarshal(m.Data(), &p); err != nil {
		t.Fatal(err)
	}
	if p.Sensor != "lobby-climate" || math.Abs(p.Values["temperature_c"]-23.72) > 0.005 ||
		math.Abs(p.Values["humidity_pct"]-65.31) > 0.005 || math.Abs(p.Values["pressure_hpa"]-1009.43) > 0.005 {
		t.Fatalf("payload %s", m.Data())
	}
	if p.TS.Before(start) || p.TS.After(time.Now()) {
		t.Fatalf("reading time %s is not when it was taken", p.TS)
	}
}

// A machine without the bus: the gateway runs, and says which sensor is
// unavailable and why.
func TestMissingBusIsReportedNotFatal(t *testing.T) {
	srv := natstest.Start(t, nil)
	dir := t.TempDir()
	text := fmt.Sprintf("gateway:\n  id: gw1\n  data_dir: %s\nsensors:\n  - name: shed\n    driver: bme280\n    bus: \"7\"\n    address: 0x77\n    interval: 20ms\n  - name: sim\n    driver: sim\n    interval: 20ms\nupstream:\n  servers: [%s]\n  stream:\n    create: true\n", dir, srv.URL())
	cfg, err := config.Parse("x.yaml", []byte(text), os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTP.Listen = "127.0.0.1:0"
	g, _ := gateway.New(cfg, gateway.Options{OpenI2C: func(name string) (i2c.BusCloser, error) { return nil, fmt.Errorf("no such bus") }})
	stop := runGateway(t, g)
	wait.For(t, "sim readings while the other sensor is missing", func() bool {
		st := g.Stats()
		return st.Sensors["sim"].Reads >= 3 && st.Sensors["shed"].Failures >= 1
	})
	stop()
	st := g.Stats().Sensors["shed"]
	if st.Available || st.LastError == "" {
		t.Fatalf("shed: %+v", st)
	}
	t.Logf("shed: %s", st.LastError)
}

// A door contact on a gpiotest pin, through the gateway into the stream.
func TestGPIOEdgeToJetStream(t *testing.T) {
	srv := natstest.Start(t, nil)
	text := fmt.Sprintf("gateway:\n  id: gw1\n  data_dir: %s\nsensors:\n  - name: front-door\n    driver: gpio_edge\n    pin: GPIO17\n    edge: both\n    debounce: 5ms\nupstream:\n  servers: [%s]\n  stream:\n    create: true\n", t.TempDir(), srv.URL())
	cfg, err := config.Parse("x.yaml", []byte(text), os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	pin := &gpiotest.Pin{N: "GPIO17", EdgesChan: make(chan gpio.Level, 8)}
	configured := make(chan struct{})
	cfg.HTTP.Listen = "127.0.0.1:0"
	g, _ := gateway.New(cfg, gateway.Options{OpenPin: func(name string) (gpio.PinIn, error) {
		if name != "GPIO17" {
			return nil, fmt.Errorf("no pin %s", name)
		}
		return inNotifier{pin, configured}, nil
	}})
	stop := runGateway(t, g)
	defer stop()
	select {
	case <-configured: // In has flushed old edges: new ones count
	case <-time.After(10 * time.Second):
		t.Fatal("the pin was never configured")
	}
	pin.EdgesChan <- gpio.High
	wait.For(t, "the door event in the stream", func() bool { return streamMsgs(t, srv.URL()) >= 1 })
	stop()
	m := firstMsg(t, srv.URL())
	var p sensors.EdgePayload
	if err := json.Unmarshal(m.Data(), &p); err != nil || m.Subject() != "telemetry.gw1.front-door" || !p.Level || p.Edge != "rising" {
		t.Fatalf("%s %s (%v)", m.Subject(), m.Data(), err)
	}
}

// inNotifier tells the test when the source has configured the pin
// (gpiotest's own Pull() reads without its lock, so it cannot be polled).
type inNotifier struct {
	*gpiotest.Pin
	done chan struct{}
}

func (p inNotifier) In(pull gpio.Pull, edge gpio.Edge) error {
	err := p.Pin.In(pull, edge)
	close(p.done)
	return err
}

// Every I²C driver from its config through the gateway's opener to a
// reading, on periph playback buses with each device's register exchange.
func TestEveryDriverFromConfig(t *testing.T) {
	bme := []i2ctest.IO{
		{Addr: 0x76, W: []byte{0xd0}, R: []byte{0x60}},
		{Addr: 0x76, W: []byte{0x88}, R: []byte{0x10, 0x6e, 0x6c, 0x66, 0x32, 0x0, 0x5d, 0x95, 0xb8, 0xd5, 0xd0, 0xb, 0x77, 0x1e, 0x9d, 0xff, 0xf9, 0xff, 0xac, 0x26, 0xa, 0xd8, 0xbd, 0x10, 0x0, 0x4b}},
		{Addr: 0x76, W: []byte{0xe1}, R: []byte{0x6e, 0x1, 0x0, 0x13, 0x5, 0x0, 0x1e}},
		{Addr: 0x76, W: []byte{0xf4, 0x6c, 0xf2, 0x3, 0xf5, 0xa0, 0xf4, 0x6c}},
		{Addr: 0x76, W: []byte{0xf4, 0x6d}},
		{Addr: 0x76, W: []byte{0xf3}, R: []byte{0}},
		{Addr: 0x76, W: []byte{0xf7}, R: []byte{0x4a, 0x52, 0xc0, 0x80, 0x96, 0xc0, 0x7a, 0x76}},
	}
	tests := []struct {
		name, yaml string
		ops        []i2ctest.IO
		value      string
		want       float64
	}{
		{"bme280", "driver: bme280\n    address: 0x76", bme, "temperature_c", 23.72},
		{"mcp9808", "driver: mcp9808\n    address: 0x18", []i2ctest.IO{
			{Addr: 0x18, W: []byte{0x08, 0x03}}, {Addr: 0x18, W: []byte{0x01, 0x00, 0x00}},
			{Addr: 0x18, W: []byte{0x05}, R: []byte{0x01, 0x90}}}, "temperature_c", 25},
		{"ina219", "driver: ina219\n    address: 0x40", []i2ctest.IO{
			{Addr: 0x40, W: []byte{0x05, 0x10, 0x62}}, {Addr: 0x40, W: []byte{0x00, 0x1f, 0xff}},
			{Addr: 0x40, W: []byte{0x01}, R: []byte{0x00, 0x00}}, {Addr: 0x40, W: []byte{0x02}, R: []byte{0x2e, 0xe2}},
			{Addr: 0x40, W: []byte{0x04}, R: []byte{0x00, 0x00}}, {Addr: 0x40, W: []byte{0x03}, R: []byte{0x00, 0x00}}}, "bus_voltage_v", 6},
		{"bh1750", "driver: bh1750", []i2ctest.IO{
			{Addr: 0x23, W: []byte{0x07}}, {Addr: 0x23, W: []byte{0x10}}, {Addr: 0x23, W: []byte{0x07}},
			{Addr: 0x23, W: []byte{0x10}}, {Addr: 0x23, W: []byte{0x10}, R: []byte{0x00, 0x78}}}, "illuminance_lux", 100},
		{"scd4x", "driver: scd4x\n    interval: 5s", []i2ctest.IO{
			{Addr: 0x62, W: []byte{0x36, 0xf6}}, {Addr: 0x62, W: []byte{0x21, 0xb1}},
			{Addr: 0x62, W: []byte{0xe4, 0xb8}, R: []byte{0x80, 0x6, 0x4}},
			{Addr: 0x62, W: []byte{0xec, 0x5}, R: []byte{0x2, 0x2c, 0xa3, 0x67, 0xd, 0x36, 0x4d, 0x8, 0xf1}}}, "co2_ppm", 556},
		{"ads1015", "driver: ads1015\n    address: 0x48\n    channels:\n      - {input: \"0-3\", max_voltage: 5, scale: -1000, name: mv}", []i2ctest.IO{
			{Addr: 0x48, W: []byte{0x1, 0x91, 0x3}}, {Addr: 0x48, W: []byte{0x0}, R: []byte{0xff, 0x50}}}, "mv", 33},
		{"register", "driver: register\n    address: 0x48\n    register: {reg: 0, length: 2, signed: true, scale: 0.00390625, name: temperature_c}", []i2ctest.IO{
			{Addr: 0x48, W: []byte{0x00}, R: []byte{0x19, 0x00}}}, "temperature_c", 25},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			text := fmt.Sprintf("gateway:\n  id: gw1\nsensors:\n  - name: s\n    %s\nupstream:\n  servers: [nats://127.0.0.1:4222]\n", tt.yaml)
			cfg, err := config.Parse("x.yaml", []byte(text), os.LookupEnv)
			if err != nil {
				t.Fatal(err)
			}
			bus := &i2ctest.Playback{Ops: tt.ops, DontPanic: true}
			cfg.HTTP.Listen = "127.0.0.1:0"
			g, _ := gateway.New(cfg, gateway.Options{OpenI2C: func(string) (i2c.BusCloser, error) { return nopCloser{bus}, nil }})
			ps, err := g.Pollers()
			if err != nil || len(ps) != 1 {
				t.Fatalf("pollers: %v", err)
			}
			r, err := ps[0].ReadOnce()
			vals := r.Values
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(vals[tt.value]-tt.want) > 0.01 {
				t.Fatalf("%s = %v, want %v (all: %v)", tt.value, vals[tt.value], tt.want, vals)
			}
		})
	}
}

type nopOneWire struct{ *onewiretest.Playback }

func (nopOneWire) Close() error { return nil }

func TestDS18B20FromConfig(t *testing.T) {
	text := "gateway:\n  id: gw1\nsensors:\n  - name: pipe\n    driver: ds18b20\n    rom: 0x740000070e41ac28\n    bits: 10\nupstream:\n  servers: [nats://127.0.0.1:4222]\n"
	cfg, err := config.Parse("x.yaml", []byte(text), os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	rom := []byte{0x55, 0x28, 0xac, 0x41, 0xe, 0x7, 0x0, 0x0, 0x74}
	scratch := []byte{0xe0, 0x1, 0x0, 0x0, 0x3f, 0xff, 0x10, 0x10, 0x3f}
	bus := &onewiretest.Playback{Ops: []onewiretest.IO{
		{W: append(append([]byte{}, rom...), 0xbe), R: scratch},
		{W: append(append([]byte{}, rom...), 0x44), Pull: true},
		{W: append(append([]byte{}, rom...), 0xbe), R: scratch},
	}}
	cfg.HTTP.Listen = "127.0.0.1:0"
	g, _ := gateway.New(cfg, gateway.Options{OpenOneWire: func(string) (onewire.BusCloser, error) { return nopOneWire{bus}, nil }})
	ps, err := g.Pollers()
	if err != nil {
		t.Fatal(err)
	}
	r, err := ps[0].ReadOnce()
	vals := r.Values
	if err != nil || vals["temperature_c"] != 30 {
		t.Fatalf("%v, %v", vals, err)
	}
}

// Command edgegw-demo is a self-contained tour of edgegw: an in-process
// NATS JetStream server plays the cloud, an in-process MQTT broker plays the
// building, simulated devices publish readings with QoS 1, and the real
// gateway code sits between them. Halfway through the uplink is cut; the
// backlog grows in the gateway's buffer; the uplink comes back and drains.
// At the end the demo reads the whole stream and checks that every reading
// the broker accepted arrived exactly once. It exits 0 if so, 1 if not.
//
//	go run ./cmd/edgegw-demo            # about 45 seconds
//	go run ./cmd/edgegw-demo -forever   # until Ctrl-C, the uplink flapping
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/status"
	"github.com/edgegw/edgegw/sensors/modbussim"
)

func main() {
	devices := flag.Int("devices", 5, "simulated devices")
	rate := flag.Int("rate", 200, "readings per second per device")
	forever := flag.Bool("forever", false, "keep running (uplink down 15s of every 45s) until interrupted")
	verbose := flag.Bool("v", false, "show the gateway's logs")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := demo(ctx, *devices, *rate, *forever, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "edgegw-demo:", err)
		os.Exit(1)
	}
}

type reading struct {
	Device string  `json:"device"`
	N      int     `json:"n"`
	TempC  float64 `json:"temperature_c"`
	RH     float64 `json:"humidity_pct"`
}

func demo(ctx context.Context, devices, rate int, forever, verbose bool) error {
	dir, err := os.MkdirTemp("", "edgegw-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	w, err := startWorld(ctx, dir, verbose)
	if err != nil {
		return err
	}
	defer w.close()
	fmt.Printf("edgegw demo: %d devices x %d readings/s -> MQTT broker %s -> edgegw -> JetStream %s\n", devices, rate, w.brokerAddr, w.natsURL)
	fmt.Println("the uplink will be cut and restored; every reading must arrive exactly once")
	if a := w.g.HTTPAddr(); a != nil {
		fmt.Printf("watch it: the page at http://%s/ (also /status and /metrics)\n", a)
	}
	fmt.Println("each line: accepted = PUBACKed by the broker to the devices; ingested = committed to edgegw's")
	fmt.Println("buffer; buffered = in the buffer now, not yet acknowledged upstream; delivered = in the")
	fmt.Println("JetStream stream; duplicates dropped = copies the broker redelivered, stored once; meter = readings of the")
	fmt.Println("simulated Modbus energy meter (the field bus), stored like the rest")

	f, err := startDevices(ctx, w.brokerAddr, devices, rate)
	if err != nil {
		return err
	}
	err = w.phases(ctx, f, forever)
	f.stop()
	if err != nil {
		return err
	}
	if w.cloud == nil { // the demo ended with the uplink down
		if w.cloud, err = startNATS(w.natsOpts); err != nil {
			return err
		}
	}
	return w.check(f)
}

// world is the demo's cloud, building and gateway.
type world struct {
	natsOpts   *server.Options
	cloud      *server.Server // nil while the uplink is cut
	natsURL    string
	broker     *mqtt.Server
	brokerAddr string
	g          *gateway.Gateway
	gstop      func()
	meter      *modbussim.Server // the field bus: a simulated Modbus TCP meter
}

// startWorld starts JetStream (the cloud), an MQTT broker (the building)
// and the gateway between them, from the same config a user writes.
func startWorld(ctx context.Context, dir string, verbose bool) (*world, error) {
	w := &world{natsOpts: &server.Options{Host: "127.0.0.1", Port: freePort(), JetStream: true, StoreDir: dir + "/cloud", NoLog: true, NoSigs: true}}
	var err error
	if w.cloud, err = startNATS(w.natsOpts); err != nil {
		return nil, err
	}
	w.natsURL = fmt.Sprintf("nats://127.0.0.1:%d", w.natsOpts.Port)
	w.brokerAddr = fmt.Sprintf("127.0.0.1:%d", freePort())
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumInflight = 65535
	caps.MaximumClientWritesPending = 1 << 20
	w.broker = mqtt.New(&mqtt.Options{Capabilities: caps, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	w.broker.AddHook(new(auth.AllowHook), nil)
	if err := w.broker.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: w.brokerAddr})); err != nil {
		w.close()
		return nil, err
	}
	if err := w.broker.Serve(); err != nil {
		w.close()
		return nil, err
	}
	meter, meterCfg, err := startMeter()
	if err != nil {
		w.close()
		return nil, err
	}
	w.meter = meter
	cfgText := fmt.Sprintf(`gateway:
  id: demo-gw
  data_dir: %s/gateway
%s
mqtt:
  broker: tcp://%s
  subscriptions:
    - topic: building/+/climate
      qos: 1
      subject: telemetry.{gateway}.{level2}
upstream:
  servers: [%s]
  stream:
    name: TELEMETRY
    subjects: [telemetry.>]
    create: true
http:
  listen: 127.0.0.1:0   # any free port; a real gateway uses 127.0.0.1:9180
`, dir, meterCfg, w.brokerAddr, w.natsURL)
	cfg, err := config.Parse("demo.yaml", []byte(cfgText), os.LookupEnv)
	if err != nil {
		w.close()
		return nil, err
	}
	logw := io.Discard
	if verbose {
		logw = os.Stderr
	}
	if w.g, err = gateway.New(cfg, gateway.Options{Logger: slog.New(slog.NewTextHandler(logw, nil))}); err != nil {
		w.close()
		return nil, err
	}
	gctx, cancel := context.WithCancel(context.Background())
	gdone := make(chan error, 1)
	go func() { gdone <- w.g.Run(gctx) }()
	w.gstop = func() { cancel(); <-gdone }
	if err := waitUntil(ctx, 20*time.Second, func() bool { return mqttOf(w.g.Status()).Up }); err != nil {
		w.close()
		return nil, fmt.Errorf("gateway did not subscribe at the broker: %w", err)
	}
	return w, nil
}

func (w *world) close() {
	if w.gstop != nil {
		w.gstop()
	}
	if w.broker != nil {
		w.broker.Close()
	}
	if w.meter != nil {
		w.meter.Close()
	}
	if w.cloud != nil {
		w.cloud.Shutdown()
	}
}

// devices publish readings and remember which the broker accepted.
type devices struct {
	accepted atomic.Int64
	mu       sync.Mutex
	set      map[string]bool // device/n, PUBACKed by the broker
	wg       sync.WaitGroup
	stop     func() // stops them and waits
}

func startDevices(ctx context.Context, brokerAddr string, n, rate int) (*devices, error) {
	f := &devices{set: map[string]bool{}}
	devCtx, cancel := context.WithCancel(ctx)
	f.stop = func() { cancel(); f.wg.Wait() }
	for d := 1; d <= n; d++ {
		name := fmt.Sprintf("room-%d", d)
		c := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + brokerAddr).SetClientID("device-" + name).SetAutoReconnect(true))
		if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
			f.stop()
			return nil, fmt.Errorf("device %s: %v", name, t.Error())
		}
		f.wg.Go(func() { f.publish(devCtx, c, name, rate) })
	}
	return f, nil
}

// publish sends rate readings a second from one device until ctx ends.
func (f *devices) publish(ctx context.Context, c paho.Client, name string, rate int) {
	defer c.Disconnect(100)
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		r := reading{Device: name, N: n, TempC: 21 + 2*math.Sin(float64(n)/50), RH: 40 + 5*math.Cos(float64(n)/70)}
		b, _ := json.Marshal(r)
		t := c.Publish("building/"+name+"/climate", 1, false, b)
		go func() {
			if t.WaitTimeout(30*time.Second) && t.Error() == nil {
				f.mu.Lock()
				f.set[fmt.Sprintf("%s/%d", name, n)] = true
				f.mu.Unlock()
				f.accepted.Add(1)
			}
		}()
	}
}

func (w *world) status(phase string, f *devices) {
	st := w.g.Status()
	uplink := "up"
	if !st.Upstream.Connected {
		uplink = "DOWN"
	}
	m := mqttOf(st)
	fmt.Printf("%-22s accepted %7d  ingested %7d  buffered %6d  delivered %7d  duplicates dropped %d  meter %3d  uplink %s\n",
		phase, f.accepted.Load(), m.Ingested, st.Buffer.Events, st.Upstream.Acked, m.Duplicates, meterOf(st).Ingested, uplink)
}

// phases runs the show: streaming, the uplink cut, restored; a line a
// second. With forever it repeats until ctx ends.
func (w *world) phases(ctx context.Context, f *devices, forever bool) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	start := time.Now()
	for {
		select {
		case <-ctx.Done():
			if !forever {
				return ctx.Err()
			}
		case <-tick.C:
		}
		el := time.Since(start)
		cutAt, backAt, endAt := 8*time.Second, 20*time.Second, 30*time.Second
		if forever {
			el %= 45 * time.Second
			cutAt, backAt, endAt = 15*time.Second, 30*time.Second, time.Duration(math.MaxInt64)
		}
		switch {
		case el >= cutAt && el < backAt && w.cloud != nil:
			w.cloud.Shutdown()
			w.cloud = nil
			fmt.Println("--- uplink cut: readings keep coming and wait in the gateway's bbolt buffer")
		case el >= backAt && w.cloud == nil:
			var err error
			if w.cloud, err = startNATS(w.natsOpts); err != nil {
				return err
			}
			fmt.Println("--- uplink restored: the backlog drains, in order")
		}
		phase := "streaming"
		if w.cloud == nil {
			phase = "uplink down"
		}
		w.status(phase, f)
		if ctx.Err() != nil || (!forever && time.Since(start) >= endAt) {
			return nil
		}
	}
}

// check waits for the drain, reads the whole stream and compares it with
// what the broker accepted.
func (w *world) check(f *devices) error {
	// Let the publishes in flight settle, then drain.
	time.Sleep(time.Second)
	want := f.accepted.Load()
	if err := waitUntil(context.Background(), 30*time.Second, func() bool {
		st := w.g.Status()
		return mqttOf(st).Ingested >= uint64(want) && st.Upstream.Acked >= uint64(want)+meterOf(st).Ingested // each one stored is in the stream
	}); err != nil {
		w.status("drain timed out", f)
	}
	w.status("drained", f)

	got, dups, meter, err := readStream(w.natsURL)
	if err != nil {
		return err
	}
	fmt.Printf("\nfield bus: %d readings of the Modbus meter %s in the stream (1 a second, through the outage too)\n", meter, meterName)
	f.mu.Lock()
	defer f.mu.Unlock()
	lost := 0
	for k := range f.set {
		if got[k] == 0 {
			lost++
		}
	}
	// A reading the broker took while the devices were being stopped, whose
	// PUBACK never reached its device: in the stream, once, but not counted
	// as accepted. Not a duplicate.
	unacked := 0
	for k := range got {
		if !f.set[k] {
			unacked++
		}
	}
	fmt.Printf("result: %d readings accepted by the broker, %d in the stream, %d lost, %d duplicated\n", len(f.set), len(got), lost, dups)
	if unacked > 0 {
		fmt.Printf("        (%d of those in the stream were published as the devices stopped: the broker took them, its PUBACK never reached the device; each is there once)\n", unacked)
	}
	if lost > 0 || dups > 0 {
		return fmt.Errorf("%d lost, %d duplicated", lost, dups)
	}
	fmt.Println("OK: every reading arrived exactly once, through an uplink outage")
	return nil
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitUntil(ctx context.Context, limit time.Duration, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// mqttOf is the MQTT source's part of a gateway's status.
func mqttOf(st status.Status) status.SourceStatus {
	for _, s := range st.Sources {
		if s.Kind == status.KindMQTT {
			return s
		}
	}
	return status.SourceStatus{}
}

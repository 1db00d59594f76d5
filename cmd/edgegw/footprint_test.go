package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/event"
	"github.com/edgegw/edgegw/gateway/mqtttest"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/wait"
)

// BenchmarkFootprint measures what issue 6 asks: the size of the stripped
// linux/arm64 binary, and the peak memory of a real `edgegw run` process
// ingesting 5,000 MQTT messages/s (QoS 1) with a 1,000,000-event backlog:
// first with the uplink down (the backlog grows), then with it back (the
// forwarder drains the backlog while ingest goes on). Memory is read from
// /proc/<pid>/status every 100 ms once the gateway is ready: the highest
// VmRSS while it works, split into RssAnon (the process's own memory) and
// RssFile (pages of the mmap'ed buffer file: page cache). VmHWM, the
// lifetime peak /usr/bin/time reports, is reported too: it is reached while
// bbolt opens the file (see docs/benchmarks.md).
//
//	go test -run '^$' -bench Footprint -benchtime 1x ./cmd/edgegw/
//
// EDGEGW_FOOTPRINT_SECONDS sets each phase's length (default 30).
func BenchmarkFootprint(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("reads /proc")
	}
	const (
		backlog = 1_000_000
		rate    = 5_000
	)
	phase := 30 * time.Second
	if s, err := strconv.Atoi(os.Getenv("EDGEGW_FOOTPRINT_SECONDS")); err == nil && s > 0 {
		phase = time.Duration(s) * time.Second
	}
	dir := b.TempDir()

	// The binaries: arm64 for its size, this machine's to run.
	arm64 := filepath.Join(dir, "edgegw-arm64")
	build(b, arm64, "GOOS=linux", "GOARCH=arm64")
	fi, _ := os.Stat(arm64)
	bin := filepath.Join(dir, "edgegw")
	build(b, bin)

	// A buffer holding the backlog, written before the gateway starts.
	srv := natstest.Start(b, nil)
	broker := mqtttest.Start(b, mqtttest.Options{})
	dataDir := filepath.Join(dir, "data")
	prefill(b, filepath.Join(dataDir, "buffer.db"), backlog)

	httpAddr := freeAddr(b)
	cfg := filepath.Join(dir, "edgegw.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`gateway:
  id: gw1
  data_dir: %s
buffer:
  max_bytes: 1GiB
mqtt:
  broker: %s
  subscriptions:
    - topic: sensors/#
      qos: 1
upstream:
  servers: [%s]
  stream:
    create: true
http:
  listen: %s
log:
  level: warn
`, dataDir, broker.URL(), srv.URL(), httpAddr)), 0o600)

	srv.Shutdown() // phase 1: the uplink is down
	cmd := exec.Command(bin, "run", "--config", cfg)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitReady(b, httpAddr)

	var peak memPeak
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { peak.sample(ctx, cmd.Process.Pid) })
	var published, accepted atomic.Int64
	wg.Go(func() { publishAt(ctx, b, broker.URL(), rate, &published, &accepted) })

	b.ResetTimer()
	time.Sleep(phase)
	down := peak.snapshot()
	p1 := published.Load()

	srv.Restart() // phase 2: the uplink is back; drain while ingesting
	start := time.Now()
	var drained time.Duration
	for time.Since(start) < 3*phase {
		if n, err := natstest.StreamMsgs(srv.URL(), "TELEMETRY"); err == nil && n >= backlog+uint64(p1) {
			drained = time.Since(start)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if rest := phase - time.Since(start); rest > 0 {
		time.Sleep(rest) // at least a whole phase of ingest with the uplink up
	}
	b.StopTimer()
	stop()
	wg.Wait()
	up := peak.snapshot()
	total := accepted.Load() // PUBACKed by the broker, not merely sent
	// Everything the broker accepted in both phases must reach the stream:
	// a footprint of a gateway that dropped its ingest means nothing.
	wait.For(b, fmt.Sprintf("the backlog %d and the %d messages accepted in the stream", backlog, total), func() bool {
		n, err := natstest.StreamMsgs(srv.URL(), "TELEMETRY")
		return err == nil && n >= backlog+uint64(total)
	})

	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		b.Errorf("edgegw run: %v", err)
	}
	if drained == 0 {
		b.Errorf("the backlog did not drain within %s", 3*phase)
	}
	mib := func(kb int64) float64 { return float64(kb) / 1024 }
	b.ReportMetric(float64(fi.Size())/1e6, "arm64-MB")
	b.ReportMetric(mib(up.rss), "sampled-peak-RSS-MiB") // the highest of samples 100 ms apart
	b.ReportMetric(mib(up.hwm), "VmHWM-MiB")
	b.ReportMetric(mib(up.anon), "peak-anon-MiB")
	b.ReportMetric(mib(up.file), "peak-file-MiB")
	b.ReportMetric(float64(total)/(2*phase.Seconds()+time.Since(start).Seconds()-phase.Seconds()), "ingest-msgs/s")
	b.Logf("stripped linux/arm64 binary: %.1f MB", float64(fi.Size())/1e6)
	b.Logf("uplink down %s, %d published (%.0f/s), backlog %d+: peak RSS (sampled every 100 ms) %.1f MiB (anon %.1f, file-backed: binary and buffer pages %.1f)",
		phase, p1, float64(p1)/phase.Seconds(), backlog, mib(down.rss), mib(down.anon), mib(down.file))
	b.Logf("uplink up: backlog drained in %s while ingesting; whole run %d accepted, all in the stream: peak RSS (sampled every 100 ms) %.1f MiB (anon %.1f, file-backed: binary and buffer pages %.1f); VmHWM since start %.1f MiB",
		drained.Round(100*time.Millisecond), total, mib(up.rss), mib(up.anon), mib(up.file), mib(up.hwm))
}

func build(tb testing.TB, out string, env ...string) {
	tb.Helper()
	c := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, ".")
	c.Env = append(os.Environ(), append([]string{"CGO_ENABLED=0"}, env...)...)
	if o, err := c.CombinedOutput(); err != nil {
		tb.Fatalf("go build: %v\n%s", err, o)
	}
}

// prefill writes n events of about 120 bytes to a new buffer at path.
func prefill(tb testing.TB, path string, n int) {
	tb.Helper()
	os.MkdirAll(filepath.Dir(path), 0o700)
	q, err := buffer.Open(path, nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer q.Close()
	batch := make([][]byte, 0, 4096)
	for i := range n {
		e := event.Event{Subject: fmt.Sprintf("telemetry.gw1.sensors.room%d.temp", i%50), Source: fmt.Sprintf("sensors/room%d/temp", i%50),
			Time: time.Now(), Payload: fmt.Appendf(nil, `{"n":%d,"temp_c":21.%d,"rh":%d}`, i, i%10, 40+i%20)}
		d, _ := e.Marshal(nil)
		batch = append(batch, d)
		if len(batch) == cap(batch) || i == n-1 {
			if _, err := q.Append(context.Background(), batch...); err != nil {
				tb.Fatal(err)
			}
			batch = batch[:0]
		}
	}
}

func freeAddr(tb testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitReady(tb testing.TB, addr string) {
	tb.Helper()
	wait.For(tb, "edgegw ready (/readyz 200)", func() bool {
		r, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		r.Body.Close()
		return r.StatusCode == http.StatusOK
	})
}

// publishAt publishes QoS 1 messages at rate per second until ctx ends,
// counting those sent in n and those the broker acknowledged in acked.
func publishAt(ctx context.Context, tb testing.TB, broker string, rate int, n, acked *atomic.Int64) {
	c := paho.NewClient(paho.NewClientOptions().AddBroker(broker).SetClientID("footprint-pub").SetMaxResumePubInFlight(1000))
	if t := c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		tb.Errorf("publisher: %v", t.Error())
		return
	}
	defer c.Disconnect(100)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	var toks []paho.Token
	for ctx.Err() == nil {
		<-tick.C
		for int(n.Load()) < int(time.Since(start).Seconds()*float64(rate)) {
			i := n.Add(1)
			toks = append(toks, c.Publish(fmt.Sprintf("sensors/room%d/temp", i%50), 1, false,
				fmt.Appendf(nil, `{"n":%d,"temp_c":21.%d,"rh":%d}`, i, i%10, 40+i%20)))
		}
		if len(toks) > 2000 { // keep at most a few thousand in flight
			for _, t := range toks[:len(toks)-1000] {
				if t.WaitTimeout(10*time.Second) && t.Error() == nil {
					acked.Add(1)
				}
			}
			toks = append(toks[:0], toks[len(toks)-1000:]...)
		}
	}
	for _, t := range toks {
		if t.WaitTimeout(10*time.Second) && t.Error() == nil {
			acked.Add(1)
		}
	}
}

// memPeak keeps the highest memory figures of a process (kB).
type memPeak struct {
	mu                   sync.Mutex
	hwm, rss, anon, file int64
}

func (m *memPeak) snapshot() memPeak {
	m.mu.Lock()
	defer m.mu.Unlock()
	return memPeak{hwm: m.hwm, rss: m.rss, anon: m.anon, file: m.file}
}

func (m *memPeak) sample(ctx context.Context, pid int) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		kb, ok := procStatus(pid)
		if !ok {
			return
		}
		m.mu.Lock()
		m.hwm, m.rss = max(m.hwm, kb["VmHWM"]), max(m.rss, kb["VmRSS"])
		m.anon, m.file = max(m.anon, kb["RssAnon"]), max(m.file, kb["RssFile"])
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// procStatus reads the kB figures of /proc/<pid>/status (VmRSS, VmHWM,
// RssAnon, RssFile…); false once the process is gone.
func procStatus(pid int) (map[string]int64, bool) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, false
	}
	defer f.Close()
	kb := map[string]int64{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, _ := strings.Cut(s.Text(), ":")
		if n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64); err == nil {
			kb[k] = n
		}
	}
	return kb, true
}

package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/wait"
)

// BenchmarkFleetScale runs N whole gateways (default 200) in this process
// against one nats-server process, each with a simulated sensor (R
// readings/s, default 5), the fleet section (two KV watches, the micro
// service, a status entry and a heartbeat every 30s), for S seconds
// (default 150: the 2m duplicate window fills). It reports the server's
// memory (VmRSS) idle, with every gateway connected, and at the end, and
// its CPU; docs/fleet.md extrapolates from them.
//
//	go test -run '^$' -bench FleetScale -benchtime 1x -timeout 30m ./gateway/
//
// EDGEGW_FLEET_GATEWAYS, EDGEGW_FLEET_RATE, EDGEGW_FLEET_SECONDS and
// EDGEGW_FLEET_DUPLICATES (default 2m) change the run.
func BenchmarkFleetScale(b *testing.B) {
	n := envInt("EDGEGW_FLEET_GATEWAYS", 200)
	rate := envInt("EDGEGW_FLEET_RATE", 5)
	secs := envInt("EDGEGW_FLEET_SECONDS", 150)
	dup := 2 * time.Minute
	if v := os.Getenv("EDGEGW_FLEET_DUPLICATES"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatal(err)
		}
		dup = d
	}
	natsBin := buildNatsServer(b)
	replicas := envInt("EDGEGW_FLEET_REPLICAS", 1)
	for range b.N {
		servers := startNatsNodes(b, natsBin, replicas)
		var urls []string
		for _, n := range servers {
			urls = append(urls, n.url)
		}
		url := strings.Join(urls, ",") // nats.Connect's list; the config has it as a YAML list
		// Ready when JetStream answers (a cluster has elected its meta leader).
		var ops *nats.Conn
		var js jetstream.JetStream
		wait.For(b, "nats-server to serve JetStream", func() bool {
			nc, err := nats.Connect(url)
			if err != nil {
				return false
			}
			js, _ = jetstream.New(nc)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if _, err := js.AccountInfo(ctx); err != nil {
				nc.Close()
				return false
			}
			ops = nc
			return true
		})
		defer ops.Close()
		ctx := context.Background()
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "TELEMETRY", Subjects: []string{"telemetry.>"}, Duplicates: dup, Storage: jetstream.FileStorage, Replicas: replicas}); err != nil {
			b.Fatal(err)
		}
		cfgKV, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: config.DefaultConfigBucket, History: 5, Replicas: replicas})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: config.DefaultStatusBucket, Replicas: replicas}); err != nil {
			b.Fatal(err)
		}
		cfgKV.PutString(ctx, "defaults", "upstream:\n  window: 256\n")
		time.Sleep(time.Second)
		idle := nodesSample(servers)

		runCtx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		gws := make([]*gateway.Gateway, n)
		for i := range n {
			dir := b.TempDir()
			text := fmt.Sprintf("gateway:\n  id: gw-%03d\n  data_dir: %s\nsensors:\n  - {name: s, driver: sim, interval: %dms}\nupstream:\n  servers: [%s]\n  stream:\n    name: TELEMETRY\n    subjects: [telemetry.>]\nhttp:\n  listen: \"off\"\nfleet: {}\n", i, dir, 1000/rate, strings.Join(urls, ", "))
			path := filepath.Join(dir, "edgegw.yaml")
			os.WriteFile(path, []byte(text), 0o600)
			cfg, err := config.Load(path)
			if err != nil {
				b.Fatal(err)
			}
			g, err := gateway.New(cfg, gateway.Options{})
			if err != nil {
				b.Fatal(err)
			}
			gws[i] = g
			wg.Go(func() {
				if err := g.Run(runCtx); err != nil {
					b.Errorf("gw-%03d: %v", i, err)
				}
			})
		}
		wait.For(b, "every gateway to apply the defaults", func() bool {
			for _, g := range gws {
				if st, _ := g.FleetStatus(); st.AppliedRevision == 0 || !g.Status().Upstream.Connected {
					return false
				}
			}
			return true
		})
		connected := nodesSample(servers)
		start, startMsgs := time.Now(), streamMsgs(b, url)
		var peak int64
		for time.Since(start) < time.Duration(secs)*time.Second {
			time.Sleep(5 * time.Second)
			peak = max(peak, nodesSample(servers).rssKB())
		}
		end := nodesSample(servers)
		elapsed := time.Since(start).Seconds()
		msgs := streamMsgs(b, url) - startMsgs
		stop()
		wg.Wait()

		cpu := float64(end.busiest(connected)) / 100 / elapsed * 100 // % of one core, the busiest node
		b.ReportMetric(float64(idle.rssKB())/1024, "idle-MiB")
		b.ReportMetric(float64(connected.rssKB())/1024, "connected-MiB")
		b.ReportMetric(float64(peak)/1024, "peak-MiB")
		b.ReportMetric(float64(connected.rssKB()-idle.rssKB())/float64(n), "KiB/gateway")
		b.ReportMetric(float64(msgs)/elapsed, "msgs/s")
		b.ReportMetric(cpu, "server-cpu-%")
		ids := float64(msgs) / elapsed * min(dup.Seconds(), elapsed)
		b.ReportMetric(float64(peak-connected.rssKB())*1024/ids, "bytes/msg-id")
		b.Logf("R%d: %d gateways × %d/s for %.0fs, duplicate window %s: server RSS (the largest node) idle %.1f MiB, connected %.1f MiB, peak %.1f MiB; %.0f msgs/s stored; server CPU %.1f%% of a core; %.0f ids in the window",
			replicas, n, rate, elapsed, dup, float64(idle.rssKB())/1024, float64(connected.rssKB())/1024, float64(peak)/1024, float64(msgs)/elapsed, cpu, ids)
	}
}

// nodesSample samples every node.
func nodesSample(nodes []natsNode) samples {
	var out samples
	for _, n := range nodes {
		out = append(out, serverSample(n.cmd.Process.Pid))
	}
	return out
}

type samples []sample

// rssKB is the largest node's.
func (ss samples) rssKB() int64 {
	var m int64
	for _, s := range ss {
		m = max(m, s.rssKB)
	}
	return m
}

// busiest is the most CPU time a node used between since and ss.
func (ss samples) busiest(since samples) int64 {
	var m int64
	for i := range ss {
		m = max(m, ss[i].cpuTicks-since[i].cpuTicks)
	}
	return m
}

type sample struct {
	rssKB    int64
	cpuTicks int64 // utime+stime, in clock ticks (100 Hz)
}

// serverSample reads a process's VmRSS and CPU time from /proc.
func serverSample(pid int) sample {
	var s sample
	if f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
				s.rssKB, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			}
		}
		f.Close()
	}
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Fields after the command's closing parenthesis: utime is the 14th
		// field of the line, stime the 15th.
		if i := strings.LastIndexByte(string(data), ')'); i >= 0 {
			f := strings.Fields(string(data[i+1:]))
			if len(f) > 12 {
				u, _ := strconv.ParseInt(f[11], 10, 64)
				st, _ := strconv.ParseInt(f[12], 10, 64)
				s.cpuTicks = u + st
			}
		}
	}
	return s
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// BenchmarkMsgIDMemory measures what the server keeps per Nats-Msg-Id in
// the duplicate window (nats-server #8485): the same messages into two
// streams with a 10m window, one with an id each and one without (the
// same-run baseline); the difference in the server's Go heap, per id.
//
//	go test -run '^$' -bench MsgIDMemory -benchtime 1x ./gateway/
func BenchmarkMsgIDMemory(b *testing.B) {
	const msgs = 200_000
	for range b.N {
		heap := map[bool]float64{}
		for _, withID := range []bool{false, true} {
			srv := natstest.Start(b, nil)
			nc, err := nats.Connect(srv.URL())
			if err != nil {
				b.Fatal(err)
			}
			js, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1024))
			ctx := context.Background()
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "TELEMETRY", Subjects: []string{"telemetry.>"}, Duplicates: 10 * time.Minute}); err != nil {
				b.Fatal(err)
			}
			before := heapInUse()
			payload := make([]byte, 128)
			for i := range msgs {
				m := nats.NewMsg(fmt.Sprintf("telemetry.gw-%03d.s", i%200))
				m.Data = payload
				if withID {
					m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("gw-%03d-%d", i%200, uint64(1795652474562803)+uint64(i)))
				}
				if _, err := js.PublishMsgAsync(m); err != nil {
					b.Fatal(err)
				}
			}
			<-js.PublishAsyncComplete()
			nc.Close()
			heap[withID] = float64(heapInUse() - before)
			srv.Shutdown()
		}
		perID := (heap[true] - heap[false]) / msgs
		b.ReportMetric(perID, "bytes/msg-id")
		b.ReportMetric(heap[false]/1024/1024, "heap-without-ids-MiB")
		b.ReportMetric(heap[true]/1024/1024, "heap-with-ids-MiB")
		b.Logf("%d messages: server heap %.1f MiB without ids, %.1f MiB with: %.0f bytes per id in the window", msgs, heap[false]/1024/1024, heap[true]/1024/1024, perID)
	}
}

// heapInUse is the live heap after a collection.
func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

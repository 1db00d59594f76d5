package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/wait"
)

// writeBytes is what process pid has sent to storage (/proc/<pid>/io).
func writeBytes(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return -1
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "write_bytes: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return -1
}

// A wearDisk is a small ext4 file system on a loop device: what its
// block device receives (sectors written, /sys/block/loopN/stat) is what
// an SD card would, the file system's journal included. write_bytes of
// /proc/PID/io is not: since Linux put files in large folios (6.x), a
// 4 KiB write into a page of a larger folio counts the whole folio
// (measured here: 1 MiB counted for each 4 KiB pwrite+fdatasync into a
// file first written whole, 4 KiB reaching the device).
type wearDisk struct {
	dir, stat string
}

// mountWearDisk makes and mounts one, or says why it cannot (it needs
// root, losetup and mkfs.ext4).
func mountWearDisk(b *testing.B) (*wearDisk, error) {
	img := filepath.Join(b.TempDir(), "wear.img")
	mnt := b.TempDir()
	run := func(name string, args ...string) (string, error) {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out)), nil
	}
	f, err := os.Create(img)
	if err != nil {
		return nil, err
	}
	f.Close()
	if err := os.Truncate(img, 1<<30); err != nil {
		return nil, err
	}
	if _, err := run("mkfs.ext4", "-q", "-F", img); err != nil {
		return nil, err
	}
	dev, err := run("losetup", "-f", "--show", img)
	if err != nil {
		return nil, err
	}
	if _, err := run("mount", dev, mnt); err != nil {
		exec.Command("losetup", "-d", dev).Run()
		return nil, err
	}
	b.Cleanup(func() {
		exec.Command("umount", mnt).Run()
		exec.Command("losetup", "-d", dev).Run()
	})
	return &wearDisk{dir: mnt, stat: filepath.Join("/sys/block", filepath.Base(dev), "stat")}, nil
}

// written is what the device has received, in bytes.
func (d *wearDisk) written() int64 {
	b, err := os.ReadFile(d.stat)
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) < 7 {
		return -1
	}
	n, _ := strconv.ParseInt(f[6], 10, 64) // sectors written, 512 bytes
	return n * 512
}

// wearRun is one measurement: edgegw as the site's broker, every reading
// routed, the uplink up, 20 QoS 1 devices each waiting for its PUBACK,
// rate readings/s in all, for d. It returns the bytes per reading that
// reached disk's device (-1 without one) and that edgegw's write_bytes
// counted, after a warm-up, and the PUBACK latency's p50 and p99.
func wearRun(b *testing.B, disk *wearDisk, rate int, d time.Duration, bufferYAML string) (perReading, perReadingWB float64, p50, p99 time.Duration) {
	srv := natstest.Start(b, nil)
	dir := b.TempDir()
	if disk != nil {
		var err error
		if dir, err = os.MkdirTemp(disk.dir, "run"); err != nil {
			b.Fatal(err)
		}
	}
	port := natstest.FreePort(b)
	cfgPath := filepath.Join(dir, "edgegw.yaml")
	text := fmt.Sprintf(`gateway:
  id: wear
  data_dir: %s
buffer:
%s
mqtt:
  server:
    listen: 127.0.0.1:%d
    allow_anonymous: true
  subscriptions:
    - topic: sensors/#
upstream:
  servers: [%s]
  stream:
    create: true
http:
  listen: "off"
`, dir, bufferYAML, port, srv.URL())
	if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := edgegwChild("run", "--config", cfgPath)
	if out := os.Getenv("EDGEGW_WEAR_STRACE"); out != "" { // diagnosis: which file gets the writes
		cmd.Args = append([]string{"strace", "-f", "-y", "-e", "trace=pwrite64,write,fdatasync,fsync", "-s", "200", "-o", out}, cmd.Args...)
		cmd.Path = "/usr/bin/strace"
	}
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	url := fmt.Sprintf("tcp://127.0.0.1:%d", port)
	const devices = 20
	clients := make([]paho.Client, devices)
	for i := range clients {
		c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("dev%02d", i)).
			SetConnectRetry(true).SetConnectRetryInterval(50 * time.Millisecond))
		if tok := c.Connect(); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
			b.Fatalf("device %d: %v\n%s", i, tok.Error(), logs.String())
		}
		defer c.Disconnect(100)
		clients[i] = c
	}
	// Warm-up: one reading each, at once (as devices that boot), in the
	// stream; the file exists.
	toks := make([]paho.Token, len(clients))
	for i, c := range clients {
		toks[i] = c.Publish(fmt.Sprintf("sensors/dev%02d", i), 1, false, "warm")
	}
	for _, tok := range toks {
		if !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
			b.Fatal(tok.Error())
		}
	}
	wait.For(b, "the warm-up readings in the stream", func() bool {
		n, _ := natstest.StreamMsgs(srv.URL(), "TELEMETRY")
		return n >= devices
	})
	before := writeBytes(cmd.Process.Pid)
	var devBefore int64
	if disk != nil {
		syscall.Sync() // what the warm-up left in the page cache is not counted
		devBefore = disk.written()
	}

	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	interval := time.Duration(devices) * time.Second / time.Duration(rate) // each device's
	start := time.Now()
	for i, c := range clients {
		wg.Go(func() {
			// Devices spread over the interval, as sensors are.
			next := start.Add(interval * time.Duration(i) / devices)
			for k := 0; ; k++ {
				time.Sleep(time.Until(next))
				if time.Since(start) >= d {
					return
				}
				t0 := time.Now()
				tok := c.Publish(fmt.Sprintf("sensors/dev%02d", i), 1, false, fmt.Sprintf(`{"t":21.5,"n":%d}`, k))
				if !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
					b.Errorf("device %d: %v", i, tok.Error())
					return
				}
				mu.Lock()
				lat = append(lat, time.Since(t0))
				mu.Unlock()
				next = next.Add(interval)
			}
		})
	}
	wg.Wait()
	// Everything acknowledged upstream and deleted: the deletes' writes
	// count too.
	want := uint64(devices + len(lat))
	wait.For(b, fmt.Sprintf("the %d readings in the stream", want), func() bool {
		n, _ := natstest.StreamMsgs(srv.URL(), "TELEMETRY")
		return n >= want
	})
	written := writeBytes(cmd.Process.Pid) - before
	perReading = -1
	if disk != nil {
		syscall.Sync()
		perReading = float64(disk.written()-devBefore) / float64(len(lat))
	}
	slices.Sort(lat)
	return perReading, float64(written) / float64(len(lat)), lat[len(lat)/2], lat[len(lat)*99/100]
}

// BenchmarkSDWear measures what issue 24 asks, at 1, 10 and 100
// readings/s: bytes written to storage per reading and the PUBACK's p50
// and p99, with the wave 2 settings (16 KiB pages, no commit delay, acks
// committed after 100 ms) and with the defaults, in the same run.
//
//	go test -run '^$' -bench SDWear -benchtime 1x ./cmd/edgegw/
//	EDGEGW_WEAR_SECONDS=60 for longer runs (default 20 s each).
func BenchmarkSDWear(b *testing.B) {
	secs := 20
	if v, err := strconv.Atoi(os.Getenv("EDGEGW_WEAR_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	disk, err := mountWearDisk(b)
	if err != nil {
		b.Logf("bytes reaching a device not measured (%v): write_bytes only, which counts large folios whole", err)
	}
	settings := []struct{ name, yaml string }{
		{"wave2", "  page_size: 16KiB\n  commit_delay: 0s\n  ack_delay: 100ms"},
		{"no_delay", "  commit_delay: 0s"},
		{"default", "  max_age: 168h"},
	}
	for _, rate := range []int{1, 10, 100} {
		for _, s := range settings {
			b.Run(fmt.Sprintf("%d_per_s/%s", rate, s.name), func(b *testing.B) {
				for range b.N {
					per, perWB, p50, p99 := wearRun(b, disk, rate, time.Duration(secs)*time.Second, s.yaml)
					if per >= 0 {
						b.ReportMetric(per, "B/reading")
						b.ReportMetric(per*float64(rate)*86400/1e9, "GB/day")
					}
					b.ReportMetric(perWB, "write_bytes/reading")
					b.ReportMetric(float64(p50.Microseconds())/1000, "puback_p50_ms")
					b.ReportMetric(float64(p99.Microseconds())/1000, "puback_p99_ms")
				}
			})
		}
	}
}

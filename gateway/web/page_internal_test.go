package web

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/status"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// The page against a golden file: one fixed status, rendered
// byte for byte. go test -run PageGolden ./gateway/web/ -update rewrites it
// after an intended change (look at the diff).
func TestPageGolden(t *testing.T) {
	age, stale := 2.5, 900.0
	down := time.Date(2026, 11, 25, 9, 30, 0, 0, time.UTC)
	hist := []Sample{
		{At: down, Backlog: [10]uint64{0: 5, 5: 100}, Oldest: [10]float64{0: 3, 5: 60}, ingest: 10, drain: 0},
		{At: down.Add(10 * time.Second), Backlog: [10]uint64{0: 0, 5: 150}, Oldest: [10]float64{5: 70}, ingest: 12, drain: 5},
		{At: down.Add(20 * time.Second), Backlog: [10]uint64{5: 120}, Oldest: [10]float64{5: 40}, ingest: 8, drain: 11},
	}
	d := pageData{
		S: status.Status{Gateway: "lobby-pi-01", Version: "v1.4.0", Ready: false, NotReady: "no source can deliver",
			Buffer: status.BufferStatus{Events: 120, Bytes: 20480, ClockSynced: true, DroppedTTL: 3,
				Lanes: []status.LaneStatus{{Priority: 0}, {Priority: 5, TTL: "6h0m0s", Events: 120, OldestAgeSeconds: 40, Acked: 30}}},
			Upstream: status.UpstreamStatus{Stream: "TELEMETRY", Servers: "tls://hub-1.example.com:4222, tls://hub-2.example.com:4222", DownSince: down, Acked: 30, Drain: "live_first", Backfill: 12, WireUp: 870, WireDown: 270, WirePerReading: 38, WirePerDay: 328320, LastError: "uplink down since 2026-11-25T09:30:00Z"},
			Sources: []status.SourceStatus{
				{Name: "mqtt-server", Kind: status.KindMQTTServer, Up: true, Ingested: 150, LastValue: `{"t":21.5}`, LastFrom: "sensors/lobby/temp", Address: "mqtt://0.0.0.0:1883", LastReadingAge: &age},
				{Name: "tank", Kind: status.KindSensor, Up: false, Suppressed: 1710, LastError: `I²C bus "1": no such device`},
				{Name: "door", Kind: status.KindGPIO, Up: true, LastReadingAge: &stale},
			},
			Storage: status.StorageStatus{
				Files: []status.StorageFile{
					{File: "buffer", Path: "/var/lib/edgegw/buffer.db", Written: 3 << 20},
					{File: "broker_sessions", Path: "/var/lib/edgegw/broker-sessions.db", Written: 96 << 10, Estimated: true},
				},
				Written: 3<<20 + 96<<10, PerReading: float64(3<<20+96<<10) / 600, PerDay: float64(3<<20+96<<10) * 24,
				CardSize: 32e9, RatedWrites: 3000, LifeYears: 3376, Life: "about 3376 years",
			}},
		Now: "2026-11-25 09:31:00", Uptime: "1h0m0s", ConfigRev: "5215aa83", RTT: "—", LastAck: "1m0s ago",
		TimeToDrain: "not draining", Held: "20.0 KiB", Oldest: "40s", DiskFree: "1.2 GiB",
		Sparks: sparks(hist),
	}
	for _, s := range d.S.Sources {
		d.Sources = append(d.Sources, sourceRow(s))
	}
	var buf bytes.Buffer
	buf.WriteString(renderPage(d))
	golden := filepath.Join("testdata", "page.golden.html")
	if *update {
		os.WriteFile(golden, buf.Bytes(), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test -run PageGolden ./gateway/web/ -update writes it)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		os.WriteFile(filepath.Join(t.TempDir(), "page.html"), buf.Bytes(), 0o644)
		t.Fatalf("the page differs from %s; if the change is intended, run with -update and read the diff", golden)
	}
}

// A red item says what to do: an unsynchronized clock names the fix.
func TestPageClockHint(t *testing.T) {
	page := renderPage(pageData{S: status.Status{Gateway: "gw1"}, Now: "now", RTT: "—", LastAck: "never", TimeToDrain: "—", DiskFree: "—"})
	if !strings.Contains(page, `class="bad">not synchronized: enable NTP (timedatectl set-ntp true), or fit an RTC`) {
		t.Fatalf("no hint with the clock:\n%s", page)
	}
}

package gateway

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/config"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// The page against a golden file: one fixed status, rendered
// byte for byte. go test -run PageGolden ./gateway/ -update rewrites it
// after an intended change (look at the diff).
func TestPageGolden(t *testing.T) {
	age, stale := 2.5, 900.0
	down := time.Date(2026, 11, 25, 9, 30, 0, 0, time.UTC)
	hist := []sample{
		{at: down, backlog: [10]uint64{0: 5, 5: 100}, oldest: [10]float64{0: 3, 5: 60}, ingest: 10, drain: 0},
		{at: down.Add(10 * time.Second), backlog: [10]uint64{0: 0, 5: 150}, oldest: [10]float64{5: 70}, ingest: 12, drain: 5},
		{at: down.Add(20 * time.Second), backlog: [10]uint64{5: 120}, oldest: [10]float64{5: 40}, ingest: 8, drain: 11},
	}
	d := pageData{
		S: Status{Gateway: "lobby-pi-01", Version: "v1.4.0", Ready: false, NotReady: "no source can deliver",
			Buffer: BufferStatus{Events: 120, Bytes: 20480, ClockSynced: true, DroppedTTL: 3,
				Lanes: []LaneStatus{{Priority: 0}, {Priority: 5, TTL: "6h0m0s", Events: 120, OldestAgeSeconds: 40, Acked: 30}}},
			Upstream: UpstreamStatus{Stream: "TELEMETRY", DownSince: down, Acked: 30, Drain: "live_first", Backfill: 12, LastError: "uplink down since 2026-11-25T09:30:00Z"},
			Sources: []SourceStatus{
				{Name: "mqtt-server", Kind: KindMQTTServer, Up: true, Ingested: 150, LastValue: `{"t":21.5}`, LastReadingAge: &age},
				{Name: "tank", Kind: KindSensor, Up: false, LastError: `I²C bus "1": no such device`},
				{Name: "door", Kind: KindGPIO, Up: true, LastReadingAge: &stale},
			},
			Storage: storageStatus(&config.StorageConfig{Size: 32e9, RatedWrites: 3000}, []StorageFile{
				{File: "buffer", Path: "/var/lib/edgegw/buffer.db", Written: 3 << 20},
				{File: "broker_sessions", Path: "/var/lib/edgegw/broker-sessions.db", Written: 96 << 10, Estimated: true},
			}, 600, time.Hour, nil)},
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
		t.Fatalf("%v (go test -run PageGolden ./gateway/ -update writes it)", err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		os.WriteFile(filepath.Join(t.TempDir(), "page.html"), buf.Bytes(), 0o644)
		t.Fatalf("the page differs from %s; if the change is intended, run with -update and read the diff", golden)
	}
}

package gateway_test

import (
	"strings"
	"testing"

	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/natstest"
)

// The wear budget of a running gateway (issue 24): /status and the
// metrics say what each file has had written and the card's life; the
// page shows it.
func TestStorageBudgetOfARunningGateway(t *testing.T) {
	srv := natstest.Start(t, nil)
	cfg, url := serverConfigFor(t, srv.URL(), "    allow_anonymous: true", "")
	cfg.HTTP.Listen = "127.0.0.1:0"
	cfg.Gateway.Storage = &config.StorageConfig{Size: 32e9, RatedWrites: 3000}
	g := startGateway(t, cfg)
	p := newPublisher(t, url, "dev1", false)
	const n = 40
	p.publish(0, n, 1, 0)

	st := g.Status().Storage
	if len(st.Files) != 2 || st.Files[0].File != "buffer" || st.Files[1].File != "broker_sessions" || !st.Files[1].Estimated {
		t.Fatalf("files %+v", st.Files)
	}
	buf, sessions := st.Files[0].Written, st.Files[1].Written
	// Each commit writes a page and the meta page at least; the session
	// store wrote the device's persistent session (a commit).
	if buf < 2*4096 || sessions < 3*4096 || st.Written != buf+sessions {
		t.Fatalf("written: buffer %d, sessions %d, total %d", buf, sessions, st.Written)
	}
	if st.PerReading < float64(st.Written)/n/2 || st.PerReading > float64(st.Written) {
		t.Fatalf("per reading %.0f with %d bytes written for %d readings", st.PerReading, st.Written, n)
	}
	if st.PerDay <= 0 || st.LifeYears <= 0 || !strings.HasPrefix(st.Life, "about ") {
		t.Fatalf("per day %.0f, life %v (%q)", st.PerDay, st.LifeYears, st.Life)
	}

	m := scrapeMetrics(t, g)
	if v, ok := m.value("edgegw_storage_written_bytes_total", "file", "buffer"); !ok || v < float64(buf) {
		t.Fatalf("edgegw_storage_written_bytes_total{file=buffer} %v %v, /status said %d", v, ok, buf)
	}
	if v, ok := m.value("edgegw_storage_written_bytes_total", "file", "broker_sessions"); !ok || v < float64(sessions) {
		t.Fatalf("edgegw_storage_written_bytes_total{file=broker_sessions} %v %v", v, ok)
	}
	for _, name := range []string{"edgegw_storage_written_per_reading_bytes", "edgegw_storage_written_per_day_bytes", "edgegw_storage_card_life_years"} {
		if v, ok := m.value(name); !ok || v <= 0 {
			t.Errorf("%s: %v %v", name, v, ok)
		}
	}
	_, page := get(t, g, "/")
	for _, want := range []string{`id="per-reading"`, `id="card-life">about `, "broker sessions ≈"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
}

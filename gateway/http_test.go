package gateway_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/mqtttest"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/status"
	"github.com/edgegw/edgegw/gateway/wait"
)

// get fetches a path from the gateway's listener.
func get(t testing.TB, g *gateway.Gateway, path string) (int, string) {
	t.Helper()
	addr := g.HTTPAddr()
	if addr == nil {
		t.Fatal("the gateway serves no HTTP")
	}
	resp, err := http.Get("http://" + addr.String() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// scrape is one read of /metrics: value(name, labels...) finds a sample.
type scrape map[string]*dto.MetricFamily

func scrapeMetrics(t testing.TB, g *gateway.Gateway) scrape {
	t.Helper()
	code, body := get(t, g, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics is not the Prometheus text format: %v", err)
	}
	return mfs
}

// value is the sum of the samples of name whose labels include the given
// pairs; for a histogram, its count. ok is false when there is none.
func (s scrape) value(name string, labels ...string) (v float64, ok bool) {
	mf := s[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			v, ok = v+m.Counter.GetValue(), true
		case m.Gauge != nil:
			v, ok = v+m.Gauge.GetValue(), true
		case m.Histogram != nil:
			v, ok = v+float64(m.Histogram.GetSampleCount()), true
		}
	}
	return v, ok
}

func (s scrape) must(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	v, ok := s.value(name, labels...)
	if !ok {
		t.Fatalf("/metrics has no %s%v", name, labels)
	}
	return v
}

// The counters move as the events do: scraped before, during and after an
// end-to-end run of n messages, every counter is monotonic and the end
// state adds up exactly.
func TestMetricsFollowTheEvents(t *testing.T) {
	const n = 5_000
	broker := mqtttest.Start(t, mqtttest.Options{})
	srv := natstest.Start(t, nil)
	cfg, _ := configFor(t, broker.URL(), srv.URL(), "")
	g := startGateway(t, cfg)
	pub := newPublisher(t, broker.URL(), "pub", true)
	base := waitSubscribed(t, pub, srv.URL(), emptied(g)) // probe messages, already through

	before := scrapeMetrics(t, g)
	for _, name := range []string{"edgegw_build_info", "process_resident_memory_bytes", "go_goroutines",
		"edgegw_buffer_commit_duration_seconds", "edgegw_upstream_ack_duration_seconds", "edgegw_buffer_max_bytes"} {
		before.must(t, name)
	}
	if v := before.must(t, "edgegw_source_up", "source", "mqtt", "kind", "mqtt"); v != 1 {
		t.Fatalf("source_up = %v with the broker up", v)
	}
	if v := before.must(t, "edgegw_upstream_connected"); v != 1 {
		t.Fatalf("upstream_connected = %v", v)
	}
	if v := before.must(t, "edgegw_source_ingested_total", "source", "mqtt"); v != float64(base) {
		t.Fatalf("ingested before = %v, want the %d probes", v, base)
	}

	counters := []string{"edgegw_source_ingested_total", "edgegw_buffer_appended_total", "edgegw_buffer_acked_total",
		"edgegw_upstream_published_total", "edgegw_upstream_acked_total", "edgegw_buffer_commit_duration_seconds",
		"edgegw_upstream_ack_duration_seconds"}
	// Five steps of n/5: after each, the ingest counter must reach the
	// step, and no counter may ever go back.
	last := before
	for k := 1; k <= 5; k++ {
		pub.publish((k-1)*n/5, k*n/5, 200, 0)
		wait.For(t, "ingested_total to follow", func() bool {
			now := scrapeMetrics(t, g)
			for _, c := range counters {
				if a, b := last.must(t, c), now.must(t, c); b < a {
					t.Fatalf("%s went back from %v to %v", c, a, b)
				}
			}
			last = now
			return now.must(t, "edgegw_source_ingested_total", "source", "mqtt") >= float64(base)+float64(k*n/5)
		})
		if acked, ingested := last.must(t, "edgegw_upstream_acked_total"), last.must(t, "edgegw_source_ingested_total"); acked > ingested {
			t.Fatalf("acked %v > ingested %v", acked, ingested)
		}
	}
	if len(pub.acceptedSet()) != n {
		t.Fatalf("broker accepted %d of %d", len(pub.acceptedSet()), n)
	}
	wait.For(t, "the stream to hold everything", func() bool { return streamMsgs(t, srv.URL()) >= base+n })
	var after scrape
	wait.For(t, "the buffer to drain", func() bool {
		after = scrapeMetrics(t, g)
		return after.must(t, "edgegw_buffer_events") == 0 && after.must(t, "edgegw_upstream_lag_events") == 0
	})
	delta := func(name string, labels ...string) float64 {
		return after.must(t, name, labels...) - before.must(t, name, labels...)
	}
	for _, c := range []struct {
		name   string
		labels []string
	}{
		{"edgegw_source_ingested_total", []string{"source", "mqtt"}},
		{"edgegw_buffer_appended_total", nil},
		{"edgegw_buffer_acked_total", nil},
		{"edgegw_upstream_acked_total", nil},
		{"edgegw_upstream_ack_duration_seconds", nil}, // one observation per PubAck
	} {
		if d := delta(c.name, c.labels...); d != n {
			t.Errorf("%s%v moved by %v, want %d", c.name, c.labels, d, n)
		}
	}
	if d := delta("edgegw_upstream_published_total"); d < n {
		t.Errorf("published moved by %v, want at least %d", d, n)
	}
	if d := delta("edgegw_buffer_commit_duration_seconds"); d < 1 || d > n {
		t.Errorf("%v commits for %d events: the histogram is not fed by the writer", d, n)
	}
	if v := after.must(t, "edgegw_source_last_reading_age_seconds", "source", "mqtt"); v < 0 || v > 60 {
		t.Errorf("last reading age %v s", v)
	}
	for _, zero := range []string{"edgegw_upstream_resent_total", "edgegw_upstream_rejected_total", "edgegw_buffer_rejected_total"} {
		if v := after.must(t, zero); v != 0 {
			t.Errorf("%s = %v in a run without faults", zero, v)
		}
	}
	t.Logf("%v commits for %d events", delta("edgegw_buffer_commit_duration_seconds"), n)
}

// The uplink down is not unready (buffering is the job): /readyz says
// ready, the metrics and /status show the backlog. The broker down too:
// then no source can deliver, and /readyz says so and why.
func TestReadyzWithTheUplinkDown(t *testing.T) {
	const n = 300
	broker := mqtttest.Start(t, mqtttest.Options{})
	srv := natstest.Start(t, nil)
	srv.Shutdown()
	cfg, _ := configFor(t, broker.URL(), srv.URL(), "")
	g := startGateway(t, cfg)

	if code, body := get(t, g, "/healthz"); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, g, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz with the uplink down: %d %q, want 200", code, body)
	}
	pub := newPublisher(t, broker.URL(), "pub", true)
	pub.publish(0, n, 100, 0)
	var m scrape
	wait.For(t, "the backlog in the metrics", func() bool {
		m = scrapeMetrics(t, g)
		return m.must(t, "edgegw_buffer_events") >= n
	})
	if v := m.must(t, "edgegw_upstream_connected"); v != 0 {
		t.Errorf("upstream_connected = %v with the server down", v)
	}
	if lag := m.must(t, "edgegw_upstream_lag_events"); lag != m.must(t, "edgegw_buffer_events") {
		t.Errorf("lag %v events, buffer holds %v: nothing was acked", lag, m.must(t, "edgegw_buffer_events"))
	}
	if v := m.must(t, "edgegw_upstream_lag_seconds"); v <= 0 {
		t.Errorf("lag_seconds = %v with a backlog", v)
	}

	_, body := get(t, g, "/status")
	var st status.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/status is not JSON: %v\n%s", err, body)
	}
	if !st.Ready || st.Upstream.Connected || st.Buffer.Events < n || st.Gateway != "gw1" || len(st.Sources) != 1 ||
		st.Sources[0].Name != "mqtt" || !st.Sources[0].Up || st.Sources[0].Ingested < n {
		t.Fatalf("/status:\n%s", body)
	}

	broker.Shutdown()
	var code int
	wait.For(t, "/readyz to say not ready", func() bool {
		code, body = get(t, g, "/readyz")
		return code == http.StatusServiceUnavailable
	})
	if !strings.Contains(body, "mqtt: not connected to the broker") {
		t.Errorf("/readyz does not say why: %q", body)
	}
	if v := scrapeMetrics(t, g).must(t, "edgegw_source_up", "source", "mqtt"); v != 0 {
		t.Errorf("source_up = %v with the broker down", v)
	}
	if code, _ := get(t, g, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d: the process is alive", code)
	}
}

// A port already taken is an error that names the key and the fix;
// "off" serves nothing.
func TestHTTPListen(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv := natstest.Start(t, nil)
	broker := mqtttest.Start(t, mqtttest.Options{})
	cfg, _ := configFor(t, broker.URL(), srv.URL(), "")
	cfg.HTTP.Listen = ln.Addr().String()
	g, _ := gateway.New(cfg, gateway.Options{})
	err = g.Run(t.Context())
	if err == nil || !strings.Contains(err.Error(), "http.listen") || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("Run with a taken port: %v", err)
	}

	cfg.HTTP.Listen = "off"
	g, _ = gateway.New(cfg, gateway.Options{})
	stop := runGateway(t, g)
	defer stop()
	wait.For(t, "the gateway to subscribe", func() bool { return g.Stats().MQTT.Subscribed })
	if a := g.HTTPAddr(); a != nil {
		t.Fatalf("http.listen off, yet serving on %s", a)
	}
}

// Every edgegw_ metric is documented in docs/operations.md.
func TestMetricsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	broker := mqtttest.Start(t, mqtttest.Options{})
	srv := natstest.Start(t, nil)
	cfg, _ := configFor(t, broker.URL(), srv.URL(), "sensors:\n  - name: sim\n    driver: sim\n    interval: 20ms\n")
	g := startGateway(t, cfg)
	wait.For(t, "a reading", func() bool { return g.Stats().Sensors["sim"].Reads > 0 })
	n := 0
	for name := range scrapeMetrics(t, g) {
		if strings.HasPrefix(name, "edgegw_") {
			n++
			if !strings.Contains(string(doc), "`"+name) {
				t.Errorf("%s is not in docs/operations.md", name)
			}
		}
	}
	if n < 25 {
		t.Fatalf("only %d edgegw_ metrics", n)
	}

	// And they follow Prometheus' naming conventions (promtool's linter).
	_, body := get(t, g, "/metrics")
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "edgegw_") {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	}
}

// A full buffer under when_full: reject: sensor readings are skipped,
// counted per source and by the buffer, and the warning is logged once,
// not once a reading.
func TestFullBufferSkipsReadingsCountedAndLoggedOnce(t *testing.T) {
	srv := natstest.Start(t, nil)
	srv.Shutdown() // nothing drains
	dir := t.TempDir()
	cfg, err := config.Parse("x.yaml", []byte(fmt.Sprintf(`gateway:
  id: gw1
  data_dir: %s
buffer:
  max_bytes: 4KiB
  when_full: reject
sensors:
  - name: sim
    driver: sim
    interval: 5ms
upstream:
  servers: [%s]
http:
  listen: 127.0.0.1:0
`, dir, srv.URL())), os.LookupEnv)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncLog
	g, _ := gateway.New(cfg, gateway.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	stop := runGateway(t, g)
	defer stop()
	var m scrape
	wait.For(t, "readings to be refused", func() bool {
		if g.HTTPAddr() == nil {
			return false
		}
		m = scrapeMetrics(t, g)
		v, _ := m.value("edgegw_source_dropped_total", "source", "sim", "reason", "not_stored")
		return v >= 50
	})
	ingested := m.must(t, "edgegw_source_ingested_total", "source", "sim")
	if ev := m.must(t, "edgegw_buffer_events"); ingested == 0 || ev != ingested {
		t.Errorf("ingested %v, buffer holds %v", ingested, ev)
	}
	if a, b := m.must(t, "edgegw_source_store_errors_total", "source", "sim"), m.must(t, "edgegw_source_dropped_total", "source", "sim", "reason", "not_stored"); a < b {
		t.Errorf("store errors %v < not stored %v", a, b)
	}
	if v := m.must(t, "edgegw_buffer_rejected_total"); v < 50 {
		t.Errorf("buffer_rejected_total = %v", v)
	}
	if n := strings.Count(logs.String(), "readings not stored"); n != 1 {
		t.Errorf("%d 'not stored' warnings for %v skipped readings, want 1:\n%s", n, m.must(t, "edgegw_source_dropped_total", "source", "sim", "reason", "not_stored"), logs.String())
	}
	if code, body := get(t, g, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz with a full buffer: %d %s (the sensor still reads; the buffer pushes back)", code, body)
	}
}

type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Package web is what edgegw serves over HTTP: the on-site page, the
// Prometheus metrics, /status, /healthz and /readyz, and the page's
// history of the last hour. It sees a running gateway only through
// Runtime: it imports neither the runtime nor its config.
package web

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgegw/edgegw/gateway/status"
)

// Runtime is what the web needs of a running gateway.
type Runtime interface {
	Status() status.Status
	// ConfigRevision is a short hash of the effective config.
	ConfigRevision() string
	// DiskFree is what an unprivileged writer may still use where the
	// buffer lives.
	DiskFree() (int64, bool)
}

// Web serves one gateway's endpoints. The runtime feeds the latency
// histograms (ObserveCommit, ObserveAck) and the history (History().Add).
type Web struct {
	rt      Runtime
	log     *slog.Logger
	metrics *metrics
	hist    History
}

// New returns the web of rt.
func New(rt Runtime, log *slog.Logger) *Web {
	return &Web{rt: rt, log: log, metrics: newMetrics(rt)}
}

// ObserveCommit records a buffer commit's duration.
func (wb *Web) ObserveCommit(d time.Duration) { wb.metrics.commit.Observe(d.Seconds()) }

// ObserveAck records a publish's time to its PubAck.
func (wb *Web) ObserveAck(d time.Duration) { wb.metrics.ack.Observe(d.Seconds()) }

// History is the page's history of the last hour.
func (wb *Web) History() *History { return &wb.hist }

// Handler serves /metrics (Prometheus text format), /healthz (the process
// is alive), /readyz (the buffer is open and a source can deliver; an
// uplink that is down is not unready), /status (JSON) and the page at /.
func (wb *Web) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(wb.metrics.reg, promhttp.HandlerOpts{
		ErrorLog:            printLogger{wb.log.With("component", "http")},
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		st := wb.rt.Status()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !st.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready:", st.NotReady)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(wb.rt.Status())
	})
	mux.HandleFunc("GET /{$}", wb.page)
	return mux
}

// printLogger makes a *slog.Logger usable where a Println logger is
// wanted (promhttp's ErrorLog).
type printLogger struct{ log *slog.Logger }

func (p printLogger) Println(v ...any) { p.log.Error(strings.TrimSpace(fmt.Sprintln(v...))) }

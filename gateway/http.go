package gateway

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/mqttbroker"
)

// Handler serves /metrics (Prometheus text format), /healthz (the process
// is alive), /readyz (the buffer is open and a source can deliver; an
// uplink that is down is not unready) and /status (JSON).
func (g *Gateway) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.metrics.reg, promhttp.HandlerOpts{
		ErrorLog:            printLogger{g.log.With("component", "http")},
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		st := g.Status()
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
		enc.Encode(g.Status())
	})
	mux.HandleFunc("GET /{$}", g.page)
	return mux
}

// serveHTTP serves Handler on ln until the returned stop is called; stop
// waits for the serving goroutine.
func (g *Gateway) serveHTTP(ln net.Listener, users []mqttbroker.User) (stop func()) {
	h := g.Handler()
	if len(users) > 0 {
		h = basicAuth(users, h)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(ln) // returns when stop closes ln
	}()
	g.log.Info("serving /metrics, /healthz, /readyz, /status", "addr", ln.Addr().String())
	return func() {
		srv.Close()
		<-served
	}
}

// listen opens the http.listen address (nil when it is "off") and reads
// the users who may read it. Off loopback, users are required.
func listen(h config.HTTPConfig) (net.Listener, []mqttbroker.User, error) {
	addr := h.Listen
	if addr == "off" {
		return nil, nil, nil
	}
	var users []mqttbroker.User
	if f := h.UsersFile; f != "" {
		var err error
		if users, err = mqttbroker.LoadUsers(f); err != nil {
			return nil, nil, fmt.Errorf("http.users_file: %w", err)
		}
	} else if !config.Loopback(addr) {
		return nil, nil, fmt.Errorf("http.listen %s is reachable from the network: set http.users_file (users with bcrypt hashes), or listen on 127.0.0.1", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("http.listen %s: %w (is another edgegw or exporter on that port? set http.listen to a free address, or off)", addr, err)
	}
	return ln, users, nil
}

// HTTPAddr is the address /metrics is served on once Run has started, or
// nil (not started, or http.listen is off).
func (g *Gateway) HTTPAddr() net.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.httpAddr
}

// printLogger makes a *slog.Logger usable where a Println logger is
// wanted (promhttp's ErrorLog).
type printLogger struct{ log *slog.Logger }

func (p printLogger) Println(v ...any) { p.log.Error(strings.TrimSpace(fmt.Sprintln(v...))) }

package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/mqttbroker"
	"github.com/edgegw/edgegw/gateway/web"
)

// Handler serves /metrics (Prometheus text format), /healthz (the process
// is alive), /readyz (the buffer is open and a source can deliver; an
// uplink that is down is not unready), /status (JSON) and the page.
func (g *Gateway) Handler() http.Handler { return g.web.Handler() }

// ConfigRevision is a short hash of the effective config (web.Runtime).
func (g *Gateway) ConfigRevision() string { return g.configRev() }

// DiskFree is what an unprivileged writer may still use on the buffer's
// file system (web.Runtime).
func (g *Gateway) DiskFree() (int64, bool) { return diskFree(g.config().Buffer.Path) }

// diskFree is what an unprivileged writer may still use on the file
// system of file's directory.
func diskFree(file string) (int64, bool) {
	var fs syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(file), &fs); err != nil {
		return 0, false
	}
	return int64(fs.Bavail) * int64(fs.Bsize), true
}

// configRev is a short hash of the effective config.
func (g *Gateway) configRev() string {
	sum := sha256.Sum256([]byte(g.config().Summary()))
	return hex.EncodeToString(sum[:4])
}

// verifier accepts a user of users with its password (bcrypt).
func verifier(users []mqttbroker.User) func(name, password string) bool {
	return func(name, password string) bool {
		for _, u := range users {
			if u.Name == name && bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(password)) == nil {
				return true
			}
		}
		return false
	}
}

// serveHTTP serves Handler on ln until the returned stop is called; stop
// waits for the serving goroutine.
func (g *Gateway) serveHTTP(ln net.Listener, users []mqttbroker.User) (stop func()) {
	h := g.Handler()
	if len(users) > 0 {
		h = web.BasicAuth(verifier(users), h)
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

// Package mqtttest runs a real MQTT broker for tests, on a random loopback
// port: mochi-mqtt in-process, or, when EDGEGW_TEST_MOSQUITTO names a
// mosquitto binary, a mosquitto process (the interop run in .ci/run). With
// Persist the broker keeps sessions and queued messages across Restart.
//
// mochi's own persistence (its bolt hook) cannot restore in-flight messages
// ("resend inflight: protocol violation: missing packet id"), so Persist
// with mochi keeps nothing: tests that need a broker to keep its queue
// across a restart run against mosquitto.
package mqtttest

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Options for Start.
type Options struct {
	Persist bool // keep sessions and messages across Restart
	// Users, if set, are the only username/password pairs accepted.
	Users map[string]string
	// TLS, if set, makes the listener TLS (URL says ssl://). mochi only:
	// tests that set it skip under mosquitto.
	TLS *tls.Config
	// LosePubacks, if set, names a client whose first N PUBACKs (N =
	// LosePubacks.Count) never reach the broker: the broker drops the
	// connection on each instead, as when a link breaks between the
	// client's PUBACK and the broker, and sends the message again, DUP
	// set, when the client is back. mochi only.
	LosePubacks *LosePubacks
	// InProcess runs mochi in the test's process even when
	// EDGEGW_TEST_MOSQUITTO is set.
	InProcess bool
}

// LosePubacks: see Options.
type LosePubacks struct {
	Client string
	Count  int32
	lost   atomic.Int32
}

// Lost is how many PUBACKs were lost so far.
func (l *LosePubacks) Lost() int32 { return l.lost.Load() }

// losePubacks is the mochi hook behind Options.LosePubacks.
type losePubacks struct {
	mqtt.HookBase
	l *LosePubacks
}

func (h *losePubacks) ID() string { return "lose-pubacks" }

func (h *losePubacks) Provides(b byte) bool { return b == mqtt.OnPacketRead }

func (h *losePubacks) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type == packets.Puback && cl.ID == h.l.Client && h.l.lost.Load() < h.l.Count {
		h.l.lost.Add(1)
		return pk, packets.ErrRejectPacket // the connection drops with it
	}
	return pk, nil
}

// Broker is a restartable in-process MQTT broker.
type Broker struct {
	t    testing.TB
	o    Options
	addr string
	dir  string
	s    *mqtt.Server
	cmd  *exec.Cmd // mosquitto
}

// Mosquitto reports whether tests run against mosquitto.
func Mosquitto() bool { return os.Getenv("EDGEGW_TEST_MOSQUITTO") != "" }

// Start runs a broker and stops it when the test ends.
func Start(t testing.TB, o Options) *Broker {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	b := &Broker{t: t, o: o, addr: addr, dir: t.TempDir()}
	b.Restart()
	t.Cleanup(b.Shutdown)
	return b
}

// URL is tcp://127.0.0.1:port, or ssl:// with Options.TLS.
func (b *Broker) URL() string {
	if b.o.TLS != nil {
		return "ssl://" + b.addr
	}
	return "tcp://" + b.addr
}

// Shutdown stops the broker.
func (b *Broker) Shutdown() {
	if b.cmd != nil {
		b.cmd.Process.Signal(syscall.SIGTERM) // mosquitto saves its persistence file
		b.cmd.Wait()
		b.cmd = nil
	}
	if b.s != nil {
		b.s.Close()
		b.s = nil
	}
}

// Restart starts the broker (again) on the same port.
func (b *Broker) Restart() {
	b.t.Helper()
	b.Shutdown()
	if Mosquitto() && !b.o.InProcess {
		b.startMosquitto()
		return
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumInflight = 65535              // hold a long backlog for a persistent subscriber
	caps.MaximumClientWritesPending = 1 << 20 // never drop for a slow reader
	s := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		Logger:       logger(),
		InlineClient: false,
	})
	var err error
	if len(b.o.Users) > 0 {
		var rules auth.AuthRules
		for u, p := range b.o.Users {
			rules = append(rules, auth.AuthRule{Username: auth.RString(u), Password: auth.RString(p), Allow: true})
		}
		err = s.AddHook(new(auth.Hook), &auth.Options{Ledger: &auth.Ledger{Auth: rules}})
	} else {
		err = s.AddHook(new(auth.AllowHook), nil)
	}
	if err != nil {
		b.t.Fatal(err)
	}
	if b.o.LosePubacks != nil {
		if err := s.AddHook(&losePubacks{l: b.o.LosePubacks}, nil); err != nil {
			b.t.Fatal(err)
		}
	}
	if err := s.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: b.addr, TLSConfig: b.o.TLS})); err != nil {
		b.t.Fatal(fmt.Errorf("mqtttest: listen on %s: %w", b.addr, err))
	}
	if err := s.Serve(); err != nil {
		b.t.Fatal(err)
	}
	b.s = s
}

// logger is silent unless EDGEGW_TEST_LOG is set.
func logger() *slog.Logger {
	if os.Getenv("EDGEGW_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "mochi")
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startMosquitto runs mosquitto on b.addr with a config that keeps every
// message for a persistent subscriber (max_queued_messages 0: the default
// 1000 silently drops the rest).
func (b *Broker) startMosquitto() {
	b.t.Helper()
	host, port, _ := net.SplitHostPort(b.addr)
	conf := fmt.Sprintf(`listener %s %s
allow_anonymous %t
max_queued_messages 0
max_inflight_messages 0
persistence %t
persistence_location %s/
autosave_interval 1
log_dest stderr
log_type error
log_type warning
`, port, host, len(b.o.Users) == 0, b.o.Persist, b.dir)
	if len(b.o.Users) > 0 {
		pw := filepath.Join(b.dir, "passwd")
		var lines []byte
		for u, p := range b.o.Users {
			lines = append(lines, u+":"+p+"\n"...)
		}
		if err := os.WriteFile(pw, lines, 0o600); err != nil {
			b.t.Fatal(err)
		}
		if out, err := exec.Command("mosquitto_passwd", "-U", pw).CombinedOutput(); err != nil {
			b.t.Fatalf("mosquitto_passwd: %v: %s", err, out)
		}
		conf += "password_file " + pw + "\n"
	}
	if os.Geteuid() == 0 {
		// Started as root, mosquitto drops to user "mosquitto", which cannot
		// write its persistence file in the test's temp dir.
		conf += "user root\n"
	}
	cf := filepath.Join(b.dir, "mosquitto.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o600); err != nil {
		b.t.Fatal(err)
	}
	cmd := exec.Command(os.Getenv("EDGEGW_TEST_MOSQUITTO"), "-c", cf)
	if os.Getenv("EDGEGW_TEST_LOG") != "" {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		b.t.Fatalf("mqtttest: start mosquitto: %v", err)
	}
	b.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", b.addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("mqtttest: mosquitto not listening on %s: %v", b.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitGone waits until the broker has noticed that client id's connection
// is gone. mochi loses messages published while it is still taking over a
// session whose old connection it has not yet closed; a real gateway that
// restarts after a crash takes seconds, so the test waits for that too.
// mosquitto needs no wait.
func (b *Broker) WaitGone(id string) {
	b.t.Helper()
	if b.s == nil {
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		cl, ok := b.s.Clients.Get(id)
		if !ok || cl.Closed() {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("mqtttest: client %s still connected after 10s", id)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

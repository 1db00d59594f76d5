package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/packets"
	bbolt "go.etcd.io/bbolt"

	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/gateway/mqttbroker"
	"github.com/edgegw/edgegw/gateway/mqtttest"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/status"
	"github.com/edgegw/edgegw/gateway/wait"
)

// login sends a 3.1.1 CONNECT from the loopback address local to the
// broker at url and returns the CONNACK's code (0: accepted; 0xff: the
// connection closed without one) and how long it took.
func login(t testing.TB, local, url, clientID, user, pass string) (byte, time.Duration) {
	t.Helper()
	start := time.Now()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", strings.TrimPrefix(url, "tcp://"))
	if err != nil {
		return 0xff, time.Since(start)
	}
	defer c.Close()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), ClientIdentifier: clientID, Clean: true, Keepalive: 30,
			UsernameFlag: true, Username: []byte(user), PasswordFlag: true, Password: []byte(pass)}}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(buf.Bytes()); err != nil {
		return 0xff, time.Since(start)
	}
	r := bufio.NewReader(c)
	var ack [4]byte
	if _, err := r.Read(ack[:1]); err != nil || ack[0]>>4 != packets.Connack {
		return 0xff, time.Since(start)
	}
	for n := 1; n < 4; {
		k, err := r.Read(ack[n:])
		if err != nil {
			return 0xff, time.Since(start)
		}
		n += k
	}
	return ack[3], time.Since(start)
}

func usersFile(t testing.TB, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "users.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Wrong passwords used to be a CPU denial of service that also said
// which users exist: 40 threads of wrong-password logins for a known user
// took a real device's login from 62-100 ms to 5-25 s; unknown users were
// refused 450 times faster than known ones (bcrypt ran only for these).
// Now: an unknown user costs a bcrypt check too; an address with 5
// failures is refused without a check, for longer each time; bcrypt runs
// in two small pools, one for addresses without failures. During a flood
// from 40 addresses the device logs in within 1 s each time.
func TestWrongPasswordFlood(t *testing.T) {
	if raceEnabled {
		// bcrypt is ~10× slower under the race detector (0.8-1 s a check
		// on 2 cores): the flood cannot build up in a test's time. The
		// access hook's concurrency runs under it in
		// TestEmbeddedBrokerACLAndClientIDs.
		t.Skip("a bcrypt flood under the race detector")
	}
	srv := natstest.Start(t, nil)
	hash, err := mqttbroker.HashPassword("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	users := usersFile(t, fmt.Sprintf("users:\n  - name: dev1\n    password_hash: %q\n    publish: [sensors/#]\n", hash))
	cfg, url := serverConfigFor(t, srv.URL(), "    users_file: "+users, "")
	g := startGateway(t, cfg)

	// Timing says nothing of who exists: unknown and known users, each
	// from an address of its own with no failures yet.
	var unknown, known time.Duration
	for i := range 4 {
		code, d := login(t, fmt.Sprintf("127.0.5.%d", i+1), url, fmt.Sprintf("u%d", i), "nobody", "x")
		if code == 0 {
			t.Fatal("an unknown user logged in")
		}
		unknown += d
		code, d = login(t, fmt.Sprintf("127.0.6.%d", i+1), url, fmt.Sprintf("k%d", i), "dev1", "wrong")
		if code == 0 {
			t.Fatal("a wrong password logged in")
		}
		known += d
	}
	t.Logf("refusals: unknown user %v, known user with a wrong password %v (4 each)", unknown/4, known/4)
	if ratio := float64(unknown) / float64(known); ratio < 0.33 {
		t.Fatalf("an unknown user is refused %.1f× faster than a known one: timing tells who exists", 1/ratio)
	}

	stop := make(chan struct{})
	var attempts atomic.Int64
	var wg sync.WaitGroup
	for a := range 40 {
		wg.Go(func() {
			local := fmt.Sprintf("127.0.7.%d", a+1)
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				login(t, local, url, fmt.Sprintf("flood-%d-%d", a, k), "dev1", "wrong")
				attempts.Add(1)
			}
		})
	}
	// The flood is under way once the backoff has refused some.
	wait.For(t, "the flood's addresses refused without a check", func() bool {
		return statusOf(g).Refused[mqttbroker.RefusedBackoff] > 40
	})
	var worst time.Duration
	for i := range 5 {
		code, d := login(t, "127.0.8.1", url, fmt.Sprintf("device-%d", i), "dev1", "s3cret")
		if code != 0 {
			t.Fatalf("the device's login %d: CONNACK %#x", i, code)
		}
		worst = max(worst, d)
	}
	close(stop)
	wg.Wait()
	st := statusOf(g)
	t.Logf("the device logged in 5 times during %d wrong-password attempts from 40 addresses, the slowest in %v; refused: %v", attempts.Load(), worst, st.Refused)
	if worst > time.Second {
		t.Fatalf("the device's login took %v during the flood", worst)
	}
	if st.Refused[mqttbroker.RefusedBadLogin] == 0 {
		t.Fatal("no bad login counted")
	}
}

// statusOf is the embedded broker's source in g's status.
func statusOf(g *gateway.Gateway) status.SourceStatus {
	for _, s := range g.Status().Sources {
		if s.Kind == status.KindMQTTServer {
			return s
		}
	}
	return status.SourceStatus{}
}

// A user allowed "+" may not subscribe to "#", one allowed "status/+" not
// to "status/#"; a client id whose session belongs to another user is
// refused (it used to take the session over and disconnect its owner);
// a user's client_ids and max_connections hold; an idle MQTT 5 client
// with keepalive 0 is told the broker's max_keepalive.
func TestEmbeddedBrokerACLAndClientIDs(t *testing.T) {
	srv := natstest.Start(t, nil)
	hash, err := mqttbroker.HashPassword("pw")
	if err != nil {
		t.Fatal(err)
	}
	users := usersFile(t, fmt.Sprintf(`users:
  - name: plus
    password_hash: %[1]q
    subscribe: ["+", "status/+"]
    publish: [sensors/#]
  - name: owner
    password_hash: %[1]q
    publish: [sensors/#]
  - name: thief
    password_hash: %[1]q
    publish: [sensors/#]
  - name: pinned
    password_hash: %[1]q
    client_ids: ["%%u-*"]
    max_connections: 1
`, hash))
	cfg, url := serverConfigFor(t, srv.URL(), "    users_file: "+users, "")
	g := startGateway(t, cfg)

	connect := func(id, user string, clean bool) (paho.Client, error) {
		c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID(id).SetUsername(user).SetPassword("pw").
			SetCleanSession(clean).SetAutoReconnect(false).SetProtocolVersion(4))
		tok := c.Connect()
		if !tok.WaitTimeout(10 * time.Second) {
			return nil, fmt.Errorf("no CONNACK")
		}
		return c, tok.Error()
	}
	c, err := connect("plus-1", "plus", true)
	if err != nil {
		t.Fatal(err)
	}
	for filter, want := range map[string]byte{"#": 0x80, "status/#": 0x80, "a": 0, "status/door": 0, "status/+": 0} {
		tok := c.Subscribe(filter, 0, nil)
		if !tok.WaitTimeout(10 * time.Second) {
			t.Fatalf("subscribe %s: no SUBACK", filter)
		}
		if code := tok.(*paho.SubscribeToken).Result()[filter]; code != want {
			t.Errorf("user allowed [+, status/+] subscribing to %s: SUBACK %#x, want %#x", filter, code, want)
		}
	}
	c.Disconnect(100)

	owner, err := connect("meter-7", "owner", false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := connect("meter-7", "thief", false); err == nil {
		t.Fatal("another user took over meter-7's session")
	}
	if !owner.IsConnectionOpen() {
		t.Fatal("the owner was disconnected by another user's login with its client id")
	}
	owner.Disconnect(100)
	if _, err := connect("meter-7", "thief", false); err == nil {
		t.Fatal("another user took the session meter-7 kept for its owner")
	}

	p, err := connect("pinned-a", "pinned", true)
	if err != nil {
		t.Fatalf("pinned-a: %v", err)
	}
	if _, err := connect("pinned-b", "pinned", true); err == nil {
		t.Fatal("a second connection past the user's max_connections: 1")
	}
	p.Disconnect(100)
	if _, err := connect("other", "pinned", true); err == nil {
		t.Fatal("a client id outside the user's client_ids")
	}
	// Keepalive 0 (never time out) is capped: MQTT 5 says so in CONNACK.
	idle, ack := mqtttest.DialRawKeepalive(t, url, 5, "idle", true, 0, "owner", "pw")
	if !ack.Properties.ServerKeepAliveFlag || ack.Properties.ServerKeepAlive != 600 {
		t.Fatalf("CONNACK to keepalive 0: server keep alive %v %d, want 600 (max_keepalive 10m)", ack.Properties.ServerKeepAliveFlag, ack.Properties.ServerKeepAlive)
	}
	idle.Close()
	st := statusOf(g)
	if st.Refused[mqttbroker.RefusedClientID] != 3 || st.Refused[mqttbroker.RefusedPerUser] != 1 || st.Refused[mqttbroker.RefusedACL] < 2 {
		t.Fatalf("refusals counted: %v", st.Refused)
	}
}

// Refusals are counted, and logged at most once a minute per kind with
// the count: 200 publishes outside a user's ACL (MQTT 5, refused with
// 0x87 one by one) used to log 200 WARN lines, and a 3.1.1 refusal a
// packet dump at WARN; no line has an empty message.
func TestRefusalsAreLoggedOncePerMinute(t *testing.T) {
	srv := natstest.Start(t, nil)
	hash, err := mqttbroker.HashPassword("pw")
	if err != nil {
		t.Fatal(err)
	}
	users := usersFile(t, fmt.Sprintf("users:\n  - name: dev\n    password_hash: %q\n    publish: [sensors/#]\n", hash))
	cfg, url := serverConfigFor(t, srv.URL(), "    users_file: "+users, "")
	var logs syncLog
	g := startGatewayLogged(t, cfg, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})))

	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "tcp://"))
	if err != nil {
		t.Fatal(err)
	}
	c := paho5.NewClient(paho5.ClientConfig{ClientID: "dev-v5", Conn: conn})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if ca, err := c.Connect(ctx, &paho5.Connect{ClientID: "dev-v5", KeepAlive: 30, CleanStart: true, UsernameFlag: true, Username: "dev", PasswordFlag: true, Password: []byte("pw")}); err != nil || ca.ReasonCode != 0 {
		t.Fatalf("connect: %v %+v", err, ca)
	}
	defer c.Disconnect(&paho5.Disconnect{})
	for i := range 200 {
		r, _ := c.Publish(ctx, &paho5.Publish{Topic: "other/x", QoS: 1, Payload: []byte{byte(i)}})
		if r == nil || r.ReasonCode != 0x87 {
			t.Fatalf("publish %d outside the ACL: %+v", i, r)
		}
	}
	// A 3.1.1 client outside its ACL is disconnected.
	old, err := (func() (paho.Client, error) {
		o := paho.NewClientOptions().AddBroker(url).SetClientID("dev-v3").SetUsername("dev").SetPassword("pw").SetAutoReconnect(false).SetProtocolVersion(4)
		cl := paho.NewClient(o)
		tok := cl.Connect()
		tok.WaitTimeout(10 * time.Second)
		return cl, tok.Error()
	})()
	if err != nil {
		t.Fatal(err)
	}
	old.Publish("other/y", 1, false, "x").WaitTimeout(3 * time.Second)
	wait.For(t, "the 3.1.1 client disconnected", func() bool { return !old.IsConnectionOpen() })
	wait.For(t, "201 ACL refusals counted", func() bool { return statusOf(g).Refused[mqttbroker.RefusedACL] >= 201 })

	text := logs.String()
	if n := strings.Count(text, `msg="MQTT client denied by its ACL"`); n != 1 {
		t.Fatalf("%d log lines for 201 ACL refusals, want 1:\n%s", n, text)
	}
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, `msg=""`) || strings.Contains(line, "level=WARN") && strings.Contains(line, " pk=") {
			t.Fatalf("a line with an empty message or a packet dump: %s", line)
		}
	}
}

// A sessions file that is damaged, or over mqtt.server.sessions_max_bytes,
// is moved aside at start (as a damaged buffer is), logged, and the broker
// starts with no stored sessions: before, an oversized file OOM-killed
// every start until someone deleted it by hand.
func TestSessionsFileMovedAsideAtStart(t *testing.T) {
	for _, tc := range []struct {
		name, kind string
		write      func(path string)
	}{
		{"damaged", "corrupt", func(path string) {
			junk := bytes.Repeat([]byte("not a bbolt file "), 4096)
			if err := os.WriteFile(path, junk, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"over its bound", "toolarge", func(path string) {
			db, err := bbolt.Open(path, 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = db.Update(func(tx *bbolt.Tx) error {
				b, err := tx.CreateBucketIfNotExists([]byte("x"))
				if err != nil {
					return err
				}
				return b.Put([]byte("k"), make([]byte, 2<<20))
			})
			db.Close()
			if err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := natstest.Start(t, nil)
			cfg, url := serverConfigFor(t, srv.URL(), "    allow_anonymous: true\n    sessions_max_bytes: 1MiB", "")
			path := filepath.Join(cfg.Gateway.DataDir, "broker-sessions.db")
			tc.write(path)
			var logs syncLog
			g := startGatewayLogged(t, cfg, slog.New(slog.NewTextHandler(&logs, nil)))
			pub := newPublisher(t, url, "pub", true)
			pub.publish(0, 1, 1, 0)
			wait.For(t, "the reading in the stream", func() bool { return g.Stats().Forward.Acked == 1 })
			moved, _ := filepath.Glob(path + "." + tc.kind + "-*")
			if len(moved) != 1 || !strings.Contains(logs.String(), "sessions file was moved aside") {
				t.Fatalf("moved aside: %v\n%s", moved, logs.String())
			}
		})
	}
}

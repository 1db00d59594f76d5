package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/forward"
	"github.com/edgegw/edgegw/gateway/mqttbroker"
	"github.com/edgegw/edgegw/gateway/mqttroute"
	"github.com/edgegw/edgegw/gateway/secret"
	"github.com/edgegw/edgegw/gateway/subject"
)

// checker collects problems at their key paths.
type checker struct {
	ce    *Error
	lines map[string]int
}

func (k checker) bad(path, format string, args ...any) {
	k.ce.Problems = append(k.ce.Problems, Problem{Path: path, Line: k.lines[path], Msg: fmt.Sprintf(format, args...)})
}

// check appends every problem to ce, section by section; lines gives key
// paths their lines.
func (c *Config) check(ce *Error, lines map[string]int) {
	k := checker{ce, lines}
	c.checkGateway(k)
	c.checkBuffer(k)
	filters := c.checkMQTT(k)
	filters = append(filters, c.checkSensors(k)...)
	if c.MQTT == nil && len(c.Sensors) == 0 {
		k.bad("mqtt", "no source: configure mqtt, sensors, or both")
	}
	c.checkUpstream(k, filters)
	c.checkHTTPAndLog(k)
	c.checkFleet(k)
}

func (c *Config) checkGateway(k checker) {
	if c.Gateway.ID == "" {
		k.bad("gateway.id", "missing; give each gateway a unique id such as lobby-pi-01")
	} else if !ValidID(c.Gateway.ID) {
		k.bad("gateway.id", "%q may hold only letters, digits, '-' and '_' (it becomes a NATS subject token and part of message ids)", c.Gateway.ID)
	}
	if st := c.Gateway.Storage; st != nil {
		if st.Size < 0 || (st.Size == 0 && st.RatedWrites != 0) {
			k.bad("gateway.storage.size", "%s: give the card's size, e.g. 32GB (with rated_writes), or leave gateway.storage out", st.Size)
		}
		if st.RatedWrites < 0 || (st.RatedWrites == 0 && st.Size != 0) {
			k.bad("gateway.storage.rated_writes", "%d: give how many full writes the card is rated for (its program/erase cycles: a few hundred for consumer cards, 3000 or more for industrial ones), or leave gateway.storage out", st.RatedWrites)
		}
	}
}

func (c *Config) checkBuffer(k checker) {
	if c.Buffer.MaxBytes < 0 {
		k.bad("buffer.max_bytes", "must not be negative")
	} else if limit := buffer.MaxBytesLimit(); limit > 0 && int64(c.Buffer.MaxBytes) > limit {
		k.bad("buffer.max_bytes", "%d is more than a 32-bit system can map (bbolt maps the whole file); use %dMiB or less, or a 64-bit OS", c.Buffer.MaxBytes, limit>>20)
	}
	if c.Buffer.MaxAge < 0 {
		k.bad("buffer.max_age", "must not be negative")
	}
	if _, err := buffer.ParsePolicy(c.Buffer.WhenFull); err != nil {
		k.bad("buffer.when_full", "%q is not drop_oldest or reject", c.Buffer.WhenFull)
	}
	if p := c.Buffer.PageSize; p != 0 && (p < 4<<10 || p > 64<<10 || p&(p-1) != 0) {
		k.bad("buffer.page_size", "%d is not a power of two from 4KiB to 64KiB (4KiB writes least per commit)", p)
	}
	if d := c.Buffer.CommitDelay; d != nil && (*d < 0 || *d > 10*time.Second) {
		k.bad("buffer.commit_delay", "%s is outside 0..10s (every PUBACK waits up to this long)", *d)
	}
	if d := c.Buffer.AckDelay; d != nil && (*d < 0 || *d > time.Minute) {
		k.bad("buffer.ack_delay", "%s is outside 0..1m", *d)
	}
}

// checkMQTT returns the subject filters of the subscriptions.
func (c *Config) checkMQTT(k checker) (filters []string) {
	if m := c.MQTT; m != nil {
		if m.Server != nil {
			checkServer(k, m.Server)
		}
		if m.Broker != "" || !m.Server.On() {
			checkBrokerURL(k, m)
		}
		if m.MaxPayload < 0 {
			k.bad("mqtt.max_payload", "must not be negative")
		} else if m.MaxPayload > MaxMQTTPayload {
			k.bad("mqtt.max_payload", "%s is over the limit of %s (a batch of messages is held in memory until committed)", m.MaxPayload, ByteSize(MaxMQTTPayload))
		} else if mb := c.Buffer.MaxBytes; mb > 0 && m.MaxPayload+eventHeadroom > mb {
			k.bad("mqtt.max_payload", "%s plus %s for topic and headers is more than buffer.max_bytes (%s): the buffer could not hold one maximal message; lower mqtt.max_payload or raise buffer.max_bytes", m.MaxPayload, ByteSize(eventHeadroom), mb)
		}
		checkTLS(k, "mqtt.tls", m.TLS)
		if len(m.Subscriptions) == 0 {
			k.bad("mqtt.subscriptions", "missing; subscribe to at least one topic filter such as sensors/#")
		}
		for i, s := range m.Subscriptions {
			p := fmt.Sprintf("mqtt.subscriptions[%d]", i)
			if s.Topic == "" {
				k.bad(p+".topic", "missing")
			} else if err := mqttroute.ValidFilter(s.Topic); err != nil {
				k.bad(p+".topic", "%v", err)
			}
			if *s.QoS < 0 || *s.QoS > 2 {
				k.bad(p+".qos", "%d is not 0, 1 or 2", *s.QoS)
			}
			s.Route.check(k, p)
			if t, err := subject.ParseTemplate(s.Subject, c.Gateway.ID); err != nil {
				if ValidID(c.Gateway.ID) || !strings.Contains(s.Subject, "{gateway}") {
					k.bad(p+".subject", "%v", err)
				}
			} else if !ownSubject(s.Subject, c.Gateway.ID) {
				k.bad(p+".subject", errShared, s.Subject)
			} else {
				filters = append(filters, t.Filter())
			}
		}
	}
	return filters
}

// checkUpstream checks the uplink; filters are where this gateway
// publishes, which the stream must capture.
func (c *Config) checkUpstream(k checker, filters []string) {
	up := c.Upstream
	if len(up.Servers) == 0 {
		k.bad("upstream.servers", "missing; list the NATS servers, e.g. [nats://hub.example.com:4222]")
	}
	for i, s := range up.Servers {
		if u, err := url.Parse(s); err != nil || u.Host == "" || !oneOf(u.Scheme, "nats", "tls", "ws", "wss") {
			k.bad(fmt.Sprintf("upstream.servers[%d]", i), "%q is not a NATS URL like nats://host:4222", secret.URL(s))
		}
	}
	if up.Compression {
		for i, s := range up.Servers {
			if u, err := url.Parse(s); err == nil && u.Host != "" && !oneOf(u.Scheme, "ws", "wss") {
				k.bad(fmt.Sprintf("upstream.servers[%d]", i), "%q: compression works over WebSocket only; use wss://host:443 (the hub's websocket listener) or turn upstream.compression off", secret.URL(s))
			}
		}
	}
	auth := 0
	for _, set := range []bool{up.User != "", up.Token != "", up.NKeySeedFile != "", up.CredsFile != ""} {
		if set {
			auth++
		}
	}
	if auth > 1 {
		k.bad("upstream", "set only one of user/password, token, nkey_seed_file and creds_file")
	}
	checkTLS(k, "upstream.tls", up.TLS)
	if !validStreamName(up.Stream.Name) {
		k.bad("upstream.stream.name", "%q may not contain spaces, '.', '*', '>', '/' or '\\'", up.Stream.Name)
	}
	if len(up.Stream.Subjects) == 0 && len(filters) > 0 { // no source at all is said once, above
		k.bad("upstream.stream.subjects", "missing; the subjects the stream captures, e.g. [telemetry.>]")
	}
	for _, f := range filters {
		if !subject.Covers(up.Stream.Subjects, f) {
			k.bad("upstream.stream.subjects", "%v do not capture %q, where this gateway's subject template publishes", up.Stream.Subjects, f)
		}
	}
	if _, err := forward.ParseDrain(up.Drain); err != nil {
		k.bad("upstream.drain", "%q is not live_first or oldest_first", up.Drain)
	}
	if up.LowerShare < 0 || up.LowerShare > 0.5 {
		k.bad("upstream.lower_share", "%g is outside 0..0.5 (a share of the sends, e.g. 0.1)", up.LowerShare)
	}
	if up.Stream.Duplicates < 0 {
		k.bad("upstream.stream.duplicates", "must not be negative")
	}
	if up.Stream.Replicas < 0 || up.Stream.Replicas > 5 {
		k.bad("upstream.stream.replicas", "%d is not between 1 and 5", up.Stream.Replicas)
	}
	if up.Window < 0 {
		k.bad("upstream.window", "must not be negative")
	} else if up.Window > MaxWindow {
		k.bad("upstream.window", "%d is over the limit of %d publishes in flight (each holds its message in memory until the stream acknowledges it)", up.Window, MaxWindow)
	}
	if up.AckTimeout < 0 {
		k.bad("upstream.ack_timeout", "must not be negative")
	} else if up.AckTimeout > 10*time.Minute {
		k.bad("upstream.ack_timeout", "%s is over the limit of 10m", up.AckTimeout)
	}
	if up.Stream.Duplicates > 7*24*time.Hour {
		k.bad("upstream.stream.duplicates", "%s is over the limit of 168h (the server keeps every Msg-Id of the window in memory)", up.Stream.Duplicates)
	}
	if up.Rate.EventsPerSecond < 0 {
		k.bad("upstream.rate.events_per_second", "must not be negative")
	}
	if up.Rate.BytesPerSecond < 0 {
		k.bad("upstream.rate.bytes_per_second", "must not be negative")
	}
}

func (c *Config) checkHTTPAndLog(k checker) {
	if l := c.HTTP.Listen; l != "off" {
		host, port, err := net.SplitHostPort(l)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 || strings.ContainsAny(host, "/ ") {
			k.bad("http.listen", "%q is not host:port (e.g. 127.0.0.1:9180, or :9180 for every interface) or off", l)
		} else if !Loopback(l) && c.HTTP.UsersFile == "" {
			k.bad("http.listen", "%q is reachable from the network: set http.users_file (users with bcrypt hashes, as for mqtt.server: edgegw mqtt hash-password), or listen on 127.0.0.1", l)
		}
	}
	if f := c.HTTP.UsersFile; f != "" {
		if _, err := mqttbroker.LoadUsers(f); err != nil {
			k.bad("http.users_file", "%v", strings.Replace(err.Error(), "mqtt.server.users_file", "http.users_file", 1))
		}
	}
	if !oneOf(c.Log.Level, "debug", "info", "warn", "error") {
		k.bad("log.level", "%q is not debug, info, warn or error", c.Log.Level)
	}
	if !oneOf(c.Log.Format, "text", "json") {
		k.bad("log.format", "%q is not text or json", c.Log.Format)
	}
}

// CheckFiles reports the files the config names (CA, client
// certificates and keys, NKey seed, creds) that cannot be read, at their
// keys. config check and run call it; the offline commands do not.
func (c *Config) CheckFiles() error {
	ce := &Error{File: "(files)"}
	file := func(path, name string) {
		if name == "" {
			return
		}
		f, err := os.Open(name)
		if err != nil {
			ce.Problems = append(ce.Problems, Problem{Path: path, Msg: fmt.Sprintf("%v (is the path right, and readable by the user edgegw runs as?)", err)})
			return
		}
		f.Close()
	}
	if m := c.MQTT; m != nil {
		file("mqtt.tls.ca_file", m.TLS.CAFile)
		file("mqtt.tls.cert_file", m.TLS.CertFile)
		file("mqtt.tls.key_file", m.TLS.KeyFile)
	}
	u := c.Upstream
	file("upstream.tls.ca_file", u.TLS.CAFile)
	file("upstream.tls.cert_file", u.TLS.CertFile)
	file("upstream.tls.key_file", u.TLS.KeyFile)
	file("upstream.nkey_seed_file", u.NKeySeedFile)
	file("upstream.creds_file", u.CredsFile)
	if len(ce.Problems) > 0 {
		return ce
	}
	return nil
}

func checkTLS(k checker, path string, t TLSConfig) {
	if (t.CertFile == "") != (t.KeyFile == "") {
		k.bad(path, "cert_file and key_file go together")
	}
}

// ValidID reports whether s may be a gateway id (and a bucket name):
// letters, digits, '-' and '_', so that it is one NATS subject token.
func ValidID(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func validStreamName(s string) bool {
	return s != "" && !strings.ContainsAny(s, " \t\r\n.*>/\\")
}

func oneOf(s string, set ...string) bool {
	for _, v := range set {
		if s == v {
			return true
		}
	}
	return false
}

// errShared: a template whose subjects other gateways could publish to
// too. The forwarder learns what the stream already holds of this gateway
// from the last message on its subjects; another gateway's there would
// make it start over, and after an outage longer than the duplicate
// window events would reach the stream twice.
const errShared = "%q has neither {gateway} nor this gateway's id as a token: every gateway needs subjects of its own (e.g. telemetry.{gateway}.{topic}), or the forwarder cannot tell what the stream already holds of it"

// ownSubject reports whether a subject template is this gateway's alone.
func ownSubject(tmpl, id string) bool {
	for _, tok := range strings.Split(tmpl, ".") {
		if tok == "{gateway}" || tok == id {
			return true
		}
	}
	return false
}

// checkServer checks the embedded broker's section.
func checkServer(k checker, sv *MQTTServerConfig) {
	if sv.Listen == "" && sv.TLS.Listen == "" && sv.WebSocket == "" {
		k.bad("mqtt.server.listen", "missing; e.g. 0.0.0.0:1883 (or remove mqtt.server)")
	}
	for _, l := range []struct{ key, addr string }{{"mqtt.server.listen", sv.Listen}, {"mqtt.server.tls.listen", sv.TLS.Listen}, {"mqtt.server.websocket", sv.WebSocket}} {
		if l.addr == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(l.addr); err != nil || port == "" {
			k.bad(l.key, "%q is not host:port, e.g. 0.0.0.0:1883", l.addr)
		}
	}
	if sv.TLS.Listen != "" && (sv.TLS.CertFile == "" || sv.TLS.KeyFile == "") {
		k.bad("mqtt.server.tls", "a TLS listener needs cert_file and key_file")
	}
	if sv.UsersFile == "" && !sv.AllowAnonymous {
		k.bad("mqtt.server.users_file", "missing; list the devices' users with bcrypt password hashes (edgegw mqtt hash-password), or set allow_anonymous: true on a trusted network")
	} else if sv.UsersFile != "" {
		if _, err := mqttbroker.LoadUsers(sv.UsersFile); err != nil {
			k.bad("mqtt.server.users_file", "%v", err)
		}
	}
	if sv.MaxInflight < 0 || sv.MaxInflight > buffer.MarksPerGroup {
		// A client redelivers up to its receive maximum after a reconnect;
		// the buffer tells copies by the marks of its latest messages.
		k.bad("mqtt.server.max_inflight", "%d is outside 0..%d (the buffer remembers each client's last %d messages to drop redelivered copies)", sv.MaxInflight, buffer.MarksPerGroup, buffer.MarksPerGroup)
	}
	if sv.MaxConnections < 0 {
		k.bad("mqtt.server.max_connections", "must not be negative")
	}
	if sv.ConnectTimeout < 0 {
		k.bad("mqtt.server.connect_timeout", "must not be negative")
	}
	if sv.MaxPending < 0 {
		k.bad("mqtt.server.max_pending", "must not be negative")
	}
	if sv.MaxPendingPerAddress < 0 {
		k.bad("mqtt.server.max_pending_per_address", "must not be negative")
	}
	for _, l := range []struct {
		key string
		n   int64
	}{{"max_retained", int64(sv.MaxRetained)}, {"max_retained_bytes", int64(sv.MaxRetainedBytes)}, {"sessions_max_bytes", int64(sv.SessionsMaxBytes)}} {
		if l.n < 0 {
			k.bad("mqtt.server."+l.key, "must not be negative")
		}
	}
	if sv.MaxKeepalive < 0 || sv.MaxKeepalive > 65535*time.Second {
		k.bad("mqtt.server.max_keepalive", "%s is outside 0..65535s (MQTT's largest keepalive)", sv.MaxKeepalive)
	}
	if sv.MaxPacketSize < 0 {
		k.bad("mqtt.server.max_packet_size", "must not be negative")
	}
}

// checkBrokerURL checks mqtt.broker, the broker edgegw subscribes to.
func checkBrokerURL(k checker, m *MQTTConfig) {
	if m.Broker == "" {
		k.bad("mqtt.broker", "missing; e.g. tcp://127.0.0.1:1883 (or set mqtt.server.listen to be the site's broker)")
	} else if u, err := url.Parse(m.Broker); err != nil || u.Host == "" || !oneOf(u.Scheme, "tcp", "ssl", "tls", "mqtt", "mqtts", "ws", "wss") {
		k.bad("mqtt.broker", "%q is not a broker URL like tcp://127.0.0.1:1883 or ssl://host:8883", secret.URL(m.Broker))
	} else if u.User != nil && (m.Username != "" || m.Password != "") {
		k.bad("mqtt.broker", "carries a user and mqtt.username/password are set too; the URL's would win: keep the credentials in one place")
	}
}

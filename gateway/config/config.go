package config

import (
	"bytes"
	"fmt"
	"net"
	"strconv"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/secret"
	"github.com/edgegw/edgegw/sensors"
)

// Config is the gateway's configuration file. docs/config.md documents every
// key; configs/ holds examples that the tests load.
type Config struct {
	Gateway  GatewayConfig  `yaml:"gateway"`
	Buffer   BufferConfig   `yaml:"buffer"`
	MQTT     *MQTTConfig    `yaml:"mqtt"`
	Upstream UpstreamConfig `yaml:"upstream"`
	Sensors  []SensorConfig `yaml:"sensors,omitempty"`
	HTTP     HTTPConfig     `yaml:"http"`
	Log      LogConfig      `yaml:"log"`
	// Outputs are GPIO output pins the fleet may set (gpio.set).
	Outputs []OutputConfig `yaml:"outputs,omitempty"`
	// Fleet takes config overlays from a NATS KV bucket (docs/fleet.md).
	Fleet *FleetConfig `yaml:"fleet,omitempty"`

	src *configSource // the file it was parsed from, for overlays
}

// HTTPConfig is the listener for /metrics, /healthz, /readyz and /status.
type HTTPConfig struct {
	// Listen is host:port (default 127.0.0.1:9180), or "off". On any
	// address but loopback, UsersFile is required.
	Listen string `yaml:"listen"`
	// UsersFile lists who may read the page and the endpoints (basic
	// auth; the users file format of mqtt.server.users_file, bcrypt
	// hashes). /healthz and /readyz stay open: they say nothing.
	UsersFile string `yaml:"users_file,omitempty"`
}

// Loopback reports whether a listen address is reachable from this
// machine only.
func Loopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// DefaultHTTPListen is where /metrics is served unless http.listen says
// otherwise: loopback only, since the endpoints carry no authentication.
const DefaultHTTPListen = "127.0.0.1:9180"

// SensorConfig is one sensor wired to the gateway (docs/sensors.md).
type SensorConfig struct {
	Name     string          `yaml:"name"`
	Driver   string          `yaml:"driver"`        // bme280 (also BMP280), mcp9808, ina219, bh1750, scd4x, ads1015, ads1115, ds18b20, register, sim, gpio_edge, pulse_counter
	Bus      string          `yaml:"bus,omitempty"` // "1" or "/dev/i2c-1"
	Address  uint16          `yaml:"address,omitempty"`
	Interval time.Duration   `yaml:"interval"`
	Subject  string          `yaml:"subject"`
	Register *RegisterConfig `yaml:"register,omitempty"`
	Channels []ChannelConfig `yaml:"channels,omitempty"` // ads1015, ads1115
	Seed     uint64          `yaml:"seed,omitempty"`     // sim only
	ROM      uint64          `yaml:"rom,omitempty"`      // ds18b20: the probe's 64-bit 1-Wire address
	Bits     int             `yaml:"bits,omitempty"`     // ds18b20: resolution 9-12 (default 12)

	// GPIO (gpio_edge, pulse_counter).
	Pin      string        `yaml:"pin,omitempty"`      // GPIO17
	Edge     string        `yaml:"edge,omitempty"`     // rising, falling, both (gpio_edge)
	Pull     string        `yaml:"pull,omitempty"`     // up, down, none (default down)
	Debounce time.Duration `yaml:"debounce,omitempty"` // default 20ms (gpio_edge), 5ms (pulse_counter)
	Scale    float64       `yaml:"scale,omitempty"`    // pulse_counter: unit per pulse
	Unit     string        `yaml:"unit,omitempty"`     // pulse_counter: e.g. litres

	// Report by exception for a polled sensor (docs/sensors.md).
	Report *sensors.Report `yaml:"report,omitempty"`

	// Modbus (docs/modbus.md): url, unit_id, timeout, serial, byte_order,
	// word_order, frame_gap, registers.
	sensors.ModbusSpec `yaml:",inline"`

	Route `yaml:",inline"`
}

// Route is where a subscription's or a sensor's events wait in the buffer:
// the lane of their priority and TTL (docs/lanes.md).
type Route struct {
	// Priority 0 is the highest, 9 the lowest; default 5.
	Priority *int `yaml:"priority,omitempty"`
	// TTL drops an event older than this before it is sent (none by
	// default), measured so that reboots and clock jumps do not fool it.
	TTL time.Duration `yaml:"ttl,omitempty"`
}

func (r Route) Lane() buffer.Lane {
	l := buffer.Lane{Priority: buffer.DefaultPriority, TTL: r.TTL}
	if r.Priority != nil {
		l.Priority = *r.Priority
	}
	return l
}

func (r Route) check(k checker, path string) {
	if p := *r.Priority; p < 0 || p > buffer.MaxPriority {
		k.bad(path+".priority", "%d is outside 0..%d (0 is the highest)", p, buffer.MaxPriority)
	}
	if r.TTL < 0 || r.TTL > 0 && r.TTL < buffer.MinTTL {
		k.bad(path+".ttl", "%s is under %s; leave it out for no TTL", r.TTL, buffer.MinTTL)
	}
}

// ChannelConfig is one ADS1x15 input with its linear scale.
type ChannelConfig struct {
	Input      string  `yaml:"input"`
	MaxVoltage float64 `yaml:"max_voltage"`
	Scale      float64 `yaml:"scale"`
	Offset     float64 `yaml:"offset"`
	Name       string  `yaml:"name"`
}

func (c ChannelConfig) adc() sensors.ADCChannel {
	return sensors.ADCChannel{Input: c.Input, MaxVoltage: c.MaxVoltage, Scale: c.Scale, Offset: c.Offset, Name: c.Name}
}

// RegisterConfig describes a generic I²C register sensor.
type RegisterConfig struct {
	Reg       byte    `yaml:"reg"`
	Length    int     `yaml:"length"`
	ByteOrder string  `yaml:"byte_order"` // big (default) or little
	Signed    bool    `yaml:"signed"`
	Scale     float64 `yaml:"scale"`
	Offset    float64 `yaml:"offset"`
	Name      string  `yaml:"name"` // the value's name with its unit, e.g. temperature_c
}

type GatewayConfig struct {
	ID      string         `yaml:"id"`
	DataDir string         `yaml:"data_dir"`
	Storage *StorageConfig `yaml:"storage,omitempty"` // the card, for the wear budget
}

type BufferConfig struct {
	Path     string        `yaml:"path"`
	MaxBytes ByteSize      `yaml:"max_bytes"`
	MaxAge   time.Duration `yaml:"max_age"`
	WhenFull string        `yaml:"when_full"`
	// What decides the bytes written per reading (SD wear; docs/buffer.md):
	// the page size of a new file, how long a commit of few readings waits
	// for more (every PUBACK still after its fsync), how long acks wait to
	// ride with an append's commit.
	PageSize    ByteSize       `yaml:"page_size,omitempty"`    // default 4KiB
	CommitDelay *time.Duration `yaml:"commit_delay,omitempty"` // default 250ms
	AckDelay    *time.Duration `yaml:"ack_delay,omitempty"`    // default 2s
}

// Defaults of the buffer's wear settings (docs/benchmarks.md has the
// measurements they were chosen from).
const (
	DefaultPageSize = 4 << 10
	// DefaultCommitDelay spaces the commits of readings that trickle in
	// (a PUBACK waits up to this long); a device that waits for each
	// PUBACK before it sends again is not held back (buffer.Options).
	DefaultCommitDelay = 250 * time.Millisecond
	DefaultAckDelay    = 2 * time.Second
)

type TLSConfig struct {
	CAFile   string `yaml:"ca_file,omitempty"`
	CertFile string `yaml:"cert_file,omitempty"`
	KeyFile  string `yaml:"key_file,omitempty"`
}

type MQTTConfig struct {
	Broker        string               `yaml:"broker"`
	ClientID      string               `yaml:"client_id"`
	Username      string               `yaml:"username,omitempty"`
	Password      string               `yaml:"password,omitempty"`
	TLS           TLSConfig            `yaml:"tls,omitempty"`
	MaxPayload    ByteSize             `yaml:"max_payload"`
	Subscriptions []SubscriptionConfig `yaml:"subscriptions"`
	// Server, with a listen address, makes edgegw the site's broker:
	// devices publish to it and get their PUBACK after the commit. The
	// subscriptions are its routes. mqtt.broker is then optional.
	Server *MQTTServerConfig `yaml:"server,omitempty"`
}

// MQTTServerConfig is the embedded broker (docs/mqtt-server.md).
type MQTTServerConfig struct {
	Listen    string          `yaml:"listen"`              // e.g. 0.0.0.0:1883
	TLS       ServerTLSConfig `yaml:"tls,omitempty"`       // a TLS listener
	WebSocket string          `yaml:"websocket,omitempty"` // a WebSocket listener, host:port
	// UsersFile lists the users with bcrypt password hashes and ACLs.
	UsersFile      string   `yaml:"users_file,omitempty"`
	AllowAnonymous bool     `yaml:"allow_anonymous,omitempty"`
	MaxPacketSize  ByteSize `yaml:"max_packet_size,omitempty"`
	MaxInflight    int      `yaml:"max_inflight,omitempty"`    // per client (receive maximum), default 1024
	MaxConnections int      `yaml:"max_connections,omitempty"` // default 1000
	// Before login (docs/mqtt-server.md, limits): the CONNECT's deadline,
	// connections not logged in yet, and from one address.
	ConnectTimeout       time.Duration `yaml:"connect_timeout,omitempty"`         // default 5s
	MaxPending           int           `yaml:"max_pending,omitempty"`             // default 100
	MaxPendingPerAddress int           `yaml:"max_pending_per_address,omitempty"` // default 10
	MaxKeepalive         time.Duration `yaml:"max_keepalive,omitempty"`           // default 10m
	// Retained messages: retain: false turns them off; else bounded.
	Retain           *bool    `yaml:"retain,omitempty"`             // default true
	MaxRetained      int      `yaml:"max_retained,omitempty"`       // default 10000
	MaxRetainedBytes ByteSize `yaml:"max_retained_bytes,omitempty"` // default 4MiB
	// SessionsMaxBytes bounds <data_dir>/broker-sessions.db (outside
	// buffer.max_bytes): larger at start, it is moved aside.
	SessionsMaxBytes ByteSize `yaml:"sessions_max_bytes,omitempty"` // default 16MiB
}

// On reports whether the embedded broker listens anywhere.
func (sv *MQTTServerConfig) On() bool {
	return sv != nil && (sv.Listen != "" || sv.TLS.Listen != "" || sv.WebSocket != "")
}

// ServerTLSConfig is a TLS listener with its certificate; with
// ClientCAFile, clients must present a certificate it signed.
type ServerTLSConfig struct {
	Listen       string `yaml:"listen,omitempty"`
	CertFile     string `yaml:"cert_file,omitempty"`
	KeyFile      string `yaml:"key_file,omitempty"`
	ClientCAFile string `yaml:"client_ca_file,omitempty"`
}

type SubscriptionConfig struct {
	Topic   string `yaml:"topic"`
	QoS     *int   `yaml:"qos"`
	Subject string `yaml:"subject"`
	// Retained forwards the retained copies sent on (re)subscribe, marked
	// with Edgegw-Retained: true (default false: skipped and counted).
	Retained bool `yaml:"retained"`

	Route `yaml:",inline"`
}

type UpstreamConfig struct {
	Servers      []string  `yaml:"servers"`
	User         string    `yaml:"user,omitempty"`
	Password     string    `yaml:"password,omitempty"`
	Token        string    `yaml:"token,omitempty"`
	NKeySeedFile string    `yaml:"nkey_seed_file,omitempty"`
	CredsFile    string    `yaml:"creds_file,omitempty"`
	TLS          TLSConfig `yaml:"tls,omitempty"`
	// Compression turns on per-message deflate over a ws:// or wss://
	// server (docs/upstream.md, "Metered links").
	Compression bool `yaml:"compression,omitempty"`
	// InboxPrefix is where the hub sends replies to this gateway
	// (default _INBOX_<gateway id>: a hub can then grant each gateway
	// its own replies only; docs/upstream.md).
	InboxPrefix string        `yaml:"inbox_prefix,omitempty"`
	Stream      StreamConfig  `yaml:"stream"`
	Window      int           `yaml:"window"`
	AckTimeout  time.Duration `yaml:"ack_timeout"`
	Rate        RateConfig    `yaml:"rate,omitempty"`
	// Drain is live_first (default) or oldest_first: docs/lanes.md.
	Drain string `yaml:"drain"`
	// LowerShare is the share of sends kept for lanes below the highest
	// waiting one, so none starves (default 0.1, at most 0.5).
	LowerShare float64 `yaml:"lower_share,omitempty"`
}

type StreamConfig struct {
	Name       string        `yaml:"name"`
	Subjects   []string      `yaml:"subjects"`
	Create     bool          `yaml:"create"`
	Duplicates time.Duration `yaml:"duplicates"`
	Replicas   int           `yaml:"replicas"`
}

type RateConfig struct {
	EventsPerSecond float64  `yaml:"events_per_second,omitempty"`
	BytesPerSecond  ByteSize `yaml:"bytes_per_second,omitempty"`
}

type LogConfig struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Limits on values that size memory or work: config check refuses more.
const (
	MaxWindow      = 65536    // upstream.window
	MaxMQTTPayload = 64 << 20 // mqtt.max_payload
	MinInterval    = time.Millisecond
	// eventHeadroom is what an MQTT message's event may add to its payload
	// (topic, subject, time) in the buffer and in NATS headers.
	eventHeadroom = 4 << 10
)

// Defaults.
const (
	DefaultDataDir       = "/var/lib/edgegw"
	DefaultMaxBytes      = 1 << 30 // 512 MiB on a 32-bit system
	DefaultMaxAge        = 168 * time.Hour
	DefaultSubject       = "telemetry.{gateway}.{topic}"
	DefaultSensorSubject = "telemetry.{gateway}.{sensor}"
	DefaultInterval      = 10 * time.Second
	DefaultStreamName    = "TELEMETRY"
	DefaultWindow        = 1024
	DefaultAckTimeout    = 5 * time.Second
	DefaultLowerShare    = 0.1
	DefaultDuplicates    = 2 * time.Minute
)

// complete fills in the defaults, section by section.
func (c *Config) complete() {
	c.completeBuffer()
	c.completeMQTT()
	c.completeSensors()
	c.completeUpstream()
	c.completeHTTPAndLog()
	c.completeFleet()
}

// Spec is the sensor's config in the driver table's terms; an error is a
// register byte order that is neither big nor little.
func (s SensorConfig) Spec() (sensors.Spec, error) {
	sp := sensors.Spec{Address: s.Address, Interval: s.Interval, ROM: s.ROM, Bits: s.Bits, Seed: s.Seed,
		Pin: s.Pin, Edge: s.Edge, Pull: s.Pull, Debounce: s.Debounce}
	for _, c := range s.Channels {
		sp.Channels = append(sp.Channels, c.adc())
	}
	if s.Driver == "modbus" {
		m := s.ModbusSpec
		sp.Modbus = &m
	}
	var err error
	if s.Register != nil {
		var r sensors.Register
		r, err = registerOf(s)
		sp.Register = &r
	}
	return sp, err
}

func registerOf(s SensorConfig) (sensors.Register, error) {
	r := s.Register
	if r.ByteOrder != "" && r.ByteOrder != "big" && r.ByteOrder != "little" {
		return sensors.Register{}, fmt.Errorf("byte_order %q is not big or little", r.ByteOrder)
	}
	return sensors.Register{Addr: s.Address, Reg: r.Reg, Length: r.Length, BigEndian: r.ByteOrder != "little",
		Signed: r.Signed, Scale: r.Scale, Offset: r.Offset, Name: r.Name}, nil
}

// Summary prints the effective config without secrets.
func (c *Config) Summary() string {
	cp := *c
	if cp.MQTT != nil {
		m := *cp.MQTT
		m.Password = secret.Mask(m.Password)
		m.Broker = secret.URL(m.Broker)
		cp.MQTT = &m
	}
	cp.Upstream.Password = secret.Mask(cp.Upstream.Password)
	cp.Upstream.Token = secret.Mask(cp.Upstream.Token)
	servers := make([]string, len(cp.Upstream.Servers))
	for i, s := range cp.Upstream.Servers {
		servers[i] = secret.URL(s)
	}
	cp.Upstream.Servers = servers
	var n yaml.Node
	if err := n.Encode(cp); err != nil {
		return err.Error()
	}
	hexify(&n)
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	enc.Encode(&n)
	return b.String()
}

// hexify writes I²C addresses, registers and 1-Wire ROMs in hex, as
// datasheets and i2cdetect do.
func hexify(n *yaml.Node) {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if v.Kind == yaml.ScalarNode && (k.Value == "address" || k.Value == "reg" || k.Value == "rom") {
				if u, err := strconv.ParseUint(v.Value, 10, 64); err == nil {
					v.Value = fmt.Sprintf("%#02x", u)
				}
			}
		}
	}
	for _, c := range n.Content {
		hexify(c)
	}
}

// StorageConfig is the card edgegw writes to, for the wear budget
// (docs/operations.md, "SD card wear"): its size and how many times the
// maker rates it to be written whole (program/erase cycles; a few
// hundred for consumer cards, thousands for industrial ones).
type StorageConfig struct {
	Size        ByteSize `yaml:"size"`
	RatedWrites int      `yaml:"rated_writes"`
}

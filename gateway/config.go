package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/forward"
	"github.com/edgegw/edgegw/gateway/mqttsource"
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
}

// HTTPConfig is the listener for /metrics, /healthz, /readyz and /status.
type HTTPConfig struct {
	// Listen is host:port (default 127.0.0.1:9180), or "off".
	Listen string `yaml:"listen"`
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
	ID      string `yaml:"id"`
	DataDir string `yaml:"data_dir"`
}

type BufferConfig struct {
	Path     string        `yaml:"path"`
	MaxBytes ByteSize      `yaml:"max_bytes"`
	MaxAge   time.Duration `yaml:"max_age"`
	WhenFull string        `yaml:"when_full"`
}

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
}

type SubscriptionConfig struct {
	Topic   string `yaml:"topic"`
	QoS     *int   `yaml:"qos"`
	Subject string `yaml:"subject"`
	// Retained forwards the retained copies sent on (re)subscribe, marked
	// with Edgegw-Retained: true (default false: skipped and counted).
	Retained bool `yaml:"retained"`
}

type UpstreamConfig struct {
	Servers      []string      `yaml:"servers"`
	User         string        `yaml:"user,omitempty"`
	Password     string        `yaml:"password,omitempty"`
	Token        string        `yaml:"token,omitempty"`
	NKeySeedFile string        `yaml:"nkey_seed_file,omitempty"`
	CredsFile    string        `yaml:"creds_file,omitempty"`
	TLS          TLSConfig     `yaml:"tls,omitempty"`
	Stream       StreamConfig  `yaml:"stream"`
	Window       int           `yaml:"window"`
	AckTimeout   time.Duration `yaml:"ack_timeout"`
	Rate         RateConfig    `yaml:"rate,omitempty"`
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

// ByteSize is a size in bytes, written as 1048576, 512KiB, 1GiB or 100MB.
type ByteSize int64

// MarshalYAML writes b as String does, so the effective config reads as
// the file would.
func (b ByteSize) MarshalYAML() (any, error) { return b.String(), nil }

// String writes b the way a config would: 512MiB, 4KiB, 1000.
func (b ByteSize) String() string {
	for _, u := range []struct {
		suffix string
		n      ByteSize
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if b >= u.n && b%u.n == 0 {
			return strconv.FormatInt(int64(b/u.n), 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

var sizeRE = regexp.MustCompile(`^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]i?B|B)?\s*$`)

func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	m := sizeRE.FindStringSubmatch(n.Value)
	if m == nil {
		// A TypeError: yaml goes on decoding the rest of the file.
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %q is not a size like 512MiB, 1GiB or 100MB", n.Line, n.Value)}}
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	mult := map[string]float64{"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
		"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}[m[2]]
	*b = ByteSize(v * mult)
	return nil
}

// Problem is one thing wrong with a config: the key path, the line in the
// file when known, and what to do.
type Problem struct {
	Path string
	Line int
	Msg  string

	unset bool // an unset ${VAR}
}

var typeLineRE = regexp.MustCompile(`^line (\d+): (.*)$`)

// typeProblem turns one of yaml's "line N: cannot unmarshal …" messages
// into a problem at the key on that line.
func typeProblem(msg string, lines map[string]int) Problem {
	m := typeLineRE.FindStringSubmatch(msg)
	if m == nil {
		return Problem{Path: "(value)", Msg: msg}
	}
	line, _ := strconv.Atoi(m[1])
	path := ""
	for p, l := range lines {
		if l == line && len(p) > len(path) {
			path = p // the deepest key on the line
		}
	}
	if path == "" {
		path = "(value)"
	}
	text := m[2]
	if i := strings.Index(text, "cannot unmarshal !!"); i >= 0 {
		// "cannot unmarshal !!str `5 minu...` into time.Duration"
		if j := strings.Index(text, " into "); j > i {
			want := text[j+len(" into "):]
			switch want {
			case "time.Duration":
				want = "a duration like 30s, 5m or 2h"
			case "int", "int64", "uint16", "uint64", "float64", "byte", "uint8":
				want = "a number"
			case "bool":
				want = "true or false"
			}
			text = "not " + want + " (" + strings.TrimPrefix(text[i:j], "cannot unmarshal ") + ")"
		}
	}
	return Problem{Path: path, Line: line, Msg: text}
}

// mergeTypos folds "missing" problems into an unknown key next to them
// whose name is a typo of the missing one: one problem, the right fix.
func mergeTypos(ps []Problem) []Problem {
	var out []Problem
	used := map[int]bool{}
	for i, p := range ps {
		if !strings.HasPrefix(p.Msg, "missing") {
			continue
		}
		dir, name := splitPath(p.Path)
		for j, u := range ps {
			if !strings.HasPrefix(u.Msg, "unknown key") {
				continue
			}
			if udir, uname := splitPath(u.Path); udir == dir && closeTo(uname, name) {
				ps[j].Msg = fmt.Sprintf("unknown key; did you mean %s?", name)
				used[i] = true
			}
		}
	}
	for i, p := range ps {
		if !used[i] {
			out = append(out, p)
		}
	}
	return out
}

func splitPath(p string) (dir, name string) {
	if i := strings.LastIndex(p, "."); i >= 0 {
		return p[:i], p[i+1:]
	}
	return "", p
}

// closeTo: an edit distance of at most 2.
func closeTo(a, b string) bool {
	if a == b || abs(len(a)-len(b)) > 2 {
		return false
	}
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)] <= 2
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("%s (line %d): %s", p.Path, p.Line, p.Msg)
	}
	return fmt.Sprintf("%s: %s", p.Path, p.Msg)
}

// ConfigError lists every problem found in a config.
type ConfigError struct {
	File     string
	Problems []Problem
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "config %s: %d problem(s)", e.File, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// LoadConfig reads, expands, checks and completes a config file. Every
// problem is reported at once, in a *ConfigError.
func LoadConfig(path string) (*Config, error) {
	return LoadConfigWith(path, LoadOptions{})
}

// LoadOptions change how a config is loaded.
type LoadOptions struct {
	// Lookup resolves ${VAR} references (default os.LookupEnv).
	Lookup func(string) (string, bool)
	// Offline is for commands that connect to nothing (buffer stats,
	// sensors read): a ${VAR} left unset under mqtt, upstream or http (the
	// secrets of connections) is not a problem; the key is left empty.
	Offline bool
}

// LoadConfigWith is LoadConfig with options.
func LoadConfigWith(path string, o LoadOptions) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if o.Lookup == nil {
		o.Lookup = os.LookupEnv
	}
	return parseConfig(path, data, o)
}

// ParseConfig is LoadConfig on bytes; lookup resolves ${VAR} references.
func ParseConfig(name string, data []byte, lookup func(string) (string, bool)) (*Config, error) {
	return parseConfig(name, data, LoadOptions{Lookup: lookup})
}

func parseConfig(name string, data []byte, o LoadOptions) (*Config, error) {
	lookup := o.Lookup
	ce := &ConfigError{File: name}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		ce.Problems = append(ce.Problems, Problem{Path: "(file)", Msg: err.Error()})
		return nil, ce
	}
	if len(root.Content) == 0 {
		ce.Problems = append(ce.Problems, Problem{Path: "(file)", Msg: "empty config; see configs/edgegw.yaml"})
		return nil, ce
	}
	lines := map[string]int{}
	walk(root.Content[0], "", reflect.TypeOf(Config{}), lines, lookup, ce)
	var cfg Config
	if err := root.Content[0].Decode(&cfg); err != nil {
		// Type errors do not stop the decoding of the rest (ByteSize
		// returns one too); each gets the key path of its line.
		var te *yaml.TypeError
		msgs := []string{err.Error()}
		if errors.As(err, &te) {
			msgs = te.Errors
		}
		for _, m := range msgs {
			ce.Problems = append(ce.Problems, typeProblem(m, lines))
		}
	}
	cfg.complete()
	cfg.check(ce, lines)
	ce.Problems = mergeTypos(ce.Problems)
	if o.Offline {
		ce.Problems = slices.DeleteFunc(ce.Problems, func(p Problem) bool {
			return p.unset && (strings.HasPrefix(p.Path, "mqtt") || strings.HasPrefix(p.Path, "upstream") || strings.HasPrefix(p.Path, "http"))
		})
	}
	if len(ce.Problems) > 0 {
		return nil, ce
	}
	return &cfg, nil
}

var envRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// walk records each key's line, reports unknown keys, and expands
// ${VAR} and ${VAR:-default} in scalar values (never in keys, and never
// into YAML structure: a value stays one value).
func walk(n *yaml.Node, path string, t reflect.Type, lines map[string]int, lookup func(string) (string, bool), ce *ConfigError) {
	for t != nil && (t.Kind() == reflect.Pointer) {
		t = t.Elem()
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := join(path, k.Value)
			lines[p] = k.Line
			var ft reflect.Type
			if t != nil && t.Kind() == reflect.Struct {
				f, ok := fieldByTag(t, k.Value)
				if !ok {
					ce.Problems = append(ce.Problems, Problem{Path: p, Line: k.Line, Msg: "unknown key; see docs/config.md"})
					continue
				}
				ft = f
			}
			walk(v, p, ft, lines, lookup, ce)
		}
	case yaml.SequenceNode:
		var et reflect.Type
		if t != nil && t.Kind() == reflect.Slice {
			et = t.Elem()
		}
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			lines[p] = c.Line
			walk(c, p, et, lines, lookup, ce)
		}
	case yaml.ScalarNode:
		lines[path] = n.Line
		if !strings.Contains(n.Value, "${") {
			return
		}
		n.Value = envRE.ReplaceAllStringFunc(n.Value, func(ref string) string {
			m := envRE.FindStringSubmatch(ref)
			if v, ok := lookup(m[1]); ok {
				return v
			}
			if m[2] != "" {
				return m[3]
			}
			ce.Problems = append(ce.Problems, Problem{Path: path, Line: n.Line, unset: true, Msg: fmt.Sprintf("environment variable %s is not set (in the environment, or the env file: --env-file, default /etc/edgegw/edgegw.env; or use ${%s:-default} for a default)", m[1], m[1])})
			return ""
		})
		if n.Tag == "!!str" && n.Style == 0 {
			n.Tag = "" // let the expanded value resolve as a number or bool
		}
	}
}

func fieldByTag(t reflect.Type, key string) (reflect.Type, bool) {
	for i := 0; i < t.NumField(); i++ {
		if strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0] == key {
			return t.Field(i).Type, true
		}
	}
	return nil, false
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
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
	DefaultDuplicates    = 2 * time.Minute
)

func (c *Config) complete() {
	if c.Gateway.DataDir == "" {
		c.Gateway.DataDir = DefaultDataDir
	}
	if c.Buffer.Path == "" {
		c.Buffer.Path = filepath.Join(c.Gateway.DataDir, "buffer.db")
	}
	if c.Buffer.MaxBytes == 0 {
		c.Buffer.MaxBytes = DefaultMaxBytes
		if limit := buffer.MaxBytesLimit(); limit > 0 {
			c.Buffer.MaxBytes = ByteSize(limit) * 2 / 3 // 512 MiB on 32-bit
		}
	}
	if c.Buffer.MaxAge == 0 {
		c.Buffer.MaxAge = DefaultMaxAge
	}
	if c.Buffer.WhenFull == "" {
		c.Buffer.WhenFull = "drop_oldest"
	}
	if m := c.MQTT; m != nil {
		if m.ClientID == "" && c.Gateway.ID != "" {
			m.ClientID = "edgegw-" + c.Gateway.ID
		}
		if m.MaxPayload == 0 {
			m.MaxPayload = mqttsource.DefaultMaxPayload
		}
		for i := range m.Subscriptions {
			s := &m.Subscriptions[i]
			if s.QoS == nil {
				one := 1
				s.QoS = &one
			}
			if s.Subject == "" {
				s.Subject = DefaultSubject
			}
		}
	}
	for i := range c.Sensors {
		s := &c.Sensors[i]
		if s.Interval == 0 {
			s.Interval = DefaultInterval
		}
		if s.Subject == "" {
			s.Subject = DefaultSensorSubject
		}
		gpioDriver := s.Driver == "gpio_edge" || s.Driver == "pulse_counter"
		if s.Bus == "" && s.Driver != "sim" && s.Driver != "ds18b20" && !gpioDriver {
			s.Bus = "1"
		}
		if gpioDriver && s.Debounce == 0 {
			s.Debounce = 20 * time.Millisecond
			if s.Driver == "pulse_counter" {
				s.Debounce = 5 * time.Millisecond
			}
		}
	}
	if c.Upstream.Stream.Name == "" {
		c.Upstream.Stream.Name = DefaultStreamName
	}
	// The forwarder's defaults, here too, so that config check shows them.
	if c.Upstream.Window == 0 {
		c.Upstream.Window = DefaultWindow
	}
	if c.Upstream.AckTimeout == 0 {
		c.Upstream.AckTimeout = DefaultAckTimeout
	}
	if c.Upstream.Stream.Duplicates == 0 {
		c.Upstream.Stream.Duplicates = DefaultDuplicates
	}
	if c.Upstream.Stream.Replicas == 0 {
		c.Upstream.Stream.Replicas = 1
	}
	if len(c.Upstream.Stream.Subjects) == 0 {
		// One wildcard per first token: the fleet's stream, e.g. telemetry.>
		var templates []string
		if c.MQTT != nil {
			for _, s := range c.MQTT.Subscriptions {
				templates = append(templates, s.Subject)
			}
		}
		for _, s := range c.Sensors {
			templates = append(templates, s.Subject)
		}
		seen := map[string]bool{}
		for _, t := range templates {
			first := strings.Split(t, ".")[0]
			if first != "" && !strings.Contains(first, "{") && !seen[first] {
				seen[first] = true
				c.Upstream.Stream.Subjects = append(c.Upstream.Stream.Subjects, first+".>")
			}
		}
	}
	if c.HTTP.Listen == "" {
		c.HTTP.Listen = DefaultHTTPListen
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
}

// check appends every problem to ce; lines gives key paths their lines.
func (c *Config) check(ce *ConfigError, lines map[string]int) {
	bad := func(path, format string, args ...any) {
		ce.Problems = append(ce.Problems, Problem{Path: path, Line: lines[path], Msg: fmt.Sprintf(format, args...)})
	}
	if c.Gateway.ID == "" {
		bad("gateway.id", "missing; give each gateway a unique id such as lobby-pi-01")
	} else if !validID(c.Gateway.ID) {
		bad("gateway.id", "%q may hold only letters, digits, '-' and '_' (it becomes a NATS subject token and part of message ids)", c.Gateway.ID)
	}
	if c.Buffer.MaxBytes < 0 {
		bad("buffer.max_bytes", "must not be negative")
	} else if limit := buffer.MaxBytesLimit(); limit > 0 && int64(c.Buffer.MaxBytes) > limit {
		bad("buffer.max_bytes", "%d is more than a 32-bit system can map (bbolt maps the whole file); use %dMiB or less, or a 64-bit OS", c.Buffer.MaxBytes, limit>>20)
	}
	if c.Buffer.MaxAge < 0 {
		bad("buffer.max_age", "must not be negative")
	}
	if _, err := buffer.ParsePolicy(c.Buffer.WhenFull); err != nil {
		bad("buffer.when_full", "%q is not drop_oldest or reject", c.Buffer.WhenFull)
	}
	var filters []string
	if m := c.MQTT; m != nil {
		if m.Broker == "" {
			bad("mqtt.broker", "missing; e.g. tcp://127.0.0.1:1883")
		} else if u, err := url.Parse(m.Broker); err != nil || u.Host == "" || !oneOf(u.Scheme, "tcp", "ssl", "tls", "mqtt", "mqtts", "ws", "wss") {
			bad("mqtt.broker", "%q is not a broker URL like tcp://127.0.0.1:1883 or ssl://host:8883", secret.URL(m.Broker))
		} else if u.User != nil && (m.Username != "" || m.Password != "") {
			bad("mqtt.broker", "carries a user and mqtt.username/password are set too; the URL's would win: keep the credentials in one place")
		}
		if m.MaxPayload < 0 {
			bad("mqtt.max_payload", "must not be negative")
		} else if m.MaxPayload > MaxMQTTPayload {
			bad("mqtt.max_payload", "%s is over the limit of %s (a batch of messages is held in memory until committed)", m.MaxPayload, ByteSize(MaxMQTTPayload))
		} else if mb := c.Buffer.MaxBytes; mb > 0 && m.MaxPayload+eventHeadroom > mb {
			bad("mqtt.max_payload", "%s plus %s for topic and headers is more than buffer.max_bytes (%s): the buffer could not hold one maximal message; lower mqtt.max_payload or raise buffer.max_bytes", m.MaxPayload, ByteSize(eventHeadroom), mb)
		}
		checkTLS(bad, "mqtt.tls", m.TLS)
		if len(m.Subscriptions) == 0 {
			bad("mqtt.subscriptions", "missing; subscribe to at least one topic filter such as sensors/#")
		}
		for i, s := range m.Subscriptions {
			p := fmt.Sprintf("mqtt.subscriptions[%d]", i)
			if s.Topic == "" {
				bad(p+".topic", "missing")
			} else if err := mqttsource.ValidFilter(s.Topic); err != nil {
				bad(p+".topic", "%v", err)
			}
			if *s.QoS < 0 || *s.QoS > 2 {
				bad(p+".qos", "%d is not 0, 1 or 2", *s.QoS)
			}
			if t, err := mqttsource.ParseTemplate(s.Subject, c.Gateway.ID); err != nil {
				if validID(c.Gateway.ID) || !strings.Contains(s.Subject, "{gateway}") {
					bad(p+".subject", "%v", err)
				}
			} else {
				filters = append(filters, t.Filter())
			}
		}
	}
	names := map[string]bool{}
	onBus := map[string]int{} // bus/address → sensor index
	for i, s := range c.Sensors {
		p := fmt.Sprintf("sensors[%d]", i)
		if s.Name == "" {
			bad(p+".name", "missing; name each sensor, e.g. lobby-climate")
		} else if names[s.Name] {
			bad(p+".name", "%q is used by another sensor", s.Name)
		}
		names[s.Name] = true
		d, known := sensors.DriverNamed(s.Driver)
		switch {
		case s.Driver == "":
			bad(p+".driver", "missing; one of %s", sensors.DriverNames())
		case !known:
			bad(p+".driver", "%q is not one of %s", s.Driver, sensors.DriverNames())
		default:
			spec, err := s.spec()
			if err != nil {
				bad(p+".register", "%v", err)
			}
			for _, e := range d.CheckSpec(spec) {
				bad(p+"."+e.Field, "%s", e.Msg)
			}
			if addr := d.Addr(spec); d.Bus == sensors.BusI2C && addr != 0 && s.Bus != "" {
				key := s.Bus + "/" + strconv.Itoa(int(addr))
				if j, ok := onBus[key]; ok {
					bad(p+".address", "%#x on bus %s is also sensors[%d]'s: two devices on one bus cannot share an address (many have an address pin: see docs/sensors.md)", addr, s.Bus, j)
				} else {
					onBus[key] = i
				}
			}
		}
		if s.Interval < 0 {
			bad(p+".interval", "must be positive")
		} else if s.Interval < MinInterval {
			bad(p+".interval", "%s is under the limit of %s", s.Interval, MinInterval)
		}
		if subj, err := sensorSubject(s.Subject, c.Gateway.ID, s.Name); err != nil {
			if validID(c.Gateway.ID) && s.Name != "" {
				bad(p+".subject", "%v", err)
			}
		} else {
			filters = append(filters, subj)
		}
	}
	if c.MQTT == nil && len(c.Sensors) == 0 {
		bad("mqtt", "no source: configure mqtt, sensors, or both")
	}
	up := c.Upstream
	if len(up.Servers) == 0 {
		bad("upstream.servers", "missing; list the NATS servers, e.g. [nats://hub.example.com:4222]")
	}
	for i, s := range up.Servers {
		if u, err := url.Parse(s); err != nil || u.Host == "" || !oneOf(u.Scheme, "nats", "tls", "ws", "wss") {
			bad(fmt.Sprintf("upstream.servers[%d]", i), "%q is not a NATS URL like nats://host:4222", secret.URL(s))
		}
	}
	auth := 0
	for _, set := range []bool{up.User != "", up.Token != "", up.NKeySeedFile != "", up.CredsFile != ""} {
		if set {
			auth++
		}
	}
	if auth > 1 {
		bad("upstream", "set only one of user/password, token, nkey_seed_file and creds_file")
	}
	checkTLS(bad, "upstream.tls", up.TLS)
	if !validStreamName(up.Stream.Name) {
		bad("upstream.stream.name", "%q may not contain spaces, '.', '*', '>', '/' or '\\'", up.Stream.Name)
	}
	if len(up.Stream.Subjects) == 0 && len(filters) > 0 { // no source at all is said once, above
		bad("upstream.stream.subjects", "missing; the subjects the stream captures, e.g. [telemetry.>]")
	}
	for _, f := range filters {
		if !forward.Covers(up.Stream.Subjects, f) {
			bad("upstream.stream.subjects", "%v do not capture %q, where this gateway's subject template publishes", up.Stream.Subjects, f)
		}
	}
	if up.Stream.Duplicates < 0 {
		bad("upstream.stream.duplicates", "must not be negative")
	}
	if up.Stream.Replicas < 0 || up.Stream.Replicas > 5 {
		bad("upstream.stream.replicas", "%d is not between 1 and 5", up.Stream.Replicas)
	}
	if up.Window < 0 {
		bad("upstream.window", "must not be negative")
	} else if up.Window > MaxWindow {
		bad("upstream.window", "%d is over the limit of %d publishes in flight (each holds its message in memory until the stream acknowledges it)", up.Window, MaxWindow)
	}
	if up.AckTimeout < 0 {
		bad("upstream.ack_timeout", "must not be negative")
	} else if up.AckTimeout > 10*time.Minute {
		bad("upstream.ack_timeout", "%s is over the limit of 10m", up.AckTimeout)
	}
	if up.Stream.Duplicates > 7*24*time.Hour {
		bad("upstream.stream.duplicates", "%s is over the limit of 168h (the server keeps every Msg-Id of the window in memory)", up.Stream.Duplicates)
	}
	if up.Rate.EventsPerSecond < 0 {
		bad("upstream.rate.events_per_second", "must not be negative")
	}
	if up.Rate.BytesPerSecond < 0 {
		bad("upstream.rate.bytes_per_second", "must not be negative")
	}
	if l := c.HTTP.Listen; l != "off" {
		host, port, err := net.SplitHostPort(l)
		if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 || strings.ContainsAny(host, "/ ") {
			bad("http.listen", "%q is not host:port (e.g. 127.0.0.1:9180, or :9180 for every interface) or off", l)
		}
	}
	if !oneOf(c.Log.Level, "debug", "info", "warn", "error") {
		bad("log.level", "%q is not debug, info, warn or error", c.Log.Level)
	}
	if !oneOf(c.Log.Format, "text", "json") {
		bad("log.format", "%q is not text or json", c.Log.Format)
	}
}

// CheckFiles reports the files the config names (CA, client
// certificates and keys, NKey seed, creds) that cannot be read, at their
// keys. config check and run call it; the offline commands do not.
func (c *Config) CheckFiles() error {
	ce := &ConfigError{File: "(files)"}
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

func checkTLS(bad func(string, string, ...any), path string, t TLSConfig) {
	if (t.CertFile == "") != (t.KeyFile == "") {
		bad(path, "cert_file and key_file go together")
	}
}

func validID(s string) bool {
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

// sensorSubject fills a sensor's subject template: {gateway} and {sensor}
// (escaped like an MQTT topic level).
func sensorSubject(tmpl, gatewayID, name string) (string, error) {
	if strings.Contains(tmpl, "{topic}") || strings.Contains(tmpl, "{level") {
		return "", fmt.Errorf("subject template %q: a sensor's template takes {gateway} and {sensor}", tmpl)
	}
	subj := strings.ReplaceAll(tmpl, "{sensor}", mqttsource.EscapeLevel(name))
	t, err := mqttsource.ParseTemplate(subj, gatewayID)
	if err != nil {
		return "", err
	}
	return t.Subject("x") // no topic placeholders left: the literal subject
}

// spec is the sensor's config in the driver table's terms; an error is a
// register byte order that is neither big nor little.
func (s SensorConfig) spec() (sensors.Spec, error) {
	sp := sensors.Spec{Address: s.Address, Interval: s.Interval, ROM: s.ROM, Bits: s.Bits, Seed: s.Seed,
		Pin: s.Pin, Edge: s.Edge, Pull: s.Pull, Debounce: s.Debounce}
	for _, c := range s.Channels {
		sp.Channels = append(sp.Channels, c.adc())
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

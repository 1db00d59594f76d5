package config

import (
	"errors"
	"fmt"
	"reflect"
	"time"

	"gopkg.in/yaml.v3"
)

// FleetConfig takes config overlays from a NATS KV bucket and reports
// status there (docs/fleet.md). The control connection uses the local
// file's upstream servers and credentials, which overlays cannot change,
// so a bad overlay can never cut a gateway off from the fix.
type FleetConfig struct {
	// ConfigBucket holds the overlays: keys "defaults" and "gw.<id>"
	// (default edgegw_config).
	ConfigBucket string `yaml:"config_bucket"`
	// StatusBucket gets each gateway's state under "gw.<id>" (default
	// edgegw_status).
	StatusBucket string `yaml:"status_bucket"`
	// Heartbeat is how often edgegw.status.<id> is published and the
	// status key refreshed (default 30s).
	Heartbeat time.Duration `yaml:"heartbeat"`
	// Health is what a new config must show before it is kept.
	Health HealthConfig `yaml:"health"`
}

// HealthConfig is the check after a config change; a change that fails
// it is rolled back to the last known good.
type HealthConfig struct {
	// Timeout for the checks (default 30s).
	Timeout time.Duration `yaml:"timeout"`
	// Upstream: the stream answered and acknowledged what was waiting
	// (default true).
	Upstream *bool `yaml:"upstream"`
	// MQTT: connected to mqtt.broker and subscribed, and the embedded
	// broker listening (default true).
	MQTT *bool `yaml:"mqtt"`
}

// OutputConfig is a GPIO output the fleet may set (the gpio.set command).
type OutputConfig struct {
	Name    string `yaml:"name"`
	Pin     string `yaml:"pin"`     // GPIO23
	Initial string `yaml:"initial"` // low (default) or high, set at start
}

// Fleet defaults.
const (
	DefaultConfigBucket  = "edgegw_config"
	DefaultStatusBucket  = "edgegw_status"
	DefaultHeartbeat     = 30 * time.Second
	DefaultHealthTimeout = 30 * time.Second
)

func (c *Config) completeFleet() {
	for i := range c.Outputs {
		if c.Outputs[i].Initial == "" {
			c.Outputs[i].Initial = "low"
		}
	}
	f := c.Fleet
	if f == nil {
		return
	}
	if f.ConfigBucket == "" {
		f.ConfigBucket = DefaultConfigBucket
	}
	if f.StatusBucket == "" {
		f.StatusBucket = DefaultStatusBucket
	}
	if f.Heartbeat == 0 {
		f.Heartbeat = DefaultHeartbeat
	}
	if f.Health.Timeout == 0 {
		f.Health.Timeout = DefaultHealthTimeout
	}
	yes := true
	if f.Health.Upstream == nil {
		f.Health.Upstream = &yes
	}
	if f.Health.MQTT == nil {
		f.Health.MQTT = &yes
	}
}

func (c *Config) checkFleet(k checker) {
	names := map[string]bool{}
	for i, o := range c.Outputs {
		p := fmt.Sprintf("outputs[%d]", i)
		switch {
		case o.Name == "":
			k.bad(p+".name", "missing; gpio.set names the output")
		case names[o.Name]:
			k.bad(p+".name", "%q is used twice", o.Name)
		}
		names[o.Name] = true
		if o.Pin == "" {
			k.bad(p+".pin", "missing; the GPIO line, e.g. GPIO23")
		}
		if o.Initial != "low" && o.Initial != "high" {
			k.bad(p+".initial", "%q is not low or high", o.Initial)
		}
	}
	f := c.Fleet
	if f == nil {
		return
	}
	for key, b := range map[string]string{"fleet.config_bucket": f.ConfigBucket, "fleet.status_bucket": f.StatusBucket} {
		if !ValidID(b) {
			k.bad(key, "%q is not a bucket name (letters, digits, '-' and '_')", b)
		}
	}
	if f.Heartbeat < time.Second {
		k.bad("fleet.heartbeat", "%s is under 1s", f.Heartbeat)
	}
	if f.Health.Timeout < time.Second {
		k.bad("fleet.health.timeout", "%s is under 1s", f.Health.Timeout)
	}
}

// Overlay is one layer of fleet config: a YAML document in the config's
// schema, laid over the file (docs/fleet.md, "How overlays merge").
type Overlay struct {
	Name     string // "defaults" or "gw.<id>", for messages
	Revision uint64 // the KV revision, 0 for none
	Data     []byte
}

// node parses the overlay with its lines counted from base; nil for an
// empty one.
func (ov Overlay) node(base int) (*yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(ov.Data, &doc); err != nil {
		return nil, err
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	n := doc.Content[0]
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil, nil
	}
	if n.Kind != yaml.MappingNode {
		return nil, errors.New("an overlay is a YAML mapping in the config's schema, such as \"upstream: {window: 256}\"")
	}
	shiftLines(n, base)
	return n, nil
}

func shiftLines(n *yaml.Node, base int) {
	n.Line += base
	for _, c := range n.Content {
		shiftLines(c, base)
	}
}

// mergeYAML lays over onto base: a mapping merges key by key, recursively;
// a list or a value replaces what base has; a null removes the key (back
// to the default).
func mergeYAML(base, over *yaml.Node) {
	if base.Kind != yaml.MappingNode || over.Kind != yaml.MappingNode {
		*base = *over
		return
	}
	for i := 0; i+1 < len(over.Content); i += 2 {
		k, v := over.Content[i], over.Content[i+1]
		j := mappingIndex(base, k.Value)
		switch {
		case v.Kind == yaml.ScalarNode && v.Tag == "!!null":
			if j >= 0 {
				base.Content = append(base.Content[:j], base.Content[j+2:]...)
			}
		case j < 0:
			base.Content = append(base.Content, k, v)
		case base.Content[j+1].Kind == yaml.MappingNode && v.Kind == yaml.MappingNode:
			mergeYAML(base.Content[j+1], v)
		default:
			base.Content[j+1] = v
		}
	}
}

func mappingIndex(m *yaml.Node, key string) int {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return i
		}
	}
	return -1
}

// WithOverlays is the effective config: this config's file, then each
// overlay in order, checked as config check does. An overlay may not
// change what names the box or holds its data (gateway.id,
// gateway.data_dir, buffer.path) nor the fleet section (the control
// connection): those are problems at their key paths.
func (c *Config) WithOverlays(overlays ...Overlay) (*Config, error) {
	if c.src == nil {
		return nil, errors.New("config: not read from a file, so overlays cannot be laid over it")
	}
	eff, err := parseLayers(c.src, overlays)
	if err != nil {
		return nil, err
	}
	ce := &Error{File: c.src.name}
	for _, ov := range overlays {
		ce.layers = append(ce.layers, ov.Name)
	}
	refuse := func(path, why string) {
		ce.Problems = append(ce.Problems, Problem{Path: path, Source: "fleet", Msg: "cannot be changed remotely: " + why + "; change it in the local file"})
	}
	if eff.Gateway.ID != c.Gateway.ID {
		refuse("gateway.id", "it names this box's subjects, message ids, keys and permissions")
	}
	if eff.Gateway.DataDir != c.Gateway.DataDir {
		refuse("gateway.data_dir", "the buffer and the last known good config are there")
	}
	if eff.Buffer.Path != c.Buffer.Path {
		refuse("buffer.path", "the backlog is in the file it names")
	}
	if !reflect.DeepEqual(eff.Fleet, c.Fleet) {
		refuse("fleet", "a wrong bucket or check would cut the box off from the fleet")
	}
	if len(ce.Problems) > 0 {
		return nil, ce
	}
	return eff, nil
}

package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

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
	// Source is the fleet overlay the line is in (docs/fleet.md), or
	// empty for the config file.
	Source string

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
				want = "a duration like 30s, 5m, 2h or 7d"
			case "int", "int64", "uint16", "uint64", "float64", "byte", "uint8":
				want = "a number"
			case "bool":
				want = "true or false"
			}
			got := strings.TrimPrefix(text[i:j], "cannot unmarshal ")
			text = "not " + want
			if v := strings.Index(got, "`"); v >= 0 {
				text = fmt.Sprintf("%q is %s", strings.Trim(got[v:], "`"), text) // the value, as yaml quoted it
			} else if strings.HasPrefix(got, "!!seq") || strings.HasPrefix(got, "!!map") {
				text = "a list or a map is " + text
			}
		}
	}
	return Problem{Path: path, Line: line, Msg: text}
}

func (p Problem) String() string {
	if p.Source != "" && p.Line > 0 {
		return fmt.Sprintf("%s (%s line %d): %s", p.Path, p.Source, p.Line, p.Msg)
	}
	if p.Source != "" {
		return fmt.Sprintf("%s (%s): %s", p.Path, p.Source, p.Msg)
	}
	if p.Line > 0 {
		return fmt.Sprintf("%s (line %d): %s", p.Path, p.Line, p.Msg)
	}
	return fmt.Sprintf("%s: %s", p.Path, p.Msg)
}

// Error lists every problem found in a config.
type Error struct {
	File     string
	Problems []Problem

	layers []string // the overlays laid over File, in order
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "config %s", e.File)
	for _, l := range e.layers {
		fmt.Fprintf(&b, " + %s", l)
	}
	fmt.Fprintf(&b, ": %d problem(s)", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Load reads, expands, checks and completes a config file. Every
// problem is reported at once, in a *Error.
func Load(path string) (*Config, error) {
	return LoadWith(path, LoadOptions{})
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

// LoadWith is Load with options.
func LoadWith(path string, o LoadOptions) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if o.Lookup == nil {
		o.Lookup = os.LookupEnv
	}
	return parseConfig(path, data, o)
}

// Parse is Load on bytes; lookup resolves ${VAR} references.
func Parse(name string, data []byte, lookup func(string) (string, bool)) (*Config, error) {
	return parseConfig(name, data, LoadOptions{Lookup: lookup})
}

func parseConfig(name string, data []byte, o LoadOptions) (*Config, error) {
	return parseLayers(&configSource{name: name, data: data, o: o}, nil)
}

// configSource is a config file as read, kept so that fleet overlays can
// be laid over it again (docs/fleet.md).
type configSource struct {
	name string
	data []byte
	o    LoadOptions
}

// layerLines sets each overlay's lines apart from the file's: overlay i
// counts its lines from (i+1)*layerLines, so a problem's line says where.
const layerLines = 1_000_000

// parseLayers parses the file, lays each overlay over it (mergeYAML), and
// then expands, decodes, completes and checks the result as one config.
func parseLayers(src *configSource, overlays []Overlay) (*Config, error) {
	o := src.o
	if o.Lookup == nil {
		o.Lookup = os.LookupEnv
	}
	ce := &Error{File: src.name}
	var root yaml.Node
	if err := yaml.Unmarshal(src.data, &root); err != nil {
		ce.Problems = append(ce.Problems, Problem{Path: "(file)", Msg: err.Error()})
		return nil, ce
	}
	if len(root.Content) == 0 {
		ce.Problems = append(ce.Problems, Problem{Path: "(file)", Msg: "empty config; see configs/edgegw.yaml"})
		return nil, ce
	}
	for i, ov := range overlays {
		ce.layers = append(ce.layers, ov.Name)
		n, err := ov.node((i + 1) * layerLines)
		if err != nil {
			ce.Problems = append(ce.Problems, Problem{Path: "(" + ov.Name + ")", Msg: err.Error()})
			continue
		}
		if n != nil {
			mergeYAML(root.Content[0], n)
		}
	}
	if len(ce.Problems) > 0 {
		return nil, ce
	}
	lines := map[string]int{}
	walk(root.Content[0], "", reflect.TypeOf(Config{}), lines, o.Lookup, ce)
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
	for i := range ce.Problems {
		if p := &ce.Problems[i]; p.Line >= layerLines && p.Line/layerLines <= len(ce.layers) {
			p.Source = ce.layers[p.Line/layerLines-1]
			p.Line %= layerLines
		}
	}
	if len(ce.Problems) > 0 {
		return nil, ce
	}
	cfg.src = src
	return &cfg, nil
}

var envRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// walk records each key's line, reports unknown keys, and expands
// ${VAR} and ${VAR:-default} in scalar values (never in keys, and never
// into YAML structure: a value stays one value).
func walk(n *yaml.Node, path string, t reflect.Type, lines map[string]int, lookup func(string) (string, bool), ce *Error) {
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
					ce.Problems = append(ce.Problems, Problem{Path: p, Line: k.Line, Msg: unknownKey(t, k.Value)})
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
		if !expand(n, path, lookup, ce) || t != durationType || n.Tag == "!!null" {
			return
		}
		d, err := ParseDuration(n.Value)
		if err != nil {
			ce.Problems = append(ce.Problems, Problem{Path: path, Line: n.Line, Msg: err.Error()})
		}
		n.Value, n.Tag, n.Style = d.String(), "!!str", 0 // what yaml decodes into a time.Duration
	}
}

// expand replaces ${VAR} and ${VAR:-default} in a scalar's value, and
// says whether every variable was there.
func expand(n *yaml.Node, path string, lookup func(string) (string, bool), ce *Error) bool {
	if !strings.Contains(n.Value, "${") {
		return true
	}
	ok := true
	n.Value = envRE.ReplaceAllStringFunc(n.Value, func(ref string) string {
		m := envRE.FindStringSubmatch(ref)
		if v, ok := lookup(m[1]); ok {
			return v
		}
		if m[2] != "" {
			return m[3]
		}
		ok = false
		ce.Problems = append(ce.Problems, Problem{Path: path, Line: n.Line, unset: true, Msg: fmt.Sprintf("environment variable %s is not set (in the environment, or the env file: --env-file, default /etc/edgegw/edgegw.env; or use ${%s:-default} for a default)", m[1], m[1])})
		return ""
	})
	if n.Tag == "!!str" && n.Style == 0 {
		n.Tag = "" // let the expanded value resolve as a number or bool
	}
	return ok
}

var durationType = reflect.TypeOf(time.Duration(0))

var daysRE = regexp.MustCompile(`^\s*(-?)([0-9]+(?:\.[0-9]+)?)d(.*)$`)

// ParseDuration reads a duration as time.ParseDuration does, and days too,
// as Prometheus and Telegraf users write them: 7d, 1d12h, 1.5d.
func ParseDuration(s string) (time.Duration, error) {
	bad := fmt.Errorf("%q is not a duration like 30s, 5m, 2h or 7d", s)
	if m := daysRE.FindStringSubmatch(s); m != nil {
		days, err := strconv.ParseFloat(m[2], 64)
		if err != nil || days > 100_000 {
			return 0, bad
		}
		d := time.Duration(days * float64(24*time.Hour))
		if rest := strings.TrimSpace(m[3]); rest != "" {
			r, err := time.ParseDuration(rest)
			if err != nil || r < 0 {
				return 0, bad
			}
			d += r
		}
		if m[1] == "-" {
			d = -d
		}
		return d, nil
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, bad
	}
	return d, nil
}

func fieldByTag(t reflect.Type, key string) (reflect.Type, bool) {
	for i := 0; i < t.NumField(); i++ {
		tag := strings.Split(t.Field(i).Tag.Get("yaml"), ",")
		if tag[0] == key {
			return t.Field(i).Type, true
		}
		if len(tag) > 1 && tag[1] == "inline" && t.Field(i).Type.Kind() == reflect.Struct {
			if ft, ok := fieldByTag(t.Field(i).Type, key); ok {
				return ft, true
			}
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

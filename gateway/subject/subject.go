// Package subject holds the rules for NATS subjects in edgegw: the
// templates that map MQTT topics and sensors to subjects (with the escaping
// that keeps any topic inside its template), what may be published to,
// and whether a stream's subjects capture a filter. The config check, the
// MQTT source and the forwarder all use it.
package subject

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MaxSubjectLen bounds a mapped subject. NATS carries the subject in a
// protocol line of at most 4096 bytes by default; an MQTT topic may be
// 65,535 bytes, and escaping can triple it.
const MaxSubjectLen = 1024

// A Template maps MQTT topics to NATS subjects. It is a dot-separated list
// of tokens; a token is a literal or one of the placeholders:
//
//	{gateway}  the gateway id
//	{topic}    every level of the topic, one NATS token each
//	{levelN}   the Nth level of the topic (N from 1)
//
// for example "telemetry.{gateway}.{topic}". Each level is escaped by
// EscapeLevel, so no topic can produce a wildcard, an empty token, or a
// subject outside the template, and different topics give different
// subjects.
type Template struct {
	src   string
	parts []part
}

type part struct {
	lit   string // a literal token, or the gateway id
	topic bool   // {topic}
	level int    // {levelN}, N >= 1
}

// ParseTemplate checks tmpl and binds {gateway} to gatewayID.
func ParseTemplate(tmpl, gatewayID string) (*Template, error) {
	if tmpl == "" {
		return nil, errors.New("subject template is empty")
	}
	t := &Template{src: tmpl}
	topics := 0
	for i, tok := range strings.Split(tmpl, ".") {
		switch {
		case tok == "{gateway}":
			if !safeToken(gatewayID) {
				return nil, fmt.Errorf("gateway id %q cannot be a NATS token: use letters, digits, '-' and '_'", gatewayID)
			}
			t.parts = append(t.parts, part{lit: gatewayID})
		case tok == "{topic}":
			topics++
			t.parts = append(t.parts, part{topic: true})
		case strings.HasPrefix(tok, "{level") && strings.HasSuffix(tok, "}"):
			n, err := strconv.Atoi(tok[len("{level") : len(tok)-1])
			if err != nil || n < 1 || n > 64 {
				return nil, fmt.Errorf("subject template %q: token %d %q: use {level1} to {level64}", tmpl, i+1, tok)
			}
			t.parts = append(t.parts, part{level: n})
		case strings.ContainsAny(tok, "{}"):
			return nil, fmt.Errorf("subject template %q: token %d %q: placeholders are {gateway}, {topic} and {levelN}, each a whole token", tmpl, i+1, tok)
		case !literalToken(tok):
			return nil, fmt.Errorf("subject template %q: token %d %q is not a NATS subject token (empty, a wildcard, or has whitespace)", tmpl, i+1, tok)
		default:
			t.parts = append(t.parts, part{lit: tok})
		}
	}
	if topics > 1 {
		return nil, fmt.Errorf("subject template %q: {topic} may appear once", tmpl)
	}
	if strings.HasPrefix(tmpl, "$") {
		return nil, fmt.Errorf("subject template %q: subjects starting with '$' are reserved by NATS", tmpl)
	}
	return t, nil
}

func (t *Template) String() string { return t.src }

// Filter is the NATS subject filter that matches every subject the template
// can produce: literals kept, placeholders as '*', {topic} as '>' when it is
// last.
func (t *Template) Filter() string {
	toks := make([]string, len(t.parts))
	for i, p := range t.parts {
		switch {
		case p.topic && i == len(t.parts)-1:
			toks[i] = ">"
		case p.topic:
			// {topic} spans any number of tokens: nothing after it can be
			// pinned down.
			return strings.Join(append(toks[:i], ">"), ".")
		case p.level > 0:
			toks[i] = "*"
		default:
			toks[i] = p.lit
		}
	}
	return strings.Join(toks, ".")
}

// Subject maps topic to its subject.
func (t *Template) Subject(topic string) (string, error) {
	if topic == "" {
		return "", errors.New("empty topic")
	}
	levels := strings.Split(topic, "/")
	var b strings.Builder
	for i, p := range t.parts {
		if i > 0 {
			b.WriteByte('.')
		}
		switch {
		case p.topic:
			for j, l := range levels {
				if j > 0 {
					b.WriteByte('.')
				}
				b.WriteString(EscapeLevel(l))
			}
		case p.level > 0:
			if p.level > len(levels) {
				return "", fmt.Errorf("topic %q has %d levels; the subject template %q uses {level%d}", topic, len(levels), t.src, p.level)
			}
			b.WriteString(EscapeLevel(levels[p.level-1]))
		default:
			b.WriteString(p.lit)
		}
		if b.Len() > MaxSubjectLen {
			return "", fmt.Errorf("topic of %d bytes maps to a subject longer than %d bytes", len(topic), MaxSubjectLen)
		}
	}
	return b.String(), nil
}

// EscapeLevel turns one MQTT topic level into one NATS subject token.
// Letters, digits and - _ ~ = : , @ are kept; every other byte (including
// '.', '*', '>', '%', '$', whitespace, control bytes and UTF-8) becomes %XX
// in upper-case hex; an empty level becomes "%". The mapping is injective:
// unescapeLevel (in the tests) undoes it.
func EscapeLevel(level string) string {
	if level == "" {
		return "%"
	}
	n := 0
	for i := 0; i < len(level); i++ {
		if !safeByte(level[i]) {
			n++
		}
	}
	if n == 0 {
		return level
	}
	const hex = "0123456789ABCDEF"
	out := make([]byte, 0, len(level)+2*n)
	for i := 0; i < len(level); i++ {
		c := level[i]
		if safeByte(c) {
			out = append(out, c)
		} else {
			out = append(out, '%', hex[c>>4], hex[c&15])
		}
	}
	return string(out)
}

func safeByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '_' || c == '~' || c == '=' || c == ':' || c == ',' || c == '@'
}

func safeToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !safeByte(s[i]) {
			return false
		}
	}
	return true
}

// literalToken accepts what NATS accepts in a published subject token.
func literalToken(s string) bool {
	if s == "" || s == "*" || s == ">" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// Valid reports whether s can be published to: non-empty tokens, no
// wildcards, no whitespace or control bytes.
func Valid(s string) bool {
	if s == "" || len(s) > 4096 {
		return false
	}
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "" || tok == "*" || tok == ">" {
			return false
		}
		for i := 0; i < len(tok); i++ {
			if c := tok[i]; c <= ' ' || c == 0x7f {
				return false
			}
		}
	}
	return true
}

// Covers reports whether some stream subject pattern matches every subject
// that filter matches.
func Covers(patterns []string, filter string) bool {
	for _, p := range patterns {
		if subsumes(p, filter) {
			return true
		}
	}
	return false
}

func subsumes(pattern, filter string) bool {
	pt, ft := strings.Split(pattern, "."), strings.Split(filter, ".")
	for i, p := range pt {
		if p == ">" {
			return len(ft) > i
		}
		if i >= len(ft) {
			return false
		}
		switch {
		case p == "*":
			if ft[i] == ">" {
				return false
			}
		case p != ft[i]:
			return false
		}
	}
	return len(pt) == len(ft)
}

// ForSensor fills a sensor's subject template: {gateway} and {sensor}
// (escaped like an MQTT topic level).
func ForSensor(tmpl, gatewayID, name string) (string, error) {
	if strings.Contains(tmpl, "{topic}") || strings.Contains(tmpl, "{level") {
		return "", fmt.Errorf("subject template %q: a sensor's template takes {gateway} and {sensor}", tmpl)
	}
	subj := strings.ReplaceAll(tmpl, "{sensor}", EscapeLevel(name))
	t, err := ParseTemplate(subj, gatewayID)
	if err != nil {
		return "", err
	}
	return t.Subject("x") // no topic placeholders left: the literal subject
}

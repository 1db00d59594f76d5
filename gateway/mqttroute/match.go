package mqttroute

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Match reports whether the MQTT topic filter matches topic.
func Match(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && !strings.HasPrefix(filter, "$") {
		return false // wildcards at the start never match $SYS-like topics
	}
	f, t := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, l := range f {
		if l == "#" {
			return true
		}
		if i >= len(t) || l != "+" && l != t[i] {
			return false
		}
	}
	return len(f) == len(t)
}

// ValidFilter checks an MQTT topic filter: + and # must be whole levels, # the last.
func ValidFilter(f string) error {
	if f == "" {
		return errors.New("empty topic filter")
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return fmt.Errorf("%q: '#' must be a whole level and the last", f)
		}
		if strings.Contains(l, "+") && l != "+" {
			return fmt.Errorf("%q: '+' must be a whole level", f)
		}
	}
	return nil
}

// ValidTopic checks a topic to publish to: not empty, no wildcards, no
// NUL, at most 65535 bytes.
func ValidTopic(t string) error {
	switch {
	case t == "":
		return errors.New("empty topic")
	case strings.ContainsAny(t, "+#"):
		return fmt.Errorf("%q: a topic to publish to has no wildcards", t)
	case strings.ContainsRune(t, 0) || !utf8.ValidString(t):
		return fmt.Errorf("%q: not valid UTF-8 without NUL", t)
	case len(t) > 65535:
		return errors.New("topic longer than 65535 bytes")
	}
	return nil
}

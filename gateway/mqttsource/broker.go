package mqttsource

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// refusedSubs lists the filters a SUBACK refused (return code 0x80).
func refusedSubs(t mqtt.Token) []string {
	st, ok := t.(*mqtt.SubscribeToken)
	if !ok {
		return nil
	}
	var out []string
	for topic, code := range st.Result() {
		if code == 0x80 {
			out = append(out, topic)
		}
	}
	slices.Sort(out)
	return out
}

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

func refused(err error) bool {
	return errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) ||
		errors.Is(err, packets.ErrorRefusedNotAuthorised) ||
		errors.Is(err, packets.ErrorRefusedIDRejected) ||
		errors.Is(err, packets.ErrorRefusedBadProtocolVersion)
}

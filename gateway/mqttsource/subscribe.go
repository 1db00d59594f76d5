package mqttsource

import (
	"errors"
	"slices"

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

func refused(err error) bool {
	return errors.Is(err, packets.ErrorRefusedBadUsernameOrPassword) ||
		errors.Is(err, packets.ErrorRefusedNotAuthorised) ||
		errors.Is(err, packets.ErrorRefusedIDRejected) ||
		errors.Is(err, packets.ErrorRefusedBadProtocolVersion)
}

package forward

import (
	"time"

	"github.com/nats-io/nats.go"

	"github.com/edgegw/edgegw/gateway/event"
)

// MQTTHeaders is the headers an event with p gets.
func MQTTHeaders(p *event.Properties) nats.Header {
	h := nats.Header{}
	mqttHeaders(h, &event.Event{MQTT: p}, 0, time.Now())
	return h
}

package main

import (
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/wait"
)

// The tests' view of the TELEMETRY stream.

type streamMsg struct{ id, data string }

// streamMessages is the stream's messages by Msg-Id and payload.
func streamMessages(t *testing.T, url string) []streamMsg {
	t.Helper()
	var out []streamMsg
	for _, m := range natstest.Messages(t, url) {
		out = append(out, streamMsg{id: m.Headers().Get(jetstream.MsgIDHeader), data: string(m.Data())})
	}
	return out
}

// sentinelThrough publishes "sentinel" on topic to edgegw's broker at
// brokerURL, after everything a test's devices published and had
// acknowledged, and waits (until deadline) for it in the stream. With
// upstream.drain: oldest_first the forwarder sends each lane in seq order,
// so the stream then holds everything edgegw stored before it, what would
// come twice included. After edgegw stops, drainedBuffer checks that the
// proof held. Readers of the stream skip the sentinel.
func sentinelThrough(t *testing.T, brokerURL, natsURL, topic string, deadline time.Time) {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker(brokerURL).SetClientID("sentinel").SetCleanSession(true).
		SetConnectRetry(true).SetConnectRetryInterval(50 * time.Millisecond))
	if tok := c.Connect(); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		t.Fatalf("sentinel device: %v", tok.Error())
	}
	defer c.Disconnect(100)
	if tok := c.Publish(topic, 1, false, "sentinel"); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		t.Fatalf("sentinel: %v", tok.Error())
	}
	wait.Within(t, time.Until(deadline), "the sentinel in the stream", func() bool { return natstest.Holds(t, natsURL, "sentinel") })
}

// drainedBuffer fails the test unless the buffer file of a stopped edgegw
// at path is empty: what it held would still be sent.
func drainedBuffer(t *testing.T, path string) {
	t.Helper()
	if st, err := buffer.ReadStats(path, time.Second); err != nil || st.Events != 0 {
		t.Fatalf("the stopped edgegw's buffer holds %d events (%v): the sentinel proved nothing", st.Events, err)
	}
}

package main

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegw/edgegw/gateway/natstest"
)

// The tests' view of the TELEMETRY stream.

func streamCountOK(js jetstream.JetStream) (uint64, error) {
	s, err := js.Stream(context.Background(), "TELEMETRY")
	if err != nil {
		return 0, err
	}
	info, err := s.Info(context.Background())
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}

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

package main

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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

func streamMessages(t *testing.T, js jetstream.JetStream) []streamMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := js.Stream(ctx, "TELEMETRY")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []streamMsg
	for len(out) < int(info.State.Msgs) {
		batch, err := c.Fetch(min(1000, int(info.State.Msgs)-len(out)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			out = append(out, streamMsg{id: m.Headers().Get(jetstream.MsgIDHeader), data: string(m.Data())})
		}
	}
	return out
}

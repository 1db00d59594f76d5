package mqttsource

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgegw/edgegw/gateway/event"
	"github.com/edgegw/edgegw/gateway/mqttroute"
)

// ingest commits messages in batches and acks them, in arrival order, once
// their batch is on disk. Acks are sent by a second goroutine, so the next
// batch is collected and committed while paho writes the PUBACKs of the
// last one (each is a write of its own).
func (s *Source) ingest(ctx context.Context, msgs <-chan mqtt.Message, emit event.EmitFunc) error {
	acks := make(chan []mqtt.Message, 4)
	acked := make(chan struct{})
	go func() {
		defer close(acked)
		for batch := range acks {
			for _, m := range batch {
				m.Ack()
			}
		}
	}()
	defer func() {
		close(acks)
		<-acked
	}()

	events := make([]event.Event, 0, s.o.BatchSize)
	var next mqtt.Message // taken from msgs, over the last batch's size
	drops := newDropLog(s.log)
	var lastWarn time.Time // the last "buffer refused" line
	debug := newDebugLog(s.log)
	for {
		var batch []mqtt.Message
		if batch, next = s.nextBatch(ctx, msgs, next); batch == nil {
			return nil // ctx ended
		}
		s.received.Add(uint64(len(batch)))
		now := time.Now()
		events = events[:0]
		for _, m := range batch {
			e, err := s.event(m, now)
			if errors.Is(err, mqttroute.ErrRetained) {
				continue // counted; acknowledged with the batch
			}
			if err != nil {
				drops.drop(m.Topic(), err)
				continue
			}
			events = append(events, e)
		}
		for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 5*time.Second) {
			err := emit(ctx, events...)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil // not acked: the broker keeps them
			}
			s.retries.Add(1)
			if now := time.Now(); now.Sub(lastWarn) >= time.Minute {
				// A full disk fails every retry: once, then once a minute.
				lastWarn = now
				s.log.Warn("buffer refused the batch; holding it unacknowledged at the broker and retrying (logged once a minute)", "events", len(events), "err", err, "retries", s.retries.Load())
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff + rand.N(backoff/2)):
			}
		}
		s.committed.Add(uint64(len(events)))
		if debug.enabled(ctx) {
			for _, e := range events {
				debug.line("message stored", "topic", e.Source, "subject", e.Subject, "bytes", len(e.Payload), "retained", e.Retained)
			}
		}
		acks <- batch
	}
}

// nextBatch waits for a message (next, if one was left over), then takes
// every one already waiting, up to BatchSize messages and BatchBytes; it
// returns the first that did not fit, for the next batch. nil: ctx ended.
func (s *Source) nextBatch(ctx context.Context, msgs <-chan mqtt.Message, next mqtt.Message) (batch []mqtt.Message, left mqtt.Message) {
	if next == nil {
		select {
		case next = <-msgs:
		case <-ctx.Done():
			return nil, nil
		}
	}
	batch, size := append(make([]mqtt.Message, 0, 64), next), msgSize(next)
	for len(batch) < s.o.BatchSize {
		select {
		case m := <-msgs:
			if size+msgSize(m) > s.o.BatchBytes {
				return batch, m // the first of the next batch
			}
			batch, size = append(batch, m), size+msgSize(m)
		default:
			return batch, nil
		}
	}
	return batch, nil
}

// msgSize bounds what m costs in a batch: its payload, its topic as the
// source and as the subject (escaping can triple it), and the rest of the
// event (template literals, time, lengths).
func msgSize(m mqtt.Message) int { return len(m.Payload()) + 4*len(m.Topic()) + 256 }

// event maps m to an event, or says why it is dropped.
func (s *Source) event(m mqtt.Message, now time.Time) (event.Event, error) {
	rt := s.routes.Load()
	e, err := mqttroute.Route(rt.subs, rt.maxPayload, s.o.ClientID, mqttroute.Message{
		Topic: m.Topic(), Payload: m.Payload(), QoS: m.Qos(), Retained: m.Retained(), Dup: m.Duplicate(), ID: m.MessageID(),
	}, now)
	switch {
	case err == nil:
	case errors.Is(err, mqttroute.ErrTooLarge):
		s.tooLarge.Add(1)
	case errors.Is(err, mqttroute.ErrRetained):
		s.retained.Add(1)
	default:
		s.unmappable.Add(1)
	}
	return e, err
}

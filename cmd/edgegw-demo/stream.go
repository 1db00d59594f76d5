package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// readStream counts every device reading in the stream by device and
// number, and the meter's readings.
func readStream(url string) (got map[string]int, dups, meter int, err error) {
	nc, err := nats.Connect(url)
	if err != nil {
		return nil, 0, 0, err
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := js.Stream(ctx, "TELEMETRY")
	if err != nil {
		return nil, 0, 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, 0, 0, err
	}
	c, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, 0, 0, err
	}
	got = map[string]int{}
	for read := uint64(0); read < info.State.Msgs; {
		batch, err := c.Fetch(5000, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return nil, 0, 0, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if m.Subject() == "telemetry.demo-gw."+meterName {
				meter++
				continue
			}
			var r reading
			if err := json.Unmarshal(m.Data(), &r); err != nil {
				return nil, 0, 0, fmt.Errorf("message %q: %w", m.Data(), err)
			}
			k := fmt.Sprintf("%s/%d", r.Device, r.N)
			if got[k]++; got[k] > 1 {
				dups++
			}
		}
		if n == 0 {
			return nil, 0, 0, fmt.Errorf("stream read stalled at %d of %d", read, info.State.Msgs)
		}
		read += uint64(n)
	}
	return got, dups, meter, nil
}

func startNATS(o *server.Options) (*server.Server, error) {
	cp := *o
	s, err := server.NewServer(&cp)
	if err != nil {
		return nil, err
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		return nil, fmt.Errorf("nats server not ready")
	}
	return s, nil
}

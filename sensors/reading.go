package sensors

import (
	"context"
	"time"
)

// A Reading is what a source produces: one sample of one sensor, as the
// JSON payload documented for it (Payload, EdgePayload, PulsePayload),
// stamped when it was taken.
type Reading struct {
	Sensor  string
	Time    time.Time
	Payload []byte
	// State, for a sensor that reports by exception, is what it sent
	// (LastSent, encoded): stored with the reading, in the same commit,
	// and given back at the next start (Poller.Report).
	State []byte
}

// EmitFunc hands a reading on (the gateway stores it) and returns once it
// is stored; an error means it was not: the source counts it as not
// stored, warns at most once a minute, and goes on with the next reading.
type EmitFunc func(ctx context.Context, r Reading) error

package gateway

import (
	"context"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/event"
	"github.com/edgegw/edgegw/gateway/status"
	"github.com/edgegw/edgegw/sensors"
)

// sensorRunner is what every source of the sensors package is.
type sensorRunner interface {
	Name() string
	Run(ctx context.Context, emit sensors.EmitFunc) error
	Stats() sensors.Stats
}

// sensorSource adapts a source of the sensors package, which knows nothing
// of events or subjects, to an event.Source: each reading becomes an event
// on the sensor's subject.
type sensorSource struct {
	sensorRunner
	subject string
	lane    buffer.Lane
}

var _ event.Source = sensorSource{}

func (s sensorSource) Run(ctx context.Context, emit event.EmitFunc) error {
	return s.sensorRunner.Run(ctx, func(ctx context.Context, r sensors.Reading) error {
		e := event.Event{Subject: s.subject, Source: r.Sensor, Time: r.Time, Payload: r.Payload, Priority: s.lane.Priority, TTL: s.lane.TTL}
		if r.State != nil {
			// Report by exception: what the sensor sent, kept with the
			// reading in the same commit (a mark), read back at start.
			e.Once = &event.Once{Group: reportGroup, Slot: reportSlot(r.Sensor), Token: string(r.State)}
		}
		return emit(ctx, e)
	})
}

// The marks that keep what each sensor reporting by exception last sent:
// one group, a slot per sensor.
const reportGroup = "report"

func reportSlot(sensor string) string { return "report/" + sensor }

// Report fills in a sensor's part of its status: up once it reads, what
// it could not store, its failures and the last error.
func (s sensorSource) Report(st *status.SourceStatus) {
	ss := s.Stats()
	st.Up = ss.Available
	st.NotStored, st.Errors, st.LastError = ss.NotStored, ss.Failures, ss.LastError
	st.Suppressed = ss.Suppressed
	if !ss.Available && st.LastError == "" {
		st.LastError = "not opened yet"
	}
}

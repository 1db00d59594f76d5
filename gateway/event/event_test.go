package event_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/event"
)

func TestMarshalRoundTrip(t *testing.T) {
	ts := time.Date(2026, 11, 24, 5, 0, 0, 123456789, time.UTC)
	tests := []event.Event{
		{Subject: "telemetry.gw1.sensors.lobby", Source: "sensors/lobby", Time: ts, Payload: []byte(`{"t":21.5}`)},
		{Subject: "s", Payload: nil},
		{Subject: "s", Source: "x", Time: ts, Payload: []byte{0, 1, 2, 0xff}},
		{Subject: "s.r", Source: "r", Time: ts, Payload: []byte("21.5"), Retained: true},
	}
	for _, e := range tests {
		b, err := e.Marshal(nil)
		if err != nil {
			t.Fatal(err)
		}
		var got event.Event
		if err := got.Unmarshal(b); err != nil {
			t.Fatalf("Unmarshal(%x): %v", b, err)
		}
		if got.Subject != e.Subject || got.Source != e.Source || !got.Time.Equal(e.Time) || !bytes.Equal(got.Payload, e.Payload) || got.Retained != e.Retained {
			t.Fatalf("round trip: got %+v, want %+v", got, e)
		}
	}
}

func TestUnmarshalRejectsGarbage(t *testing.T) {
	for _, b := range [][]byte{nil, {0}, {2, 0}, {2, 0x80, 0, 0, 0}, {3, 0, 0, 0}, {1}, {1, 5, 'a'}, {1, 0, 0}, {1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}} {
		var e event.Event
		if err := e.Unmarshal(b); !errors.Is(err, event.ErrMalformed) {
			t.Errorf("Unmarshal(%x): %v, want ErrMalformed", b, err)
		}
	}
}

func TestMarshalBoundsFields(t *testing.T) {
	e := event.Event{Subject: string(make([]byte, event.MaxFieldLen+1))}
	if _, err := e.Marshal(nil); err == nil {
		t.Fatal("oversized subject: no error")
	}
}

func FuzzUnmarshal(f *testing.F) {
	e := event.Event{Subject: "a.b", Source: "a/b", Time: time.Unix(1, 2), Payload: []byte("p")}
	b, _ := e.Marshal(nil)
	f.Add(b)
	f.Add([]byte{1, 0, 0, 0})
	r := event.Event{Subject: "a.b", Time: time.Unix(1, 2), Retained: true}
	rb, _ := r.Marshal(nil)
	f.Add(rb)
	f.Fuzz(func(t *testing.T, b []byte) {
		var e event.Event
		if err := e.Unmarshal(b); err != nil {
			return
		}
		// Whatever decodes must encode back to the same bytes.
		again, err := e.Marshal(nil)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", e, err)
		}
		var e2 event.Event
		if err := e2.Unmarshal(again); err != nil || e2.Subject != e.Subject || e2.Source != e.Source || !e2.Time.Equal(e.Time) || !bytes.Equal(e2.Payload, e.Payload) || e2.Retained != e.Retained {
			t.Fatalf("re-decode of %x: %+v, %v", again, e2, err)
		}
	})
}

package event_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
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
		{Subject: "s.5", Source: "r", Time: ts, Payload: []byte("21.5"), MQTT: &event.Properties{
			ContentType: "application/json", PayloadFormat: 1, PayloadFormatSet: true, Expiry: 90 * time.Second,
			User: []event.UserProperty{{Key: "unit", Value: "°C"}, {Key: "unit", Value: "K"}, {Key: "", Value: ""}, {Key: "a=b: c\r\n", Value: " x%y "}},
		}},
		{Subject: "s.5", Retained: true, MQTT: &event.Properties{PayloadFormatSet: true}},
		{Subject: "s.5", MQTT: &event.Properties{}},
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
		if got.Subject != e.Subject || got.Source != e.Source || !got.Time.Equal(e.Time) || !bytes.Equal(got.Payload, e.Payload) || got.Retained != e.Retained || !reflect.DeepEqual(got.MQTT, e.MQTT) {
			t.Fatalf("round trip: got %+v, want %+v", got, e)
		}
	}
}

// Events stored before the properties existed read as they did: these
// bytes are what Marshal wrote for a reading and a retained copy then.
func TestOldEncodingsStillRead(t *testing.T) {
	for _, c := range []struct {
		hex      string
		retained bool
	}{{"0103612e6203612f6284a8d6b907707031", false}, {"020103612e620084a8d6b907", true}} {
		b, _ := hex.DecodeString(c.hex)
		var e event.Event
		if err := e.Unmarshal(b); err != nil || e.Subject != "a.b" || e.Retained != c.retained || e.MQTT != nil {
			t.Fatalf("%s: %+v, %v", c.hex, e, err)
		}
		if again, _ := e.Marshal(nil); !bytes.Equal(again, b) {
			t.Fatalf("%s encodes now as %x", c.hex, again)
		}
	}
}

func TestExpired(t *testing.T) {
	ts := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	e := event.Event{Time: ts, MQTT: &event.Properties{Expiry: 10 * time.Second}}
	for _, c := range []struct {
		at    time.Duration
		shift time.Duration
		want  bool
	}{{9 * time.Second, 0, false}, {10 * time.Second, 0, true}, {11 * time.Second, 5 * time.Second, false}, {5 * time.Second, -5 * time.Second, true}} {
		if got := e.Expired(ts.Add(c.at), c.shift); got != c.want {
			t.Errorf("at +%s, shift %s: expired %v, want %v", c.at, c.shift, got, c.want)
		}
	}
	if (&event.Event{Time: ts, MQTT: &event.Properties{}}).Expired(ts.Add(time.Hour*24*365), 0) {
		t.Error("no expiry: expired")
	}
}

func TestUnmarshalRejectsGarbage(t *testing.T) {
	for _, b := range [][]byte{nil, {0}, {2, 0}, {2, 0x80, 0, 0, 0}, {3, 0, 0, 0}, {1}, {1, 5, 'a'}, {1, 0, 0}, {1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		{2, 2, 0, 0, 0}, {2, 2, 0, 0, 0, 0, 3}, {2, 2, 0, 0, 0, 0, 0, 0, 5, 0, 0}, {2, 2, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}} {
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
	m := event.Event{Subject: "a.b", Time: time.Unix(1, 2), MQTT: &event.Properties{ContentType: "t", PayloadFormatSet: true, Expiry: time.Second, User: []event.UserProperty{{Key: "k", Value: "v"}, {Key: "k", Value: ""}}}}
	mb, _ := m.Marshal(nil)
	f.Add(mb)
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
		if err := e2.Unmarshal(again); err != nil || e2.Subject != e.Subject || e2.Source != e.Source || !e2.Time.Equal(e.Time) || !bytes.Equal(e2.Payload, e.Payload) || e2.Retained != e.Retained || !reflect.DeepEqual(e2.MQTT, e.MQTT) {
			t.Fatalf("re-decode of %x: %+v, %v", again, e2, err)
		}
	})
}

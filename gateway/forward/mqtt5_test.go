package forward_test

import (
	"context"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/event"
	"github.com/edgegw/edgegw/gateway/forward"
	"github.com/edgegw/edgegw/gateway/natstest"
)

// An event's MQTT 5 properties go upstream as headers that read back to
// what was sent: user properties in order, repeated names, any UTF-8, '='
// and '%' in names and values; an event past its message expiry is not
// sent, and counted; one within it carries the seconds left.
func TestMQTT5PropertiesAsHeaders(t *testing.T) {
	srv := natstest.Start(t, nil)
	q, err := buffer.Open(filepath.Join(t.TempDir(), "buf.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	user := []event.UserProperty{{Key: "unit", Value: "°C"}, {Key: "unit", Value: "K"}, {Key: "", Value: ""}, {Key: "a=b: c\r\n", Value: " 50%=half "}, {Key: "schema", Value: "v2"}}
	now := time.Now()
	events := []event.Event{
		{Subject: "telemetry.gw1.kept", Time: now, Payload: []byte("21.5"), MQTT: &event.Properties{
			ContentType: "application/json; charset=utf-8", PayloadFormat: 1, PayloadFormatSet: true, Expiry: time.Hour, User: user}},
		{Subject: "telemetry.gw1.expired", Time: now.Add(-2 * time.Minute), Payload: []byte("old"), MQTT: &event.Properties{Expiry: time.Minute}},
		{Subject: "telemetry.gw1.bytes", Time: now, Payload: []byte{0xff}, MQTT: &event.Properties{PayloadFormatSet: true}},
		{Subject: "telemetry.gw1.plain", Time: now, Payload: []byte("p")},
	}
	for _, e := range events {
		b, err := e.Marshal(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := q.Append(context.Background(), b); err != nil {
			t.Fatal(err)
		}
	}
	f, err := forward.New(q, connect(t, srv.URL()), options())
	if err != nil {
		t.Fatal(err)
	}
	runForwarder(t, f, q, nil)
	if st := f.Stats(); st.Acked != 3 || st.Expired != 1 {
		t.Fatalf("stats %+v: want 3 acked and 1 expired", st)
	}
	msgs := natstest.Messages(t, srv.URL())
	if len(msgs) != 3 {
		t.Fatalf("%d messages in the stream, want 3", len(msgs))
	}
	h := msgs[0].Headers()
	if msgs[0].Subject() != "telemetry.gw1.kept" || h.Get(forward.HeaderContentType) != "application/json; charset=utf-8" || h.Get(forward.HeaderPayloadFormat) != "1" {
		t.Fatalf("first message %s: headers %v", msgs[0].Subject(), h)
	}
	if left, err := strconv.Atoi(h.Get(forward.HeaderMessageExpiry)); err != nil || left < 3000 || left > 3600 {
		t.Fatalf("expiry left %q, want about 3600", h.Get(forward.HeaderMessageExpiry))
	}
	var got []event.UserProperty
	for _, v := range h.Values(forward.HeaderUserProperty) {
		k, val, err := forward.UserProperty(v)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, event.UserProperty{Key: k, Value: val})
	}
	if !reflect.DeepEqual(got, user) {
		t.Fatalf("user properties read back as %q, want %q", got, user)
	}
	if h := msgs[1].Headers(); msgs[1].Subject() != "telemetry.gw1.bytes" || h.Get(forward.HeaderPayloadFormat) != "0" || h.Get(forward.HeaderContentType) != "" || h.Get(forward.HeaderMessageExpiry) != "" {
		t.Fatalf("second message %s: headers %v", msgs[1].Subject(), h)
	}
	for _, k := range []string{forward.HeaderContentType, forward.HeaderPayloadFormat, forward.HeaderMessageExpiry, forward.HeaderUserProperty} {
		if v := msgs[2].Headers().Values(k); len(v) != 0 {
			t.Fatalf("a reading without properties has %s: %q", k, v)
		}
	}
}

// Whatever a user property's name and value, its header reads back to
// them.
func FuzzUserPropertyHeader(f *testing.F) {
	f.Add("unit", "°C")
	f.Add("a=b", "=%00\r\n ")
	f.Add(" ", "")
	f.Fuzz(func(t *testing.T, name, value string) {
		h := forward.MQTTHeaders(&event.Properties{User: []event.UserProperty{{Key: name, Value: value}}})
		vs := h.Values(forward.HeaderUserProperty)
		if len(vs) != 1 {
			t.Fatalf("%d values", len(vs))
		}
		if s := vs[0]; s != "" && (s[0] == ' ' || s[len(s)-1] == ' ') {
			t.Fatalf("header value %q starts or ends with a space (a header line trims it)", s)
		}
		for i := 0; i < len(vs[0]); i++ {
			if c := vs[0][i]; c == '\r' || c == '\n' || c == 0 {
				t.Fatalf("header value %q has a control byte", vs[0])
			}
		}
		n, v, err := forward.UserProperty(vs[0])
		if err != nil || n != name || v != value {
			t.Fatalf("(%q, %q) read back as (%q, %q), %v", name, value, n, v, err)
		}
	})
}

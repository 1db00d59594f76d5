package gateway_test

import (
	"bytes"
	"context"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	paho5 "github.com/eclipse/paho.golang/paho"
	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgegw/edgegw/gateway/forward"
	"github.com/edgegw/edgegw/gateway/natstest"
	"github.com/edgegw/edgegw/gateway/wait"
)

// v5 is an MQTT 5 client of the embedded broker whose received messages
// arrive on msgs.
type v5 struct {
	c    *paho5.Client
	msgs chan *paho5.Publish
	ctx  context.Context
}

func newV5(t *testing.T, url, id string) *v5 {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "tcp://"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	m := &v5{msgs: make(chan *paho5.Publish, 100), ctx: ctx}
	m.c = paho5.NewClient(paho5.ClientConfig{ClientID: id, Conn: conn, OnPublishReceived: []func(paho5.PublishReceived) (bool, error){
		func(r paho5.PublishReceived) (bool, error) { m.msgs <- r.Packet; return true, nil },
	}})
	if ca, err := m.c.Connect(ctx, &paho5.Connect{ClientID: id, KeepAlive: 30, CleanStart: true}); err != nil || ca.ReasonCode != 0 {
		t.Fatalf("%s: connect: %v %+v", id, err, ca)
	}
	t.Cleanup(func() { m.c.Disconnect(&paho5.Disconnect{}) })
	return m
}

func (m *v5) subscribe(t *testing.T, o paho5.SubscribeOptions, id int) {
	t.Helper()
	s := &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{o}}
	if id > 0 {
		s.Properties = &paho5.SubscribeProperties{SubscriptionIdentifier: &id}
	}
	if sa, err := m.c.Subscribe(m.ctx, s); err != nil || len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80 {
		t.Fatalf("subscribe %+v: %v %+v", o, err, sa)
	}
	// mochi sends the retained messages after the SUBACK; it handles a
	// client's packets in order, so a second SUBACK says they were looked
	// up (a message retained from now on arrives live only).
	if _, err := m.c.Subscribe(m.ctx, &paho5.Subscribe{Subscriptions: []paho5.SubscribeOptions{{Topic: "test/barrier", QoS: 0}}}); err != nil {
		t.Fatal(err)
	}
}

func (m *v5) publish(t *testing.T, p *paho5.Publish) {
	t.Helper()
	if r, err := m.c.Publish(m.ctx, p); err != nil || (r != nil && r.ReasonCode >= 0x80) {
		t.Fatalf("publish %s: %v %+v", p.Topic, err, r)
	}
}

// next is the next message m received: the test fails after two minutes
// without one (every check below waits for a message that must come,
// never for time).
func (m *v5) next(t *testing.T) *paho5.Publish {
	t.Helper()
	select {
	case p := <-m.msgs:
		return p
	case <-m.ctx.Done():
		t.Fatal("no message")
		return nil
	}
}

// MQTT 5 kept whole through edgegw's broker, for topics routed into the
// buffer (sensors/...) and topics that are not (local/...): every PUBLISH
// property reaches a local subscriber as sent (user properties in order,
// content type, payload format, response topic, correlation data, the
// expiry counted down, never up); no local, retain as published, retain
// handling and subscription identifiers work; a retained message keeps its
// properties; a topic alias is resolved. Routed, the stream gets content
// type, payload format and user properties as headers.
func TestMQTT5KeptWhole(t *testing.T) {
	srv := natstest.Start(t, nil)
	cfg, url := serverConfigFor(t, srv.URL(), "    allow_anonymous: true", "")
	startGateway(t, cfg)
	pub := newV5(t, url, "pub")
	sub := newV5(t, url, "sub")
	old := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("sub-3.1.1"))
	if tok := old.Connect(); !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	defer old.Disconnect(100)
	oldMsgs := make(chan paho.Message, 100)
	old.Subscribe("#", 1, func(_ paho.Client, m paho.Message) { oldMsgs <- m }).WaitTimeout(time.Minute)

	pf, expiry := byte(1), uint32(3600)
	props := func() *paho5.PublishProperties {
		return &paho5.PublishProperties{
			ContentType: "application/json", PayloadFormat: &pf, ResponseTopic: "replies/pub", CorrelationData: []byte{0, 1, 0xff},
			MessageExpiry: &expiry, User: paho5.UserProperties{{Key: "unit", Value: "°C"}, {Key: "unit", Value: "K"}, {Key: "a=b", Value: " 50% "}},
		}
	}
	for _, prefix := range []string{"sensors/", "local/"} {
		t.Run(strings.TrimSuffix(prefix, "/"), func(t *testing.T) {
			sub.subscribe(t, paho5.SubscribeOptions{Topic: prefix + "p/#", QoS: 2}, 7)
			for qos := byte(1); qos <= 2; qos++ {
				pub.publish(t, &paho5.Publish{Topic: prefix + "p/temp", QoS: qos, Payload: []byte(`{"t":21.5}`), Properties: props()})
				got := sub.next(t)
				want := props()
				if got.Topic != prefix+"p/temp" || got.QoS != qos || got.Retain || !bytes.Equal(got.Payload, []byte(`{"t":21.5}`)) {
					t.Fatalf("QoS %d: got %s QoS %d retain %v %q", qos, got.Topic, got.QoS, got.Retain, got.Payload)
				}
				gp := got.Properties
				if gp == nil || gp.ContentType != want.ContentType || gp.PayloadFormat == nil || *gp.PayloadFormat != 1 || gp.ResponseTopic != want.ResponseTopic ||
					!bytes.Equal(gp.CorrelationData, want.CorrelationData) || !reflect.DeepEqual(gp.User, want.User) {
					t.Fatalf("QoS %d: properties %+v, want %+v", qos, gp, want)
				}
				if gp.MessageExpiry == nil || *gp.MessageExpiry == 0 || *gp.MessageExpiry > expiry {
					t.Fatalf("QoS %d: expiry %v, want 1..%d", qos, gp.MessageExpiry, expiry)
				}
				if gp.SubscriptionIdentifier == nil || *gp.SubscriptionIdentifier != 7 {
					t.Fatalf("QoS %d: subscription identifier %v, want 7", qos, gp.SubscriptionIdentifier)
				}
				if m := <-oldMsgs; m.Topic() != prefix+"p/temp" || string(m.Payload()) != `{"t":21.5}` {
					t.Fatalf("3.1.1 subscriber: %s %q", m.Topic(), m.Payload())
				}
			}

			// A topic alias is resolved: its first use sets it, the next
			// sends none.
			alias := uint16(3)
			pub.publish(t, &paho5.Publish{Topic: prefix + "p/alias", QoS: 1, Payload: []byte("a1"), Properties: &paho5.PublishProperties{TopicAlias: &alias}})
			pub.publish(t, &paho5.Publish{QoS: 1, Payload: []byte("a2"), Properties: &paho5.PublishProperties{TopicAlias: &alias}})
			for _, p := range []string{"a1", "a2"} {
				if got := sub.next(t); got.Topic != prefix+"p/alias" || string(got.Payload) != p {
					t.Fatalf("alias: got %s %q, want %s %q", got.Topic, got.Payload, prefix+"p/alias", p)
				}
				<-oldMsgs
			}

			// No local: the publisher's own subscription skips what it
			// sends; another client's message still arrives.
			pub.subscribe(t, paho5.SubscribeOptions{Topic: prefix + "nl", QoS: 1, NoLocal: true}, 0)
			pub.publish(t, &paho5.Publish{Topic: prefix + "nl", QoS: 1, Payload: []byte("own")})
			sub.publish(t, &paho5.Publish{Topic: prefix + "nl", QoS: 1, Payload: []byte("other")})
			if got := pub.next(t); string(got.Payload) != "other" {
				t.Fatalf("no local: the publisher got %q first, want only \"other\"", got.Payload)
			}
			<-oldMsgs
			<-oldMsgs

			// A retained message, with its properties: retain as
			// published keeps the flag on live delivery, its absence
			// clears it; a later subscriber gets it with its properties
			// (retain handling 0), or not at all (retain handling 2).
			rap := newV5(t, url, "rap-"+prefix[:1])
			rap.subscribe(t, paho5.SubscribeOptions{Topic: prefix + "r", QoS: 1, RetainAsPublished: true}, 0)
			plain := newV5(t, url, "plain-"+prefix[:1])
			plain.subscribe(t, paho5.SubscribeOptions{Topic: prefix + "r", QoS: 1}, 0)
			pub.publish(t, &paho5.Publish{Topic: prefix + "r", QoS: 1, Retain: true, Payload: []byte("on"), Properties: props()})
			if got := rap.next(t); !got.Retain || string(got.Payload) != "on" {
				t.Fatalf("retain as published: retain %v %q", got.Retain, got.Payload)
			}
			if got := plain.next(t); got.Retain {
				t.Fatal("without retain as published: the live copy has RETAIN")
			}
			<-oldMsgs
			late := newV5(t, url, "late-"+prefix[:1])
			late.subscribe(t, paho5.SubscribeOptions{Topic: prefix + "r", QoS: 1}, 0)
			got := late.next(t)
			if !got.Retain || string(got.Payload) != "on" || got.Properties == nil || got.Properties.ContentType != "application/json" || !reflect.DeepEqual(got.Properties.User, props().User) {
				t.Fatalf("retained copy: retain %v %q %+v", got.Retain, got.Payload, got.Properties)
			}
			never := newV5(t, url, "never-"+prefix[:1])
			never.subscribe(t, paho5.SubscribeOptions{Topic: prefix + "r", QoS: 1, RetainHandling: 2}, 0)
			pub.publish(t, &paho5.Publish{Topic: prefix + "r", QoS: 1, Payload: []byte("live")})
			if got := never.next(t); got.Retain || string(got.Payload) != "live" {
				t.Fatalf("retain handling 2: got %q (retain %v) first, want the live message", got.Payload, got.Retain)
			}
			for i, c := range []*v5{rap, plain, late} {
				if got := c.next(t); string(got.Payload) != "live" {
					t.Fatalf("after the retained copy: %q (retain %v, client %d)", got.Payload, got.Retain, i)
				}
			}
			<-oldMsgs
		})
	}

	if t.Failed() {
		return
	}
	// Upstream: the routed messages carry their properties as headers.
	wait.For(t, "the routed messages upstream", func() bool { return natstest.Holds(t, srv.URL(), "live") })
	found := 0
	for _, m := range natstest.Messages(t, srv.URL()) {
		if m.Subject() != "telemetry.gw1.sensors.p.temp" {
			continue
		}
		found++
		h := m.Headers()
		var user []paho5.UserProperty
		for _, v := range h.Values(forward.HeaderUserProperty) {
			k, val, err := forward.UserProperty(v)
			if err != nil {
				t.Fatal(err)
			}
			user = append(user, paho5.UserProperty{Key: k, Value: val})
		}
		if h.Get(forward.HeaderContentType) != "application/json" || h.Get(forward.HeaderPayloadFormat) != "1" || h.Get(forward.HeaderMessageExpiry) == "" || !reflect.DeepEqual(paho5.UserProperties(user), props().User) {
			t.Fatalf("upstream headers %v", h)
		}
	}
	if found != 2 {
		t.Fatalf("%d routed readings with properties upstream, want 2", found)
	}
}

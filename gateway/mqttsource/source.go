// Package mqttsource ingests readings from an MQTT broker with paho.
//
// The session is persistent (clean session off, a stable client id), so the
// broker keeps QoS 1/2 messages while the gateway is down, and acks are
// manual: a message is PUBACKed only after the buffer has committed it, in
// the order the messages arrived. Messages are taken in batches, one buffer
// commit per batch, so the fsync is shared. A redelivered copy of a message
// that was committed but whose PUBACK never reached the broker (a crash in
// between) is recognised by its packet id and a hash of its topic and
// payload, in the buffer's own transaction, and not stored twice.
package mqttsource

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/edgegw/edgegw/gateway/event"
	"github.com/edgegw/edgegw/gateway/mqttroute"
	"github.com/edgegw/edgegw/gateway/secret"
	"github.com/edgegw/edgegw/gateway/tlsclient"
)

// Options configure a Source.
type Options struct {
	Broker   string // tcp://host:1883 or ssl://host:8883
	ClientID string // stable across restarts; the broker keeps the session under it
	Username string
	Password string
	// TLS: CAFile verifies the broker, CertFile/KeyFile is a client cert.
	CAFile, CertFile, KeyFile string

	Subscriptions []mqttroute.Subscription
	MaxPayload    int // bytes; larger messages are acked, dropped and counted
	// BatchSize caps the messages committed together (default 4096).
	BatchSize int
	// BatchBytes caps their size, topics and payloads (default 4 MiB): a
	// batch must fit the buffer's max_bytes, or it could never be stored.
	// A single message is taken alone whatever its size.
	BatchBytes int
	Logger     *slog.Logger
}

// Stats are the source's counters since New.
type Stats struct {
	Connected  bool
	Subscribed bool   // the broker granted the subscriptions (SUBACK) on this connection
	Received   uint64 // messages taken from the broker
	Committed  uint64 // events handed to the buffer and acked
	TooLarge   uint64 // over MaxPayload, dropped
	Unmappable uint64 // no subject for the topic, dropped
	Retained   uint64 // retained copies sent on (re)subscribe, skipped
	Retries    uint64 // commits that failed and were retried (buffer full, disk)
}

// Source subscribes to an MQTT broker and emits its messages as events.
type Source struct {
	o      Options
	log    *slog.Logger
	tlsCfg *tls.Config

	connected, subscribed                              atomic.Bool
	client                                             atomic.Pointer[mqtt.Client] // Run's, for Publish and Reroute
	routes                                             atomic.Pointer[routes]
	received, committed, tooLarge, unmappable, retries atomic.Uint64
	retained                                           atomic.Uint64
}

var _ event.Source = (*Source)(nil)

// New checks o; it connects nothing.
func New(o Options) (*Source, error) {
	if o.Broker == "" {
		return nil, errors.New("mqtt: broker is empty; e.g. tcp://127.0.0.1:1883")
	}
	if o.ClientID == "" {
		return nil, errors.New("mqtt: client_id is empty; it must be stable so the broker keeps the session")
	}
	if err := checkSubscriptions(o.Subscriptions); err != nil {
		return nil, err
	}
	if o.MaxPayload <= 0 {
		o.MaxPayload = mqttroute.DefaultMaxPayload
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 4096
	}
	if o.BatchBytes <= 0 {
		o.BatchBytes = 4 << 20
	}
	s := &Source{o: o, log: o.Logger}
	s.routes.Store(&routes{o.Subscriptions, o.MaxPayload})
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("source", "mqtt", "broker", secret.URL(o.Broker))
	if o.CAFile != "" || o.CertFile != "" {
		cfg, err := tlsclient.Config(o.CAFile, o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("mqtt: tls.%w", err)
		}
		s.tlsCfg = cfg
	}
	return s, nil
}

// Name is "mqtt".
func (s *Source) Name() string { return "mqtt" }

// Stats returns the counters.
func (s *Source) Stats() Stats {
	return Stats{
		Connected:  s.connected.Load(),
		Subscribed: s.subscribed.Load(),
		Received:   s.received.Load(),
		Committed:  s.committed.Load(),
		TooLarge:   s.tooLarge.Load(),
		Unmappable: s.unmappable.Load(),
		Retained:   s.retained.Load(),
		Retries:    s.retries.Load(),
	}
}

// Run connects, subscribes and emits until ctx ends. It returns an error
// only when the broker refuses the credentials or client id; a broker that
// is down is retried forever.
func (s *Source) Run(ctx context.Context, emit event.EmitFunc) error {
	msgs := make(chan mqtt.Message, s.o.BatchSize)
	handler := func(_ mqtt.Client, m mqtt.Message) {
		// Runs on paho's router goroutine, one message at a time, in
		// order. Blocking here is the backpressure: paho stops reading and
		// the broker holds the rest.
		select {
		case msgs <- m:
		case <-ctx.Done(): // not acked: the broker sends it again
		}
	}
	// Each (re)connect waits for its SUBACK on a goroutine of its own, so
	// that paho's OnConnect does not block; Run waits for them to end.
	var subWaits sync.WaitGroup
	subscribe := func(c mqtt.Client) { s.subscribe(c, &subWaits) }
	opts := mqtt.NewClientOptions().
		AddBroker(s.o.Broker).
		SetClientID(s.o.ClientID).
		SetCleanSession(false).
		SetAutoAckDisabled(true).
		SetOrderMatters(true).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(10 * time.Second).
		SetConnectRetryInterval(2 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetDefaultPublishHandler(handler).
		SetOnConnectHandler(func(c mqtt.Client) {
			s.connected.Store(true)
			s.log.Info("connected to the broker")
			subscribe(c)
		}).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			s.connected.Store(false)
			s.subscribed.Store(false)
			s.log.Warn("lost the broker; reconnecting", "err", err)
		})
	if s.o.Username != "" {
		opts.SetUsername(s.o.Username).SetPassword(s.o.Password)
	}
	if s.tlsCfg != nil {
		opts.SetTLSConfig(s.tlsCfg)
	}

	// First attempt without retry, so a refused login is an error now.
	c := mqtt.NewClient(opts)
	t := c.Connect()
	t.WaitTimeout(10 * time.Second)
	if err := t.Error(); err != nil {
		if refused(err) {
			return fmt.Errorf("mqtt: broker %s refused the connection: %w (check mqtt.username, mqtt.password and mqtt.client_id)", secret.URL(s.o.Broker), err)
		}
		if tlsclient.Untrusted(err) {
			return fmt.Errorf("mqtt: broker %s: its TLS certificate does not verify: %w (check mqtt.tls.ca_file, and that the certificate names the host in mqtt.broker)", secret.URL(s.o.Broker), err)
		}
		s.log.Warn("broker unreachable; retrying in the background", "err", err)
		c = mqtt.NewClient(opts.SetConnectRetry(true))
		c.Connect()
	}
	s.client.Store(&c)
	defer func() {
		s.client.Store(nil)
		c.Disconnect(250) // completes pending tokens: the SUBACK waits end
		subWaits.Wait()
		s.connected.Store(false)
		s.subscribed.Store(false)
	}()
	return s.ingest(ctx, msgs, emit)
}

func checkSubscriptions(subs []mqttroute.Subscription) error {
	if len(subs) == 0 {
		return errors.New("mqtt: no subscriptions")
	}
	for i, s := range subs {
		if err := mqttroute.ValidFilter(s.Topic); err != nil {
			return fmt.Errorf("mqtt: subscriptions[%d].topic: %w", i, err)
		}
		if s.QoS > 2 {
			return fmt.Errorf("mqtt: subscriptions[%d].qos: %d is not 0, 1 or 2", i, s.QoS)
		}
		if s.Subject == nil {
			return fmt.Errorf("mqtt: subscriptions[%d].subject is missing", i)
		}
	}
	return nil
}

// routes are the subscriptions and the payload limit, which Reroute
// changes while the source runs.
type routes struct {
	subs       []mqttroute.Subscription
	maxPayload int
}

// Reroute changes the subscriptions and the payload limit of a running
// source without reconnecting (a reconnect makes the broker hand the
// session over, and some brokers lose messages doing it): filters that
// are new or whose QoS changed are subscribed, filters no longer listed
// are unsubscribed. A message already received on a filter that is gone
// has no route: it is counted as unmappable and acknowledged.
func (s *Source) Reroute(subs []mqttroute.Subscription, maxPayload int) error {
	if err := checkSubscriptions(subs); err != nil {
		return err
	}
	if maxPayload <= 0 {
		maxPayload = mqttroute.DefaultMaxPayload
	}
	old := s.routes.Swap(&routes{subs, maxPayload})
	c := s.client.Load()
	if c == nil || !s.connected.Load() {
		return nil // the next connect subscribes to the new routes
	}
	was := map[string]byte{}
	for _, sub := range old.subs {
		was[sub.Topic] = sub.QoS
	}
	add := map[string]byte{}
	for _, sub := range subs {
		if q, ok := was[sub.Topic]; !ok || q != sub.QoS {
			add[sub.Topic] = sub.QoS
		}
		delete(was, sub.Topic)
	}
	var drop []string
	for topic := range was {
		drop = append(drop, topic)
	}
	if len(add) > 0 {
		t := (*c).SubscribeMultiple(add, nil)
		if !t.WaitTimeout(30 * time.Second) {
			return errors.New("mqtt: no SUBACK for the new subscriptions within 30s")
		}
		if err := t.Error(); err != nil {
			return fmt.Errorf("mqtt: subscribe: %w", err)
		}
		if refused := refusedSubs(t); len(refused) > 0 {
			return fmt.Errorf("mqtt: the broker refused subscriptions %v (check its ACL for this user)", refused)
		}
	}
	if len(drop) > 0 {
		t := (*c).Unsubscribe(drop...)
		if t.WaitTimeout(30*time.Second) && t.Error() != nil {
			return fmt.Errorf("mqtt: unsubscribe: %w", t.Error())
		}
	}
	s.log.Info("subscriptions changed", "subscribed", len(add), "unsubscribed", len(drop))
	return nil
}

// Publish sends a message to the site's broker (a downlink to devices),
// waiting up to 10s for the broker's acknowledgement at QoS 1 and 2.
func (s *Source) Publish(topic string, payload []byte, retain bool, qos byte) error {
	if err := mqttroute.ValidTopic(topic); err != nil {
		return err
	}
	c := s.client.Load()
	if c == nil || !s.connected.Load() {
		return errors.New("not connected to the broker")
	}
	t := (*c).Publish(topic, qos, retain, payload)
	if !t.WaitTimeout(10 * time.Second) {
		return errors.New("the broker did not acknowledge within 10s")
	}
	return t.Error()
}

// subscribe renews every subscription on c, and waits for the SUBACK on
// a goroutine that wg counts.
func (s *Source) subscribe(c mqtt.Client, wg *sync.WaitGroup) {
	rt := s.routes.Load()
	filters := make(map[string]byte, len(rt.subs))
	for _, sub := range rt.subs {
		filters[sub.Topic] = sub.QoS
	}
	t := c.SubscribeMultiple(filters, nil) // messages go to the default handler
	wg.Go(func() {
		if !t.WaitTimeout(30 * time.Second) {
			s.log.Error("subscribe: no SUBACK from the broker within 30s")
		} else if err := t.Error(); err != nil {
			s.log.Error("subscribe failed", "err", err)
		} else if refusedTopics := refusedSubs(t); len(refusedTopics) > 0 {
			s.log.Error("the broker refused subscriptions (check its ACL for this user)", "topics", refusedTopics)
		} else if c.IsConnectionOpen() {
			s.subscribed.Store(true)
		}
	})
}

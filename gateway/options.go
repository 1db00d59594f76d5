package gateway

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/forward"
	"github.com/edgegw/edgegw/gateway/mqttbroker"
	"github.com/edgegw/edgegw/gateway/mqttroute"
	"github.com/edgegw/edgegw/gateway/mqttsource"
	"github.com/edgegw/edgegw/gateway/subject"
)

// The config in each component's own terms: what Run hands them.

func bufferOptions(c *config.Config, onCommit func(time.Duration)) *buffer.Options {
	policy, _ := buffer.ParsePolicy(c.Buffer.WhenFull) // checked
	return &buffer.Options{
		MaxBytes:    int64(c.Buffer.MaxBytes),
		MaxAge:      c.Buffer.MaxAge,
		WhenFull:    policy,
		PageSize:    int(c.Buffer.PageSize),
		CommitDelay: *c.Buffer.CommitDelay,
		AckDelay:    *c.Buffer.AckDelay,
		// A fresh file counts on from the clock, so a buffer that had to be
		// replaced never reuses message ids upstream.
		FirstSeq: uint64(time.Now().UnixMicro()),
		OnCommit: onCommit,
	}
}

func connOptions(c *config.Config) forward.ConnOptions {
	u := c.Upstream
	return forward.ConnOptions{
		Servers:      u.Servers,
		Name:         "edgegw " + c.Gateway.ID,
		User:         u.User,
		Password:     u.Password,
		Token:        u.Token,
		NKeySeedFile: u.NKeySeedFile,
		CredsFile:    u.CredsFile,
		CAFile:       u.TLS.CAFile,
		CertFile:     u.TLS.CertFile,
		KeyFile:      u.TLS.KeyFile,
		Compression:  u.Compression,
		InboxPrefix:  cmp.Or(u.InboxPrefix, forward.InboxPrefix(c.Gateway.ID)),
	}
}

// subscriptions are the MQTT subscriptions with their parsed templates.
func subscriptions(c *config.Config) ([]mqttroute.Subscription, error) {
	if c.MQTT == nil {
		return nil, nil
	}
	var subs []mqttroute.Subscription
	for _, s := range c.MQTT.Subscriptions {
		t, err := subject.ParseTemplate(s.Subject, c.Gateway.ID)
		if err != nil {
			return nil, err // the config check refuses it first
		}
		l := s.Lane()
		subs = append(subs, mqttroute.Subscription{Topic: s.Topic, QoS: byte(*s.QoS), Subject: t, Retained: s.Retained, Priority: l.Priority, TTL: l.TTL})
	}
	return subs, nil
}

// filters are every subject this gateway publishes to: the forwarder
// reads its last message on them.
func filters(c *config.Config, subs []mqttroute.Subscription) []string {
	var out []string
	for _, s := range subs {
		out = append(out, s.Subject.Filter())
	}
	for _, sc := range c.Sensors {
		subj, _ := subject.ForSensor(sc.Subject, c.Gateway.ID, sc.Name)
		out = append(out, subj)
	}
	return out
}

func forwardOptions(c *config.Config, filters []string, onAck func(time.Duration), log *slog.Logger) forward.Options {
	u := c.Upstream
	o := forward.Options{
		GatewayID: c.Gateway.ID,
		Stream: forward.StreamOptions{
			Name:       u.Stream.Name,
			Subjects:   u.Stream.Subjects,
			Create:     u.Stream.Create,
			Duplicates: u.Stream.Duplicates,
			Replicas:   u.Stream.Replicas,
		},
		Filters:    filters,
		Window:     u.Window,
		AckTimeout: u.AckTimeout,
		RateEvents: u.Rate.EventsPerSecond,
		RateBytes:  float64(u.Rate.BytesPerSecond),
		LowerShare: u.LowerShare,
		OnAck:      onAck,
		Logger:     log,
	}
	if c.MQTT != nil {
		o.MaxEventBytes = int(c.MQTT.MaxPayload)
	}
	o.Drain, _ = forward.ParseDrain(u.Drain) // checked
	return o
}

func mqttOptions(c *config.Config, subs []mqttroute.Subscription, log *slog.Logger) mqttsource.Options {
	m := c.MQTT
	return mqttsource.Options{
		Broker:        m.Broker,
		ClientID:      m.ClientID,
		Username:      m.Username,
		Password:      m.Password,
		CAFile:        m.TLS.CAFile,
		CertFile:      m.TLS.CertFile,
		KeyFile:       m.TLS.KeyFile,
		Subscriptions: subs,
		MaxPayload:    int(m.MaxPayload),
		// A batch must fit the buffer, or it could never be stored.
		BatchBytes: int(max(c.Buffer.MaxBytes/4, 1)),
		Logger:     log,
	}
}

// brokerOptions are the embedded broker's options; it reads the users
// file and the TLS files.
func brokerOptions(c *config.Config, routes []mqttroute.Subscription, log *slog.Logger) (mqttbroker.Options, error) {
	m, sv := c.MQTT, c.MQTT.Server
	o := mqttbroker.Options{
		Listen:         sv.Listen,
		TLSListen:      sv.TLS.Listen,
		WebSocket:      sv.WebSocket,
		AllowAnonymous: sv.AllowAnonymous,
		Routes:         routes,
		MaxPayload:     int(m.MaxPayload),
		MaxPacketSize:  int(sv.MaxPacketSize),
		MaxInflight:    sv.MaxInflight,
		MaxConnections: sv.MaxConnections,
		SessionPath:    brokerSessionsPath(c),
		Logger:         log,

		ConnectTimeout:       sv.ConnectTimeout,
		MaxPending:           sv.MaxPending,
		MaxPendingPerAddress: sv.MaxPendingPerAddress,
		MaxKeepalive:         sv.MaxKeepalive,
		NoRetain:             sv.Retain != nil && !*sv.Retain,
		MaxRetained:          sv.MaxRetained,
		MaxRetainedBytes:     int64(sv.MaxRetainedBytes),
		SessionMaxBytes:      int64(sv.SessionsMaxBytes),
	}
	if sv.UsersFile != "" {
		users, err := mqttbroker.LoadUsers(sv.UsersFile)
		if err != nil {
			return o, err
		}
		o.Users = users
	}
	if sv.TLS.Listen != "" {
		cert, err := tls.LoadX509KeyPair(sv.TLS.CertFile, sv.TLS.KeyFile)
		if err != nil {
			return o, fmt.Errorf("mqtt.server.tls: %w", err)
		}
		o.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if sv.TLS.ClientCAFile != "" {
			pem, err := os.ReadFile(sv.TLS.ClientCAFile)
			if err != nil {
				return o, fmt.Errorf("mqtt.server.tls.client_ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return o, fmt.Errorf("mqtt.server.tls.client_ca_file %s: no PEM certificate in it", sv.TLS.ClientCAFile)
			}
			o.TLS.ClientCAs, o.TLS.ClientAuth = pool, tls.RequireAndVerifyClientCert
		}
	}
	return o, nil
}

// brokerSessionsPath is the embedded broker's sessions file.
func brokerSessionsPath(c *config.Config) string {
	return filepath.Join(c.Gateway.DataDir, "broker-sessions.db")
}

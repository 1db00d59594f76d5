package config

import (
	"path/filepath"
	"strings"
	"time"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/forward"
	"github.com/edgegw/edgegw/gateway/mqttroute"
	"github.com/edgegw/edgegw/sensors"
)

func (r *Route) complete() {
	if r.Priority == nil {
		p := buffer.DefaultPriority
		r.Priority = &p
	}
}

func (c *Config) completeBuffer() {
	if c.Gateway.DataDir == "" {
		c.Gateway.DataDir = DefaultDataDir
	}
	if c.Buffer.Path == "" {
		c.Buffer.Path = filepath.Join(c.Gateway.DataDir, "buffer.db")
	}
	if c.Buffer.MaxBytes == 0 {
		c.Buffer.MaxBytes = DefaultMaxBytes
		if limit := buffer.MaxBytesLimit(); limit > 0 {
			c.Buffer.MaxBytes = ByteSize(limit) * 2 / 3 // 512 MiB on 32-bit
		}
	}
	if c.Buffer.MaxAge == 0 {
		c.Buffer.MaxAge = DefaultMaxAge
	}
	if c.Buffer.WhenFull == "" {
		c.Buffer.WhenFull = "drop_oldest"
	}
	if c.Buffer.PageSize == 0 {
		c.Buffer.PageSize = DefaultPageSize
	}
	if c.Buffer.CommitDelay == nil {
		d := DefaultCommitDelay
		c.Buffer.CommitDelay = &d
	}
	if c.Buffer.AckDelay == nil {
		d := DefaultAckDelay
		c.Buffer.AckDelay = &d
	}
}

func (c *Config) completeMQTT() {
	if m := c.MQTT; m != nil {
		if m.ClientID == "" && c.Gateway.ID != "" {
			m.ClientID = "edgegw-" + c.Gateway.ID
		}
		if m.MaxPayload == 0 {
			m.MaxPayload = mqttroute.DefaultMaxPayload
		}
		for i := range m.Subscriptions {
			s := &m.Subscriptions[i]
			if s.QoS == nil {
				one := 1
				s.QoS = &one
			}
			if s.Subject == "" {
				s.Subject = DefaultSubject
			}
			s.Route.complete()
		}
	}
}

func (c *Config) completeSensors() {
	for i := range c.Sensors {
		s := &c.Sensors[i]
		if s.Interval == 0 {
			s.Interval = DefaultInterval
		}
		if s.Subject == "" {
			s.Subject = DefaultSensorSubject
		}
		s.Route.complete()
		gpioDriver := sensors.IsGPIO(s.Driver)
		if s.Bus == "" && s.Driver != "sim" && s.Driver != "ds18b20" && !gpioDriver {
			s.Bus = "1"
		}
		if gpioDriver && s.Debounce == 0 {
			s.Debounce = 20 * time.Millisecond
			if s.Driver == "pulse_counter" {
				s.Debounce = 5 * time.Millisecond
			}
		}
	}
}

func (c *Config) completeUpstream() {
	if c.Upstream.Stream.Name == "" {
		c.Upstream.Stream.Name = DefaultStreamName
	}
	// The forwarder's defaults, here too, so that config check shows them.
	if c.Upstream.Window == 0 {
		c.Upstream.Window = DefaultWindow
	}
	if c.Upstream.AckTimeout == 0 {
		c.Upstream.AckTimeout = DefaultAckTimeout
	}
	if c.Upstream.Drain == "" {
		c.Upstream.Drain = forward.LiveFirst.String()
	}
	if c.Upstream.LowerShare == 0 {
		c.Upstream.LowerShare = DefaultLowerShare
	}
	if c.Upstream.Stream.Duplicates == 0 {
		c.Upstream.Stream.Duplicates = DefaultDuplicates
	}
	if c.Upstream.Stream.Replicas == 0 {
		c.Upstream.Stream.Replicas = 1
	}
	if len(c.Upstream.Stream.Subjects) == 0 {
		// One wildcard per first token: the fleet's stream, e.g. telemetry.>
		var templates []string
		if c.MQTT != nil {
			for _, s := range c.MQTT.Subscriptions {
				templates = append(templates, s.Subject)
			}
		}
		for _, s := range c.Sensors {
			templates = append(templates, s.Subject)
		}
		seen := map[string]bool{}
		for _, t := range templates {
			first := strings.Split(t, ".")[0]
			if first != "" && !strings.Contains(first, "{") && !seen[first] {
				seen[first] = true
				c.Upstream.Stream.Subjects = append(c.Upstream.Stream.Subjects, first+".>")
			}
		}
	}
}

func (c *Config) completeHTTPAndLog() {
	if c.HTTP.Listen == "" {
		c.HTTP.Listen = DefaultHTTPListen
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
}

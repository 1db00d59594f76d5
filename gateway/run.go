package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/edgegw/edgegw/buffer"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/forward"
	"github.com/edgegw/edgegw/gateway/mqttbroker"
	"github.com/edgegw/edgegw/gateway/mqttroute"
	"github.com/edgegw/edgegw/gateway/mqttsource"
	"github.com/edgegw/edgegw/gateway/status"
)

// A runner runs one config's parts on one buffer: the forwarder with its
// upstream connection, and each source. A new config (reconfigure)
// restarts only the parts whose settings changed, so a change of the
// upstream window does not reconnect to the MQTT broker, and a sensor
// added does not touch the others; a change of the buffer section
// reopens the buffer under every part. The forwarder's cursor and
// read-back keep a restarted forwarder exactly once (docs/forwarder.md);
// a restarted source leaves what it did not store unacknowledged.
type runner struct {
	g    *Gateway
	ctx  context.Context // the generation's; parts run under children of it
	c    *config.Config
	qr   queueRef // the buffer: this runner owns it, and shows it to Status (publish)
	fwd  *part
	srcs []*part       // in config order
	errs chan error    // a part that stopped by itself, with its error
	conf chan reconfig // reconfigure's requests

	// The HTTP listener and the command endpoints: this runner starts,
	// moves and stops them, whatever the mode.
	stopHTTP func()            // nil: not serving
	httpCfg  config.HTTPConfig // what stopHTTP serves
	control  *nats.Conn        // the connection commands are served on; nil: the upstream one
	cmdsOn   *nats.Conn        // where svc serves them
	svc      micro.Service
}

type reconfig struct {
	c     *config.Config
	reply chan error
}

// part is one running piece: what made it (sig), its source or forwarder,
// and how to stop it.
type part struct {
	key, sig string
	usig     string // what update changes in place (sourceSpec)
	src      *source
	fwd      *forward.Forwarder
	nc       *nats.Conn
	stop     func() error
}

// sig is a fingerprint of the settings a part is made from.
func sig(v ...any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v...)
	}
	return string(b)
}

// runConfigs runs the gateway on c until ctx ends, moving to each new
// config conf brings (nil: none). The command endpoints are served on
// control (the fleet's connection), or with none on the upstream
// connection.
func (g *Gateway) runConfigs(ctx context.Context, c *config.Config, control *nats.Conn, conf chan reconfig) (err error) {
	r := &runner{g: g, ctx: ctx, errs: make(chan error, 1), conf: conf, control: control}
	defer func() {
		if r.svc != nil {
			r.svc.Stop()
		}
		if serr := r.stopAll(); err == nil {
			err = serr
		}
		if r.stopHTTP != nil {
			r.stopHTTP()
		}
		g.log.Info("edgegw stopped", "err", err)
	}()
	if err := r.reconfigure(c); err != nil {
		return err
	}
	stopWatch := r.start(func(ctx context.Context) error {
		g.watch(ctx, 5*time.Second, time.Minute, 10*time.Minute)
		return nil
	})
	defer stopWatch()
	stopHistory := r.start(func(ctx context.Context) error {
		g.sampleHistory(ctx)
		return nil
	})
	defer stopHistory()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-r.errs:
			return err
		case rc := <-r.conf:
			rc.reply <- r.reconfigure(rc.c)
		}
	}
}

// start runs fn under a child of the generation's context; the returned
// func stops it and returns its error. An error while not stopped ends the
// generation.
func (r *runner) start(fn func(context.Context) error) func() error {
	ctx, cancel := context.WithCancel(r.ctx)
	done := make(chan struct{})
	var err error
	go func() {
		defer close(done)
		err = fn(ctx)
		if err != nil && ctx.Err() == nil {
			select {
			case r.errs <- err:
			default:
			}
		}
	}()
	return func() error {
		cancel()
		<-done
		return err
	}
}

// stopAll stops every part, sources first, and closes the buffer.
func (r *runner) stopAll() error {
	var err error
	for _, p := range r.srcs {
		if serr := p.stop(); serr != nil && err == nil {
			err = serr
		}
	}
	if r.fwd != nil {
		r.fwd.stop()
	}
	if cerr := r.reopen(nil); err == nil { // shows the stopped parts to Stats
		err = cerr
	}
	r.srcs, r.fwd = nil, nil
	return err
}

// reopen closes the buffer and, if c is not nil, opens it with c's
// settings, while the sources' appends wait.
func (r *runner) reopen(c *config.Config) error {
	r.qr.mu.Lock()
	defer r.qr.mu.Unlock()
	var err error
	if q := r.qr.q; q != nil {
		r.qr.q = nil
		r.publish() // closed: not ready, no buffer metrics; the rest stays for Stats
		err = q.Close()
	}
	if c == nil {
		return err
	}
	q, err := r.g.openBuffer(c)
	if err != nil {
		return err
	}
	r.qr.q = q
	return nil
}

// reconfigure moves the running parts to c.
func (r *runner) reconfigure(c *config.Config) error {
	old := r.c
	if err := r.serveHTTP(c.HTTP); err != nil {
		return err
	}
	if r.qr.q == nil || sig(c.Buffer, c.Gateway) != sig(r.c.Buffer, r.c.Gateway) {
		if r.qr.q != nil {
			r.g.log.Info("the buffer's settings changed: reopening it")
		}
		if r.fwd != nil {
			r.fwd.stop() // it reads the buffer
			r.fwd = nil
		}
		if err := r.reopen(c); err != nil {
			return err
		}
		r.c = c
		r.publish()
	}
	subs, err := subscriptions(c)
	if err != nil {
		return err
	}
	if s := sig(c.Upstream, c.Gateway.ID, filters(c, subs), maxPayload(c)); r.fwd == nil || r.fwd.sig != s {
		if r.fwd != nil {
			r.fwd.stop()
			r.fwd = nil
			r.publish()
		}
		p, err := r.startForwarder(c, subs, s)
		if err != nil {
			return err
		}
		r.fwd = p
	}
	r.serveCommands()
	if err := r.reconcileSources(c, subs); err != nil {
		return err
	}
	r.c = c
	outs, err := r.g.openOutputs(c)
	if err != nil {
		return err
	}
	r.g.mu.Lock()
	r.g.outputs = outs
	r.g.mu.Unlock()
	r.publish()
	if old == nil {
		r.g.log.Info("edgegw running", "gateway", c.Gateway.ID, "buffer", c.Buffer.Path,
			"buffered", r.qr.q.Stats().Events, "sources", len(r.srcs))
	} else {
		r.g.log.Info("config changed; edgegw runs it", "sections", changedSections(old, c), "sources", len(r.srcs))
	}
	return nil
}

// changedSections names the config's top-level sections that differ
// between old and c: what a change restarted or updated.
func changedSections(old, c *config.Config) []string {
	var out []string
	ov, nv := reflect.ValueOf(old).Elem(), reflect.ValueOf(c).Elem()
	for i := 0; i < nv.NumField(); i++ {
		f := nv.Type().Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if f.IsExported() && name != "" && name != "-" && !reflect.DeepEqual(ov.Field(i).Interface(), nv.Field(i).Interface()) {
			out = append(out, name)
		}
	}
	return out
}

// reconcileSources runs c's sources: those whose settings did not change
// keep running (updated in place where they can be), changed ones are
// stopped before their successors start, removed ones stop.
func (r *runner) reconcileSources(c *config.Config, subs []mqttroute.Subscription) error {
	specs := r.g.sourceSpecs(c, subs, r.qr.q)
	running := map[string]*part{}
	for _, p := range r.srcs {
		running[p.key] = p
	}
	var next []*part
	for _, sp := range specs {
		if p := running[sp.key]; p != nil && p.sig == sp.sig {
			next = append(next, p)
			delete(running, sp.key)
			if sp.update != nil && p.usig != sp.usig {
				if err := sp.update(p.src); err != nil {
					for _, p := range running {
						next = append(next, p)
					}
					r.srcs = next
					return fmt.Errorf("%s: %w", sp.key, err)
				}
				p.usig = sp.usig
			}
			continue
		}
		if p := running[sp.key]; p != nil {
			p.stop() // changed: stopped before its successor starts
			delete(running, sp.key)
		}
		s, err := sp.build()
		if err != nil {
			for _, p := range running {
				next = append(next, p) // still running: the next config or stopAll stops them
			}
			r.srcs = next
			r.publish()
			return err
		}
		next = append(next, &part{key: sp.key, sig: sp.sig, usig: sp.usig, src: s, stop: r.start(func(ctx context.Context) error {
			if err := s.Run(ctx, s.emit(&r.qr)); err != nil {
				return fmt.Errorf("source %s: %w", s.Name(), err)
			}
			return nil
		})})
	}
	for _, p := range running {
		p.stop() // removed
	}
	r.srcs = next
	return nil
}

// startForwarder connects upstream and starts a forwarder.
func (r *runner) startForwarder(c *config.Config, subs []mqttroute.Subscription, s string) (*part, error) {
	g := r.g
	o := connOptions(c)
	o.Wire = g.wire
	nc, err := forward.Connect(o, g.log.With("component", "upstream"))
	if err != nil {
		return nil, err
	}
	fwd, err := forward.New(r.qr.q, nc, forwardOptions(c, filters(c, subs), g.web.ObserveAck, g.log))
	if err != nil {
		nc.Close()
		return nil, err
	}
	stop := r.start(fwd.Run)
	return &part{key: "forward", sig: s, fwd: fwd, nc: nc, stop: func() error {
		err := stop()
		nc.Close()
		return err
	}}, nil
}

// serveHTTP serves h, moving the listener only when the section changed.
func (r *runner) serveHTTP(h config.HTTPConfig) error {
	if r.stopHTTP != nil && reflect.DeepEqual(h, r.httpCfg) {
		return nil
	}
	if r.stopHTTP != nil {
		r.stopHTTP()
		r.stopHTTP = nil
	}
	stop, err := r.g.startHTTP(h)
	if err != nil {
		return err
	}
	r.stopHTTP, r.httpCfg = stop, h
	return nil
}

// serveCommands serves the command endpoints on the control connection,
// or without one on the upstream connection, and moves them with it.
func (r *runner) serveCommands() {
	nc := r.control
	if nc == nil && r.fwd != nil {
		nc = r.fwd.nc
	}
	if nc == r.cmdsOn {
		return
	}
	if r.svc != nil {
		r.svc.Stop()
		r.svc = nil
	}
	r.cmdsOn = nc
	if nc == nil {
		return
	}
	svc, err := r.g.serveCommands(nc)
	if err != nil {
		r.g.log.Warn("the command endpoints are not served", "err", err)
		return
	}
	r.svc = svc
}

// publish shows the running parts to Status: the only writer of the
// gateway's view of them.
func (r *runner) publish() {
	var srcs []*source
	for _, p := range r.srcs {
		srcs = append(srcs, p.src)
	}
	var fwd *forward.Forwarder
	if r.fwd != nil {
		fwd = r.fwd.fwd
	}
	r.g.mu.Lock()
	r.g.cfg, r.g.q, r.g.fwd, r.g.srcs = r.c, r.qr.q, fwd, srcs
	r.g.mu.Unlock()
}

// sourceSpec is a source a config asks for, not yet built.
type sourceSpec struct {
	key, sig string
	build    func() (*source, error)
	// usig and update: settings a running source takes without a
	// restart (the MQTT client's routes).
	usig   string
	update func(*source) error
}

// sourceSpecs are c's sources: the MQTT client of mqtt.broker, the
// embedded broker (mqtt.server), and every sensor, in that order.
func (g *Gateway) sourceSpecs(c *config.Config, subs []mqttroute.Subscription, q *buffer.Queue) []sourceSpec {
	var out []sourceSpec
	if m := c.MQTT; m != nil && m.Broker != "" {
		client := *m
		client.Server, client.Subscriptions, client.MaxPayload = nil, nil, 0
		out = append(out, sourceSpec{key: "mqtt", sig: sig(client, c.Gateway.ID), build: func() (*source, error) {
			msrc, err := mqttsource.New(mqttOptions(c, subs, g.log))
			if err != nil {
				return nil, err
			}
			return &source{Source: msrc, kind: status.KindMQTT}, nil
		}, usig: sig(m.Subscriptions, m.MaxPayload), update: func(s *source) error {
			msrc, ok := s.Source.(*mqttsource.Source)
			if !ok {
				return fmt.Errorf("the mqtt source is a %T", s.Source)
			}
			return msrc.Reroute(subs, int(m.MaxPayload))
		}})
	}
	if m := c.MQTT; m != nil && m.Server.On() {
		out = append(out, sourceSpec{key: "mqtt-server", sig: sig(m, c.Gateway.ID, c.Gateway.DataDir), build: func() (*source, error) {
			o, err := brokerOptions(c, subs, g.log)
			if err != nil {
				return nil, err
			}
			b, err := mqttbroker.New(o)
			if err != nil {
				return nil, err
			}
			return &source{Source: b, kind: status.KindMQTTServer}, nil
		}})
	}
	for _, sc := range c.Sensors {
		out = append(out, sourceSpec{key: "sensor/" + sc.Name, sig: sig(sc, c.Gateway.ID), build: func() (*source, error) {
			return g.sensorSource(c, sc, q)
		}})
	}
	return out
}

// maxPayload is mqtt.max_payload, or 0 without MQTT.
func maxPayload(c *config.Config) config.ByteSize {
	if c.MQTT == nil {
		return 0
	}
	return c.MQTT.MaxPayload
}

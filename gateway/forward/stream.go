package forward

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/event"
	"github.com/edgegw/edgegw/gateway/subject"
)

// resume starts a session: it finds the stream, asks it for this gateway's
// last message, and acknowledges in the buffer what the stream already
// holds. It returns the stream's subjects and the first seq to send.
func (f *Forwarder) resume(ctx context.Context, js jetstream.JetStream) (captured []string, next uint64, err error) {
	reqCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	stream, err := f.ensureStream(reqCtx, js)
	if err != nil {
		cancel()
		return nil, 0, err
	}
	held, err := f.heldUpstream(reqCtx, stream)
	cancel()
	if err != nil {
		return nil, 0, err
	}
	f.worked = true
	captured = stream.CachedInfo().Config.Subjects
	if mp := f.nc.MaxPayload(); f.o.MaxEventBytes > 0 && int64(f.o.MaxEventBytes)+maxHeaderBytes > mp && mp != f.warnedMaxPayload {
		f.warnedMaxPayload = mp
		f.log.Error("the upstream server's max_payload cannot take every message the sources may produce: larger ones will be set aside in the dead-letter lane; lower mqtt.max_payload or raise max_payload on the server", "mqtt_max_payload", f.o.MaxEventBytes, "headroom", maxHeaderBytes, "server_max_payload", mp)
	}

	st := f.q.Stats()
	next = max(st.FirstSeq, f.lastSeq.Load()+1)
	for seq := range f.storedAhead {
		if seq < next {
			delete(f.storedAhead, seq)
		}
	}
	if f.noSkipFrom != 0 && f.lastSeq.Load() >= f.noSkipUntil {
		// Every event of the failed windows has been acknowledged: the
		// stream's last message is proof again.
		f.noSkipFrom, f.noSkipUntil = 0, 0
	}
	if f.noSkipFrom != 0 && held >= f.noSkipFrom {
		held = f.noSkipFrom - 1
	}
	switch {
	case held >= st.NextSeq:
		f.log.Error("the stream holds a later seq of this gateway than its buffer has ever had: another gateway uses the same id, or this buffer was replaced; forwarding everything held", "stream_seq", held, "buffer_next_seq", st.NextSeq)
	case held >= next:
		if err := f.q.Ack(held); err != nil {
			return nil, 0, err
		}
		f.skipped.Add(held - next + 1)
		f.lastSeq.Store(held)
		f.log.Info("events already in the stream skipped", "up_to_seq", held, "count", held-next+1)
		next = held + 1
	}
	return captured, next, nil
}

// ensureStream finds the stream, or creates it when allowed.
func (f *Forwarder) ensureStream(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	s, err := js.Stream(ctx, f.o.Stream.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if !f.o.Stream.Create {
			return nil, fmt.Errorf("%w: stream %s not found on the upstream server; create it (see deploy/) or set upstream.stream.create: true", ErrConfig, f.o.Stream.Name)
		}
		if len(f.o.Stream.Subjects) == 0 {
			return nil, fmt.Errorf("%w: cannot create stream %s: upstream.stream.subjects is empty", ErrConfig, f.o.Stream.Name)
		}
		s, err = js.CreateStream(ctx, jetstream.StreamConfig{
			Name:       f.o.Stream.Name,
			Subjects:   f.o.Stream.Subjects,
			Storage:    jetstream.FileStorage,
			Duplicates: f.o.Stream.Duplicates,
			Replicas:   f.o.Stream.Replicas,
		})
		if err == nil {
			f.log.Info("stream created", "stream", f.o.Stream.Name, "subjects", f.o.Stream.Subjects)
		}
	}
	if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
		return nil, fmt.Errorf("%w: JetStream is not enabled on the upstream server for this account", ErrConfig)
	}
	if le := f.nc.LastError(); err != nil && le != nil && strings.Contains(le.Error(), "Permissions Violation") && strings.Contains(le.Error(), "."+f.o.Stream.Name) {
		// A hub that grants each gateway its stream by name (deploy/
		// upstream/hub.conf) answers a wrong name with silence and a
		// permission error: the name is the likelier mistake.
		return nil, fmt.Errorf("%w: stream %s: the upstream refused this gateway's user the stream's API (%v): check upstream.stream.name, then that the hub grants this user what deploy/upstream/hub.conf grants", ErrConfig, f.o.Stream.Name, le)
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", f.o.Stream.Name, err)
	}
	for _, flt := range f.o.Filters {
		if !subject.Covers(s.CachedInfo().Config.Subjects, flt) {
			return nil, fmt.Errorf("%w: stream %s does not capture subject %q (its subjects: %s)", ErrConfig, f.o.Stream.Name, flt, strings.Join(s.CachedInfo().Config.Subjects, ", "))
		}
	}
	return s, nil
}

// heldUpstream returns the highest seq of this gateway the stream holds,
// from the last message on each filter subject.
func (f *Forwarder) heldUpstream(ctx context.Context, s jetstream.Stream) (uint64, error) {
	var held uint64
	prefix := f.o.GatewayID + "-"
	for _, flt := range f.o.Filters {
		m, err := s.GetLastMsgForSubject(ctx, flt)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("last message on %s in stream %s: %w", flt, f.o.Stream.Name, err)
		}
		id := m.Header.Get(jetstream.MsgIDHeader)
		seq, err := strconv.ParseUint(strings.TrimPrefix(id, prefix), 10, 64)
		if !strings.HasPrefix(id, prefix) || err != nil {
			f.log.Warn("last message on this gateway's subjects was not sent by it; check that filters match only this gateway", "subject", m.Subject, "msg_id", id)
			continue
		}
		held = max(held, seq)
	}
	return held, nil
}

// message builds the NATS message for rec; an error means the event can
// never be published.
func (f *Forwarder) message(rec buffer.Record) (*nats.Msg, error) {
	var e event.Event
	if err := e.Unmarshal(rec.Data); err != nil {
		return nil, err
	}
	if !subject.Valid(e.Subject) {
		return nil, fmt.Errorf("subject %q is not a valid NATS subject to publish to", e.Subject)
	}
	// The keys are already in canonical form: no need for Header.Set.
	h := make(nats.Header, 4)
	h[jetstream.MsgIDHeader] = []string{f.o.GatewayID + "-" + strconv.FormatUint(rec.Seq, 10)}
	h[HeaderGateway] = f.gwHeader
	if e.Source != "" {
		h[HeaderSource] = []string{EscapeHeader(e.Source)}
	}
	if !e.Time.IsZero() {
		h[HeaderTime] = []string{e.Time.UTC().Format(time.RFC3339Nano)}
	}
	if e.Retained {
		h[HeaderRetained] = []string{"true"}
	}
	return &nats.Msg{Subject: e.Subject, Header: h, Data: e.Payload}, nil
}

// EscapeHeader makes s safe as a NATS header value: control bytes (CR and
// LF would start a new header line), '%', and leading or trailing spaces
// become %XX. Printable text, spaces inside and UTF-8 pass unchanged, so a
// normal MQTT topic reads as itself.
func EscapeHeader(s string) string {
	esc := func(i int) bool {
		c := s[i]
		return c < 0x20 || c == 0x7f || c == '%' || c == ' ' && (i == 0 || i == len(s)-1)
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if esc(i) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		if esc(i) {
			b = append(b, '%', hex[s[i]>>4], hex[s[i]&15])
		} else {
			b = append(b, s[i])
		}
	}
	return string(b)
}

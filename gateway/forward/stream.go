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

// resumed is what a session starts from.
type resumed struct {
	stream   jetstream.Stream
	captured []string // the stream's subjects
	cursor   cursor   // how far upstream the buffer's acks reach
	live     uint64   // with LiveFirst, the first seq that is live; else 0
}

// A cursor is how far this gateway's messages in the stream are known to
// be acknowledged in the buffer: every message of this gateway in stream
// name (created at created) with a stream seq <= seq. The buffer stores
// it with its acks (SetCursor), never ahead of them.
type cursor struct {
	stream  string
	created int64 // the stream's creation time, Unix ns: a recreated stream is another
	seq     uint64
}

func (c cursor) encode() []byte {
	return fmt.Appendf(nil, "v1 %s %d %d", c.stream, c.created, c.seq)
}

func decodeCursor(b []byte) (cursor, bool) {
	var c cursor
	_, err := fmt.Sscanf(string(b), "v1 %s %d %d", &c.stream, &c.created, &c.seq)
	return c, err == nil
}

// resume starts a session: it finds the stream, acknowledges in the buffer
// every event the stream already holds, and moves the cursor to the
// stream's end, all committed before anything is sent.
//
// The messages to look for are this gateway's with a stream seq past the
// cursor: the PubAcks taken before a crash or a failure whose acks did not
// reach the file, and messages stored after one that failed. Each is read
// back (its Nats-Msg-Id names the seq) and acknowledged. A buffer without
// a cursor has never sent out of seq order (it is new, or was written by
// an edgegw without lanes): then the last message on the filters names
// the highest seq held and everything below it, as before lanes.
func (f *Forwarder) resume(ctx context.Context, js jetstream.JetStream) (r resumed, err error) {
	reqCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := f.ensureStream(reqCtx, js)
	if err != nil {
		return r, err
	}
	info := stream.CachedInfo()
	r.stream, r.captured = stream, info.Config.Subjects
	if mp := f.nc.MaxPayload(); f.o.MaxEventBytes > 0 && int64(f.o.MaxEventBytes)+maxHeaderBytes > mp && mp != f.warnedMaxPayload {
		f.warnedMaxPayload = mp
		f.log.Error("the upstream server's max_payload cannot take every message the sources may produce: larger ones will be set aside in the dead-letter lane; lower mqtt.max_payload or raise max_payload on the server", "mqtt_max_payload", f.o.MaxEventBytes, "headroom", maxHeaderBytes, "server_max_payload", mp)
	}
	here := cursor{stream: info.Config.Name, created: info.Created.UnixNano(), seq: info.State.LastSeq}
	st := f.q.Stats()
	prev, ok := decodeCursor(f.q.Cursor())
	switch {
	case !ok:
		if err := f.resumeInOrder(reqCtx, stream, st); err != nil {
			return r, err
		}
	case prev.stream != here.stream || prev.created != here.created || prev.seq > here.seq:
		f.log.Warn("the stream is not the one this buffer last sent to (recreated, or another): reading all of this gateway's messages in it", "stream", here.stream, "from_seq", info.State.FirstSeq)
		if err := f.readBack(ctx, stream, info.State.FirstSeq, here.seq, st); err != nil {
			return r, err
		}
	default:
		if err := f.readBack(ctx, stream, prev.seq+1, here.seq, st); err != nil {
			return r, err
		}
	}
	if err := f.q.SetCursor(here.encode()); err != nil {
		return r, err
	}
	if err := f.q.Flush(ctx); err != nil {
		return r, err
	}
	r.cursor = here
	if f.o.Drain == LiveFirst {
		r.live = st.NextSeq
		if st.Events > 0 {
			f.log.Info("draining the backlog behind live events", "backlog_events", st.Events, "oldest", st.Oldest)
		}
	}
	return r, nil
}

// resumeInOrder acknowledges everything up to the highest seq of this
// gateway in the stream: right for a buffer that has only ever sent in
// seq order.
func (f *Forwarder) resumeInOrder(ctx context.Context, stream jetstream.Stream, st buffer.Stats) error {
	held, err := f.heldUpstream(ctx, stream)
	if err != nil {
		return err
	}
	switch {
	case held >= st.NextSeq:
		f.log.Error("the stream holds a later seq of this gateway than its buffer has ever had: another gateway uses the same id, or this buffer was replaced; forwarding everything held", "stream_seq", held, "buffer_next_seq", st.NextSeq)
	case held >= st.FirstSeq:
		if err := f.q.Ack(held); err != nil {
			return err
		}
		f.skipped.Add(held - st.FirstSeq + 1)
		f.log.Info("events already in the stream skipped", "up_to_seq", held)
	}
	return nil
}

// readBack reads this gateway's messages with stream seqs from..to and
// acknowledges the buffer's events they hold.
func (f *Forwarder) readBack(ctx context.Context, stream jetstream.Stream, from, to uint64, st buffer.Stats) error {
	prefix := f.o.GatewayID + "-"
	var found, lastLog = 0, time.Now()
	for _, flt := range f.o.Filters {
		if !subject.Covers(stream.CachedInfo().Config.Subjects, flt) {
			continue // a held route: nothing of it is in the stream
		}
		var ackErr error
		err := f.scan(ctx, stream, flt, from, false, func(m jetstream.Msg, seq uint64) bool {
			if seq > to {
				return false
			}
			id := m.Headers().Get(jetstream.MsgIDHeader)
			n, err := strconv.ParseUint(strings.TrimPrefix(id, prefix), 10, 64)
			if !strings.HasPrefix(id, prefix) || err != nil {
				f.log.Warn("a message on this gateway's subjects was not sent by it; check that filters match only this gateway", "subject", m.Subject(), "msg_id", id)
				return true
			}
			if n < st.FirstSeq || n >= st.NextSeq {
				return true // acknowledged long ago, or another buffer's
			}
			if ackErr = f.q.AckSeq(n); ackErr != nil {
				return false
			}
			found++
			f.skipped.Add(1)
			if time.Since(lastLog) > 5*time.Second {
				f.log.Info("reading back what the stream already holds", "found", found, "stream_seq", seq, "up_to", to)
				lastLog = time.Now()
			}
			return true
		})
		if ackErr != nil {
			return ackErr
		}
		if err != nil {
			return fmt.Errorf("read back this gateway's messages on %s in stream %s from seq %d: %w", flt, f.o.Stream.Name, from, err)
		}
	}
	if found > 0 {
		f.log.Info("events already in the stream skipped", "count", found)
	}
	return nil
}

// ReadBackConsumer is the name of the consumer through which the
// forwarder of gateway id reads back its own messages: one name per
// gateway, and its filter subject in the API subject that creates it
// ($JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>), so that a hub can
// grant each gateway reads of its own subjects only (deploy/upstream). The
// message-get APIs take the subject in the request body, where no
// permission can pin it.
func ReadBackConsumer(id string) string { return "edgegw_rb_" + id }

// scan reads the stream's messages on filter flt from stream seq from
// (with last, only the last one), in order, through this gateway's
// read-back consumer, calling fn with each and its stream seq until fn
// returns false.
func (f *Forwarder) scan(ctx context.Context, s jetstream.Stream, flt string, from uint64, last bool, fn func(jetstream.Msg, uint64) bool) error {
	name := ReadBackConsumer(f.o.GatewayID)
	reqCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// A crashed run's consumer may still be there (it lapses after a
	// minute): a consumer's start cannot be changed, so it is made anew.
	if err := s.DeleteConsumer(reqCtx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		f.log.Debug("read-back consumer not deleted", "consumer", name, "err", err)
	}
	cfg := jetstream.ConsumerConfig{Name: name, FilterSubject: flt, AckPolicy: jetstream.AckNonePolicy,
		InactiveThreshold: time.Minute, MemoryStorage: true, Replicas: 1}
	if last {
		cfg.DeliverPolicy = jetstream.DeliverLastPolicy
	} else {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, max(from, 1)
	}
	c, err := s.CreateConsumer(reqCtx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = s.DeleteConsumer(dctx, name)
	}()
	pending := c.CachedInfo().NumPending
	for pending > 0 {
		batch, err := c.Fetch(int(min(pending, 1000)), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			return err
		}
		got := 0
		for m := range batch.Messages() {
			got++
			pending--
			md, err := m.Metadata()
			if err != nil {
				return err
			}
			if !fn(m, md.Sequence.Stream) {
				for range batch.Messages() {
				}
				return nil
			}
		}
		if err := batch.Error(); err != nil {
			return err
		}
		if got == 0 {
			return fmt.Errorf("no message from the read-back consumer with %d pending", pending)
		}
	}
	return nil
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
	return s, nil
}

// heldUpstream returns the highest seq of this gateway the stream holds,
// from the last message on each filter subject.
func (f *Forwarder) heldUpstream(ctx context.Context, s jetstream.Stream) (uint64, error) {
	var held uint64
	prefix := f.o.GatewayID + "-"
	for _, flt := range f.o.Filters {
		if !subject.Covers(s.CachedInfo().Config.Subjects, flt) {
			continue // a held route: nothing of it is in the stream
		}
		err := f.scan(ctx, s, flt, 0, true, func(m jetstream.Msg, _ uint64) bool {
			id := m.Headers().Get(jetstream.MsgIDHeader)
			seq, err := strconv.ParseUint(strings.TrimPrefix(id, prefix), 10, 64)
			if !strings.HasPrefix(id, prefix) || err != nil {
				f.log.Warn("last message on this gateway's subjects was not sent by it; check that filters match only this gateway", "subject", m.Subject(), "msg_id", id)
				return false
			}
			held = max(held, seq)
			return false
		})
		if err != nil {
			return 0, fmt.Errorf("last message on %s in stream %s: %w", flt, f.o.Stream.Name, err)
		}
	}
	return held, nil
}

// message builds the NATS message for rec; an error means the event can
// never be published.
func (f *Forwarder) message(rec buffer.Record, backfill bool, now time.Time) (msg *nats.Msg, expired bool, err error) {
	var e event.Event
	if err := e.Unmarshal(rec.Data); err != nil {
		return nil, false, err
	}
	if !subject.Valid(e.Subject) {
		return nil, false, fmt.Errorf("subject %q is not a valid NATS subject to publish to", e.Subject)
	}
	if e.Expired(now, rec.Shift) {
		return nil, true, nil
	}
	// The keys are already in canonical form: no need for Header.Set.
	h := make(nats.Header, 4)
	h[jetstream.MsgIDHeader] = []string{f.o.GatewayID + "-" + strconv.FormatUint(rec.Seq, 10)}
	h[HeaderGateway] = f.gwHeader
	if e.Source != "" {
		h[HeaderSource] = []string{EscapeHeader(e.Source)}
	}
	if !e.Time.IsZero() {
		// The event's time came from the same clock as its append time:
		// it takes the same correction.
		h[HeaderTime] = []string{e.Time.Add(rec.Shift).UTC().Format(time.RFC3339Nano)}
		if rec.Unsynced {
			h[HeaderUnsynced] = trueHeader
		}
	}
	if e.Retained {
		h[HeaderRetained] = trueHeader
	}
	if backfill {
		h[HeaderBackfill] = trueHeader
	}
	if rec.Lane.Priority != buffer.DefaultPriority {
		h[HeaderPriority] = []string{strconv.Itoa(rec.Lane.Priority)}
	}
	if e.MQTT != nil {
		mqttHeaders(h, &e, rec.Shift, now)
	}
	return &nats.Msg{Subject: e.Subject, Header: h, Data: e.Payload}, false, nil
}

// mqttHeaders sets the headers of e's MQTT 5 properties.
func mqttHeaders(h nats.Header, e *event.Event, shift time.Duration, now time.Time) {
	p := e.MQTT
	if p.ContentType != "" {
		h[HeaderContentType] = []string{EscapeHeader(p.ContentType)}
	}
	if p.PayloadFormatSet {
		h[HeaderPayloadFormat] = []string{strconv.Itoa(int(p.PayloadFormat))}
	}
	if p.Expiry > 0 && !e.Time.IsZero() {
		left := e.Time.Add(shift + p.Expiry).Sub(now)
		h[HeaderMessageExpiry] = []string{strconv.FormatInt(int64((left+time.Second-1)/time.Second), 10)}
	}
	if len(p.User) > 0 {
		v := make([]string, len(p.User))
		for i, u := range p.User {
			v[i] = escape(u.Key, true) + "=" + EscapeHeader(u.Value)
		}
		h[HeaderUserProperty] = v
	}
}

// UserProperty reads back one value of HeaderUserProperty.
func UserProperty(v string) (name, value string, err error) {
	n, val, ok := strings.Cut(v, "=")
	if !ok {
		return "", "", fmt.Errorf("user property header %q has no '='", v)
	}
	if name, err = UnescapeHeader(n); err != nil {
		return "", "", err
	}
	if value, err = UnescapeHeader(val); err != nil {
		return "", "", err
	}
	return name, value, nil
}

// UnescapeHeader reverses EscapeHeader.
func UnescapeHeader(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b = append(b, s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("header value %q: '%%' without two hex digits", s)
		}
		c, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("header value %q: '%%' without two hex digits", s)
		}
		b = append(b, byte(c))
		i += 2
	}
	return string(b), nil
}

// trueHeader is shared by every message that sets a flag header; nobody
// modifies it.
var trueHeader = []string{"true"}

// EscapeHeader makes s safe as a NATS header value: control bytes (CR and
// LF would start a new header line), '%', and leading or trailing spaces
// become %XX. Printable text, spaces inside and UTF-8 pass unchanged, so a
// normal MQTT topic reads as itself.
func EscapeHeader(s string) string { return escape(s, false) }

// escape is EscapeHeader; a name escapes '=' too.
func escape(s string, name bool) string {
	esc := func(i int) bool {
		c := s[i]
		return c < 0x20 || c == 0x7f || c == '%' || c == ' ' && (i == 0 || i == len(s)-1) || name && c == '='
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

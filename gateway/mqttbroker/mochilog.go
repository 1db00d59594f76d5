package mqttbroker

import (
	"context"
	"log/slog"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// mochiLog is the handler mochi logs through: edgegw's, except that what
// mochi says of a normal event at WARN or ERROR is said at DEBUG (see
// benign). A first start has no sessions file yet, and mochi's bolt hook
// logs `failed to get data error="key not found" key=SYS` as an ERROR:
// an operator would look for a fault where there is none.
type mochiLog struct{ slog.Handler }

func (h mochiLog) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn && benign(r) {
		if !h.Handler.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		msg := r.Message
		if msg == "" {
			msg = "MQTT connection ended"
		}
		d := slog.NewRecord(r.Time, slog.LevelDebug, msg, r.PC)
		r.Attrs(func(a slog.Attr) bool { d.AddAttrs(a); return true })
		r = d
	}
	if !h.Handler.Enabled(ctx, r.Level) {
		return nil
	}
	return h.Handler.Handle(ctx, r)
}

func (h mochiLog) WithAttrs(as []slog.Attr) slog.Handler { return mochiLog{h.Handler.WithAttrs(as)} }
func (h mochiLog) WithGroup(n string) slog.Handler       { return mochiLog{h.Handler.WithGroup(n)} }

// Enabled lets every level through to Handle, which decides.
func (h mochiLog) Enabled(ctx context.Context, l slog.Level) bool {
	return h.Handler.Enabled(ctx, l) || l >= slog.LevelWarn
}

// benign: the record is one of mochi's that is no fault of the gateway,
// said per client or per packet (so at DEBUG, where its packet dumps may
// stay): a missing key in a new sessions file; how one client's
// connection ended (its listener logs each at WARN with no message);
// a short keepalive; a client's packet mochi could not process.
func benign(r slog.Record) bool {
	if r.Message == "" {
		return true
	}
	if r.Message == mqtt.ErrMinimumKeepalive.Error() {
		return true // keepalive 0 or short: OnConnect caps it, nothing to warn of
	}
	if r.Message == "error processing packet" {
		// A client's bad packet (an ACL refusal's disconnect among them),
		// with a dump of the packet: per packet, and counted by the hooks
		// (mqtt_server_refused_total) where it is a refusal.
		return true
	}
	if r.Message != "failed to get data" {
		return false
	}
	missing := false
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "error" && a.Value.String() == "key not found" {
			missing = true
		}
		return !missing
	})
	return missing
}

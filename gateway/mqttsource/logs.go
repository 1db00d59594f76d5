package mqttsource

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"time"

	"golang.org/x/time/rate"
)

// dropLog logs dropped messages once per topic, at most 10 lines a
// minute, topics cut to 200 bytes: a flood of hostile topics (65 KB each,
// all distinct) costs neither memory nor the disk the log is on. It
// remembers a hash per topic, up to 4096 of them.
type dropLog struct {
	log        *slog.Logger
	seen       map[uint64]struct{}
	lim        *rate.Limiter
	suppressed int
}

func newDropLog(log *slog.Logger) *dropLog {
	return &dropLog{log: log, seen: map[uint64]struct{}{}, lim: rate.NewLimiter(rate.Every(6*time.Second), 10)}
}

func (d *dropLog) drop(topic string, err error) {
	h := fnv.New64a()
	h.Write([]byte(topic))
	k := h.Sum64()
	if _, ok := d.seen[k]; ok {
		return
	}
	if len(d.seen) >= 4096 {
		clear(d.seen)
	}
	d.seen[k] = struct{}{}
	if !d.lim.Allow() {
		d.suppressed++
		return
	}
	shown := topic
	if len(shown) > 200 {
		shown = fmt.Sprintf("%s… (%d bytes)", shown[:200], len(topic))
	}
	args := []any{"topic", shown, "err", err}
	if d.suppressed > 0 {
		args = append(args, "not_logged_since", d.suppressed)
		d.suppressed = 0
	}
	d.log.Warn("message dropped (logged once per topic, at most 10 a minute; counted in edgegw_source_rejected_total)", args...)
}

// debugLog writes per-message lines at debug level ("did my device's
// message arrive, and which subject did it get?"), at most 10 a second,
// with a count of those left out.
type debugLog struct {
	log     *slog.Logger
	lim     *rate.Limiter
	skipped int
}

func newDebugLog(log *slog.Logger) *debugLog {
	return &debugLog{log: log, lim: rate.NewLimiter(10, 10)}
}

func (d *debugLog) enabled(ctx context.Context) bool {
	return d.log.Enabled(ctx, slog.LevelDebug)
}

func (d *debugLog) line(msg string, args ...any) {
	if !d.lim.Allow() {
		d.skipped++
		return
	}
	if d.skipped > 0 {
		args = append(args, "not_logged_since", d.skipped)
		d.skipped = 0
	}
	d.log.Debug(msg, args...)
}

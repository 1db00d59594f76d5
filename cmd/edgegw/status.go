package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/status"
)

// cmdStatus shows a running gateway's /status on one terminal screen, for
// someone on SSH: once, or with --watch refreshed (with rates).
func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := flags("status", stderr)
	addr := fs.String("addr", config.DefaultHTTPListen, "the gateway's http.listen")
	watch := fs.Bool("watch", false, "refresh until interrupted, with ingest and drain rates")
	every := fs.Duration("every", 2*time.Second, "refresh interval with --watch")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	base := baseURL(*addr)
	var prev *status.Status
	var prevAt time.Time
	for {
		st, err := fetchStatus(base)
		if err != nil {
			fmt.Fprintf(stderr, "edgegw: %v (is edgegw running, and is http.listen %s?)\n", err, *addr)
			return 1
		}
		now := time.Now()
		if *watch {
			fmt.Fprint(stdout, "\033[H\033[2J") // clear the screen
		}
		renderStatus(stdout, st, prev, now.Sub(prevAt))
		if !*watch {
			if !st.Ready {
				return 1
			}
			return 0
		}
		prev, prevAt = st, now
		time.Sleep(*every)
	}
}

func fetchStatus(base string) (*status.Status, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(base + "/status")
	if err != nil {
		return nil, fmt.Errorf("no answer from %s/status: %w", base, err)
	}
	defer resp.Body.Close()
	var st status.Status
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		return nil, fmt.Errorf("%s/status: %w", base, err)
	}
	return &st, nil
}

// renderStatus writes st; with prev (dt earlier) also the rates.
func renderStatus(w io.Writer, st *status.Status, prev *status.Status, dt time.Duration) {
	ready := "READY"
	if !st.Ready {
		ready = "NOT READY: " + st.NotReady
	}
	fmt.Fprintf(w, "edgegw %s  %s  up %s  %s\n\n", st.Gateway, st.Version, roundDur(st.UptimeSeconds), ready)

	u := st.Upstream
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	switch {
	case u.Connected:
		fmt.Fprintf(tw, "uplink\t● connected\tstream %s\tacked %d\tlast ack %s\n", u.Stream, u.Acked, ago(u.LastAck))
	case !u.DownSince.IsZero():
		fmt.Fprintf(tw, "uplink\t○ DOWN since %s\tstream %s\tacked %d\tlast ack %s\n", u.DownSince.Local().Format("15:04:05"), u.Stream, u.Acked, ago(u.LastAck))
	default:
		fmt.Fprintf(tw, "uplink\t○ not connected\tstream %s\t\t\n", u.Stream)
	}
	fmt.Fprintf(tw, "\tdrain %s\tbackfill %d\tresent %d\tskipped %d\n", u.Drain, u.Backfill, u.Resent, u.Skipped)
	if u.LastError != "" {
		fmt.Fprintf(tw, "\tlast error: %s\t\t\t\n", u.LastError)
	}
	for _, h := range u.Held {
		fmt.Fprintf(tw, "\tHELD %s: %d events waiting: %s\t\t\t\n", h.Route, h.Events, h.Why)
	}
	b := st.Buffer
	clock := "clock synchronized"
	if !b.ClockSynced {
		clock = "CLOCK NOT SYNCHRONIZED"
	}
	fmt.Fprintf(tw, "buffer\t%d events\t%s held\toldest %s\t%s\n", b.Events, mib(b.Bytes), roundDur(b.OldestAgeSeconds), clock)
	fmt.Fprintf(tw, "\tfile %s\tmax %s\tdead letters %d\tdropped %d full, %d age, %d ttl\n", mib(b.FileBytes), mib(b.MaxBytes), b.DeadLetters, b.DroppedFull, b.DroppedAge, b.DroppedTTL)
	if b.CommitError != "" {
		fmt.Fprintf(tw, "\tCOMMIT FAILING: %s\t\t\t\n", b.CommitError)
	}
	sw := st.Storage
	fmt.Fprintf(tw, "\twritten %s per reading\t%s per day\tcard life %s\t%s\n", kib(sw.PerReading), mib(int64(sw.PerDay)), sw.Life, storageFilesText(sw.Files))
	for _, l := range b.Lanes {
		ttl := "-"
		if l.TTL != "" {
			ttl = l.TTL
		}
		fmt.Fprintf(tw, "  lane\tpriority %d, ttl %s\t%d events\toldest %s\tacked %d\n", l.Priority, ttl, l.Events, roundDur(l.OldestAgeSeconds), l.Acked)
	}
	fmt.Fprintln(tw, "\t\t\t\t")
	for _, s := range st.Sources {
		dot, state := "●", "receiving"
		switch {
		case !s.Up:
			dot, state = "○", "DOWN"
			if s.LastError != "" {
				state += ": " + s.LastError
			}
		case s.LastReadingAge != nil && *s.LastReadingAge > 300:
			dot, state = "◐", "stale"
		}
		last := "never"
		if s.LastReadingAge != nil {
			last = roundDur(*s.LastReadingAge) + " ago"
		}
		fmt.Fprintf(tw, "source\t%s %s (%s)\t%s\tingested %d\tlast %s\n", dot, s.Name, s.Kind, state, s.Ingested, last)
	}
	if prev != nil && dt > 0 {
		in := float64(b.Appended-prev.Buffer.Appended) / dt.Seconds()
		out := float64(u.Acked-prev.Upstream.Acked) / dt.Seconds()
		drain := "—"
		if b.Events == 0 {
			drain = "drained"
		} else if out > in {
			drain = roundDur(float64(b.Events) / (out - in))
		} else {
			drain = "not draining"
		}
		fmt.Fprintf(tw, "\t\t\t\t\nrates\tingest %.0f/s\tdrain %.0f/s\ttime to drain %s\t\n", in, out, drain)
	}
	tw.Flush()
}

func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return roundDur(time.Since(t).Seconds()) + " ago"
}

func roundDur(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	}
	return d.Round(time.Minute).String()
}

func mib(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
}

// kib says a byte count to the KiB.
func kib(n float64) string { return fmt.Sprintf("%.1f KiB", n/1024) }

// storageFilesText says what each file has had written since start.
func storageFilesText(fs []status.StorageFile) string {
	parts := make([]string, len(fs))
	for i, f := range fs {
		approx := ""
		if f.Estimated {
			approx = "~"
		}
		parts[i] = fmt.Sprintf("%s %s%s", f.File, approx, mib(f.Written))
	}
	return strings.Join(parts, ", ")
}

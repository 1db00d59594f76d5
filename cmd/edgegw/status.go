package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/status"
)

// cmdStatus shows a running gateway's /status on one terminal screen, for
// someone on SSH: once, or with --watch refreshed (with rates).
func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fs := flags("status", stderr)
	addr := fs.String("addr", "", "the gateway's http.listen (default: as the config says, else "+config.DefaultHTTPListen+")")
	cf := addConfigFlags(fs, defaultConfig)
	user := fs.String("user", "", "log in as this user of http.users_file (the password from $EDGEGW_HTTP_PASSWORD, or a prompt)")
	watch := fs.Bool("watch", false, "refresh until interrupted, with ingest and drain rates")
	every := fs.Duration("every", 2*time.Second, "refresh interval with --watch")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := findAddr(fs, addr, cf); err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
	}
	base := baseURL(*addr)
	login, err := httpLogin(*user)
	if err != nil {
		fmt.Fprintln(stderr, "edgegw:", err)
		return 1
	}
	var prev *status.Status
	var prevAt time.Time
	for {
		st, err := fetchStatus(base, login)
		if err != nil {
			if errors.Is(err, errLogin) {
				fmt.Fprintln(stderr, "edgegw:", err)
				return 1
			}
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

// httpLogin is the user and password for a page behind http.users_file:
// the password from $EDGEGW_HTTP_PASSWORD, else a prompt on a terminal.
func httpLogin(user string) (*url.Userinfo, error) {
	if user == "" {
		return nil, nil
	}
	pw, ok := os.LookupEnv("EDGEGW_HTTP_PASSWORD")
	if !ok && term.IsTerminal(int(os.Stdin.Fd())) {
		fmt.Fprintf(os.Stderr, "password for %s: ", user)
		b, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(os.Stderr)
		if err != nil {
			return nil, err
		}
		pw, ok = string(b), true
	}
	if !ok {
		return nil, errors.New("--user needs a password: set EDGEGW_HTTP_PASSWORD, or run on a terminal for a prompt")
	}
	return url.UserPassword(user, pw), nil
}

var errLogin = errors.New("asks for a login")

func fetchStatus(base string, login *url.Userinfo) (*status.Status, error) {
	c := http.Client{Timeout: 5 * time.Second}
	req, err := http.NewRequest(http.MethodGet, base+"/status", nil)
	if err != nil {
		return nil, err
	}
	if login != nil {
		pw, _ := login.Password()
		req.SetBasicAuth(login.Username(), pw)
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("no answer from %s/status: %w", base, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusUnauthorized && login == nil:
		return nil, fmt.Errorf("%s/status %w (http.users_file): give --user NAME, the password in $EDGEGW_HTTP_PASSWORD or at the prompt", base, errLogin)
	case resp.StatusCode == http.StatusUnauthorized:
		return nil, fmt.Errorf("%s/status refused the login of %s (%w): check the user and password against http.users_file", base, login.Username(), errLogin)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%s/status: %s", base, resp.Status)
	}
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

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	renderUplink(tw, &st.Upstream)
	renderBuffer(tw, st)
	renderSources(tw, st.Sources)
	if prev != nil && dt > 0 {
		renderRates(tw, st, prev, dt)
	}
	tw.Flush()
}

// renderUplink writes the uplink's lines.
func renderUplink(tw io.Writer, u *status.UpstreamStatus) {
	switch {
	case u.Connected:
		fmt.Fprintf(tw, "uplink\t● connected\tstream %s\tacked %d since start\tlast ack %s\n", u.Stream, u.Acked, ago(u.LastAck))
	case !u.DownSince.IsZero():
		fmt.Fprintf(tw, "uplink\t○ DOWN since %s\tstream %s\tacked %d since start\tlast ack %s\n", u.DownSince.Local().Format("15:04:05"), u.Stream, u.Acked, ago(u.LastAck))
	default:
		fmt.Fprintf(tw, "uplink\t○ not connected\tstream %s\t\t\n", u.Stream)
	}
	fmt.Fprintf(tw, "\tdrain %s\tbackfill %d\tresent %d\tskipped %d\n", u.Drain, u.Backfill, u.Resent, u.Skipped)
	if u.Servers != "" {
		fmt.Fprintf(tw, "\thub %s\t\t\t\n", u.Servers)
	}
	if u.LastError != "" {
		fmt.Fprintf(tw, "\tlast error: %s\t\t\t\n", u.LastError)
	}
	for _, h := range u.Held {
		fmt.Fprintf(tw, "\tHELD %s: %d events waiting: %s\t\t\t\n", h.Route, h.Events, h.Why)
	}
}

// renderBuffer writes the buffer's lines, its storage and lanes.
func renderBuffer(tw io.Writer, st *status.Status) {
	b := st.Buffer
	clock := "clock synchronized"
	if !b.ClockSynced {
		clock = "CLOCK NOT SYNCHRONIZED"
	}
	fmt.Fprintf(tw, "buffer\t%d events\t%s held\toldest %s\t%s\n", b.Events, mib(b.Bytes), roundDur(b.OldestAgeSeconds), clock)
	free := "disk free unknown"
	if b.DiskFree != nil {
		free = "disk free " + mib(*b.DiskFree)
	}
	fmt.Fprintf(tw, "\tfile %s of max %s\t%s\tdead letters %d\tdropped %d full, %d age, %d ttl (file's life)\n", mib(b.FileBytes), mib(b.MaxBytes), free, b.DeadLetters, b.DroppedFull, b.DroppedAge, b.DroppedTTL)
	if b.CommitError != "" {
		fmt.Fprintf(tw, "\tCOMMIT FAILING: %s\t\t\t\n", b.CommitError)
	}
	sw := st.Storage
	fmt.Fprintf(tw, "\twritten %s per reading\t%s per hour, %s per day\tcard life %s\t%s\n", kib(sw.PerReading), mib(int64(sw.PerDay/24)), mib(int64(sw.PerDay)), sw.Life, storageFilesText(sw.Files))
	for _, l := range b.Lanes {
		ttl := "-"
		if l.TTL != "" {
			ttl = l.TTL
		}
		fmt.Fprintf(tw, "  lane\tpriority %d, ttl %s\t%d events\toldest %s\tacked %d (file's life)\n", l.Priority, ttl, l.Events, roundDur(l.OldestAgeSeconds), l.Acked)
	}
	fmt.Fprintln(tw, "\t\t\t\t")
}

// renderSources writes a line or three per source.
func renderSources(tw io.Writer, sources []status.SourceStatus) {
	for _, s := range sources {
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
		fmt.Fprintf(tw, "source\t%s %s (%s)\t%s\tingested %d since start\tlast %s\n", dot, s.Name, s.Kind, state, s.Ingested, last)
		if s.Address != "" {
			fmt.Fprintf(tw, "\t  at\t%s\t\t\n", s.Address)
		}
		if s.LastValue != "" {
			fmt.Fprintf(tw, "\t  last value\t%s\t%s\t\n", s.LastFrom, s.LastValue)
		}
	}
}

// renderRates writes ingest and drain rates between prev and st.
func renderRates(tw io.Writer, st, prev *status.Status, dt time.Duration) {
	b, u := st.Buffer, st.Upstream
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
	fmt.Fprintf(tw, "\t\t\t\t\nrates\tingest %s\tdrain %s\ttime to drain %s\t\n", rate(in), rate(out), drain)
}

// rate says a per-second rate with a decimal below 10/s: 0.5 readings a
// second is not 0.
func rate(v float64) string {
	if v < 10 {
		return fmt.Sprintf("%.1f/s", v)
	}
	return fmt.Sprintf("%.0f/s", v)
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

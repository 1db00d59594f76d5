package web

import (
	_ "embed"
	"fmt"
	"html"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/edgegw/edgegw/gateway/status"
)

// pageCSS is the page's stylesheet, inlined into every page.
//
//go:embed page.css
var pageCSS string

// pageData is what the page shows.
type pageData struct {
	S                         status.Status
	Now, Uptime, ConfigRev    string
	RTT, LastAck, TimeToDrain string
	Held, Oldest, DiskFree    string
	Sources                   []pageSource
	Sparks                    []spark
}

type pageSource struct {
	S            status.SourceStatus
	Class, State string // the dot: ok (receiving), stale, err
	Age          string
}

type spark struct {
	Title, Now string
	SVG        string // trusted: built from numbers only (sparkline)
}

// staleAfter: a source that delivered nothing for this long shows stale.
const staleAfter = 5 * time.Minute

func (wb *Web) page(w http.ResponseWriter, _ *http.Request) {
	st := wb.rt.Status()
	hist := wb.hist.Snapshot()
	d := pageData{S: st, Now: time.Now().Format("2006-01-02 15:04:05"), Uptime: secs(st.UptimeSeconds),
		ConfigRev: wb.rt.ConfigRevision(), RTT: "—", LastAck: "never", TimeToDrain: "—", DiskFree: "—",
		Held: bytesText(st.Buffer.Bytes), Oldest: secs(st.Buffer.OldestAgeSeconds)}
	if !st.Upstream.LastAck.IsZero() {
		d.LastAck = secs(time.Since(st.Upstream.LastAck).Seconds()) + " ago"
	}
	if n := len(hist); n > 0 {
		last := hist[n-1]
		if last.RTTMillis >= 0 && st.Upstream.Connected {
			d.RTT = fmt.Sprintf("%.1f ms", last.RTTMillis)
		}
		switch {
		case st.Buffer.Events == 0:
			d.TimeToDrain = "drained"
		case last.drain > last.ingest:
			d.TimeToDrain = secs(float64(st.Buffer.Events) / (last.drain - last.ingest))
		default:
			d.TimeToDrain = "not draining"
		}
	}
	if free, ok := wb.rt.DiskFree(); ok {
		d.DiskFree = bytesText(free)
	}
	for _, s := range st.Sources {
		d.Sources = append(d.Sources, sourceRow(s))
	}
	d.Sparks = sparks(hist)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	io.WriteString(w, renderPage(d))
}

// renderPage writes the page by hand, every value from outside escaped:
// html/template would do, but its reflection keeps the linker from
// dropping unused methods, and the binary grew by 3.2 MB (over the 15 MB
// an arm64 build may take).
func renderPage(d pageData) string {
	e := html.EscapeString
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	st := d.S
	p("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n")
	p("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<meta http-equiv=\"refresh\" content=\"10\">\n")
	p("<title>edgegw %s</title>\n<style>\n%s</style>\n</head>\n<body>\n", e(st.Gateway), pageCSS)
	p("<h1 id=\"gateway\">edgegw %s</h1>\n", e(st.Gateway))
	ready := "ready"
	if !st.Ready {
		ready = "not ready: " + st.NotReady
	}
	p("<div class=\"sub\">%s · up %s · config %s · %s\n · <span id=\"ready\" class=\"%s\">%s</span></div>\n\n",
		e(st.Version), e(d.Uptime), e(d.ConfigRev), e(d.Now), class(st.Ready, "good", "bad"), e(ready))

	renderUplink(p, d)

	bs := st.Buffer
	p("<section id=\"buffer\">\n<h2>Buffer: %d events held (%s)</h2>\n<table>\n", bs.Events, e(d.Held))
	p("<tr><td>oldest</td><td>%s</td><td>clock</td><td id=\"clock\" class=\"%s\">%s</td></tr>\n",
		e(d.Oldest), class(bs.ClockSynced, "good", "bad"), class(bs.ClockSynced, "synchronized", "not synchronized: enable NTP (timedatectl set-ntp true), or fit an RTC; ages count by the boot clock meanwhile"))
	sw := st.Storage
	p("<tr><td>disk free</td><td>%s</td><td>written per reading</td><td id=\"per-reading\">%s <small>(SD wear)</small></td></tr>\n", e(d.DiskFree), e(bytesText(int64(sw.PerReading))))
	p("<tr><td>written per day</td><td id=\"per-day\">%s%s</td><td>card life</td><td id=\"card-life\">%s</td></tr>\n", e(bytesText(int64(sw.PerDay))), e(filesText(sw.Files)), e(sw.Life))
	p("<tr><td>dropped</td><td>%d full · %d age · %d ttl</td><td>dead letters</td><td>%d</td></tr>\n", bs.DroppedFull, bs.DroppedAge, bs.DroppedTTL, bs.DeadLetters)
	if bs.CommitError != "" {
		p("<tr><td>commits</td><td colspan=\"3\" class=\"bad\">%s</td></tr>\n", e(bs.CommitError))
	}
	p("</table>\n<table id=\"lanes\">\n")
	for _, l := range bs.Lanes {
		ttl := ""
		if l.TTL != "" {
			ttl = ", ttl " + l.TTL
		}
		p("<tr class=\"lane\"><td>priority %d%s</td><td>%d events</td><td>oldest %s</td><td>%d acked <small>(file's life)</small></td></tr>\n", l.Priority, e(ttl), l.Events, secs(l.OldestAgeSeconds), l.Acked)
	}
	p("</table>\n</section>\n\n<section id=\"sources\">\n<h2>Sources</h2>\n<table>\n")
	for _, s := range d.Sources {
		kind := ""
		if s.S.Kind != s.S.Name {
			kind = " <small>" + e(s.S.Kind) + "</small>"
		}
		p("<tr class=\"source\"><td><span class=\"dot %s\"></span><b>%s</b>%s</td><td>%s</td><td>%d stored since start · last %s</td></tr>\n",
			s.Class, e(s.S.Name), kind, e(s.State), s.S.Ingested, e(s.Age))
		if s.S.Address != "" {
			p("<tr><td colspan=\"3\"><small>at %s</small></td></tr>\n", e(s.S.Address))
		}
		from := ""
		if s.S.LastFrom != "" {
			from = "<small>" + e(s.S.LastFrom) + "</small> "
		}
		p("<tr><td colspan=\"3\" class=\"val\">%s%s</td></tr>\n", from, e(s.S.LastValue))
		if b := s.S; b.Kind == status.KindMQTTServer && b.Pending != nil {
			var refused uint64
			for _, n := range b.Refused {
				refused += n
			}
			p("<tr class=\"broker\"><td colspan=\"3\"><small>%d clients · %d not logged in yet · %d refused · %d retained (%s) · sessions file %s</small></td></tr>\n",
				*b.Clients, *b.Pending, refused, *b.RetainedKept, e(bytesText(*b.RetainedBytes)), e(bytesText(*b.SessionsBytes)))
		}
	}
	p("</table>\n</section>\n\n<section>\n<h2>Last hour</h2>\n<div class=\"spark\">\n")
	for _, sp := range d.Sparks {
		p("<div><small>%s — now %s</small>%s</div>\n", e(sp.Title), e(sp.Now), sp.SVG)
	}
	p("</div>\n</section>\n<small>Refreshes every 10 s · JSON: <a href=\"status\">/status</a> · <a href=\"metrics\">/metrics</a></small>\n</body>\n</html>\n")
	return b.String()
}

// renderUplink writes the page's uplink section.
func renderUplink(p func(string, ...any), d pageData) {
	e := html.EscapeString
	u := d.S.Upstream
	state := "connected"
	if !u.Connected {
		state = "down"
		if !u.DownSince.IsZero() {
			state += " since " + u.DownSince.Format("15:04:05")
		}
	}
	p("<section id=\"uplink\">\n<h2><span class=\"dot %s\"></span>Uplink: %s</h2>\n<table>\n", class(u.Connected, "ok", "err"), e(state))
	p("<tr><td>hub</td><td colspan=\"3\">%s</td></tr>\n", e(u.Servers))
	p("<tr><td>stream</td><td>%s</td><td>round trip</td><td>%s</td></tr>\n", e(u.Stream), e(d.RTT))
	p("<tr><td>last PubAck</td><td>%s</td><td>time to drain</td><td>%s</td></tr>\n", e(d.LastAck), e(d.TimeToDrain))
	p("<tr><td>acknowledged since start</td><td>%d</td><td>drain</td><td>%s (%d backfill)</td></tr>\n", u.Acked, e(u.Drain), u.Backfill)
	p("<tr><td>on the wire per reading</td><td id=\"wire-per-reading\">%s <small>(%s up, %s down since start)</small></td><td>per day</td><td id=\"wire-per-day\">%s</td></tr>\n",
		e(bytesText(int64(u.WirePerReading))), e(bytesText(u.WireUp)), e(bytesText(u.WireDown)), e(bytesText(int64(u.WirePerDay))))
	if n := suppressed(d.S.Sources); n > 0 {
		p("<tr><td>readings suppressed</td><td id=\"suppressed\" colspan=\"3\">%d <small>(report by exception: nothing moved past its band)</small></td></tr>\n", n)
	}
	if u.LastError != "" {
		p("<tr><td>last error</td><td colspan=\"3\" class=\"bad\">%s</td></tr>\n", e(u.LastError))
	}
	for _, h := range u.Held {
		p("<tr><td>held route</td><td colspan=\"3\" class=\"bad\">%s: %d events waiting since %s. %s</td></tr>\n", e(h.Route), h.Events, e(h.Since.Format("15:04:05")), e(h.Why))
	}
	p("</table>\n</section>\n\n")
}

// suppressed is the readings report by exception kept back, all sensors.
func suppressed(srcs []status.SourceStatus) uint64 {
	var n uint64
	for _, s := range srcs {
		n += s.Suppressed
	}
	return n
}

// class is yes when ok, else no.
func class(ok bool, yes, no string) string {
	if ok {
		return yes
	}
	return no
}

// sourceRow is a source's line on the page: its dot says receiving, stale
// (nothing for staleAfter) or error.
func sourceRow(s status.SourceStatus) pageSource {
	ps := pageSource{S: s, Class: "ok", State: "receiving", Age: "never"}
	if s.LastReadingAge != nil {
		ps.Age = secs(*s.LastReadingAge) + " ago"
	}
	switch {
	case !s.Up:
		ps.Class, ps.State = "err", "error"
		if s.LastError != "" {
			ps.State += ": " + s.LastError
		}
	case s.LastReadingAge == nil || *s.LastReadingAge > staleAfter.Seconds():
		ps.Class, ps.State = "stale", "stale"
	}
	return ps
}

// sparks are the page's sparklines: backlog and oldest age of each
// priority in use, ingest and drain rates.
func sparks(hist []Sample) []spark {
	series := func(title, unit string, f func(Sample) float64) spark {
		v := make([]float64, len(hist))
		for i, s := range hist {
			v[i] = f(s)
		}
		now := "—"
		if len(v) > 0 {
			// The scale: the line's top is the window's maximum.
			now = fmt.Sprintf("%.0f%s (top %.0f%s)", v[len(v)-1], unit, slices.Max(v), unit)
		}
		return spark{Title: title, Now: now, SVG: sparkline(v)}
	}
	out := []spark{
		series("ingest", "/s", func(s Sample) float64 { return s.ingest }),
		series("drain", "/s", func(s Sample) float64 { return s.drain }),
	}
	for p := range 10 {
		used := false
		for _, s := range hist {
			used = used || s.Backlog[p] > 0
		}
		if !used {
			continue
		}
		out = append(out,
			series(fmt.Sprintf("backlog, priority %d", p), " events", func(s Sample) float64 { return float64(s.Backlog[p]) }),
			series(fmt.Sprintf("oldest, priority %d", p), " s", func(s Sample) float64 { return s.Oldest[p] }))
	}
	return out
}

// sparkline draws v as an inline SVG polyline, scaled to its maximum.
func sparkline(v []float64) string {
	const w, h = 360.0, 48.0
	var b strings.Builder
	fmt.Fprintf(&b, `<svg viewBox="0 0 %g %g" preserveAspectRatio="none" role="img">`, w, h)
	top := 0.0
	for _, x := range v {
		top = max(top, x)
	}
	if len(v) > 1 {
		b.WriteString(`<polyline fill="none" stroke="currentColor" stroke-width="1.5" points="`)
		for i, x := range v {
			y := h - 2
			if top > 0 {
				y = h - 2 - (x/top)*(h-4)
			}
			fmt.Fprintf(&b, "%.1f,%.1f ", float64(i)*(w/float64(historyLen-1)), y)
		}
		b.WriteString(`"/>`)
	}
	b.WriteString(`</svg>`)
	return b.String() // numbers only: nothing from outside
}

func secs(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	}
	return d.Round(time.Minute).String()
}

// filesText says what each file has had written since start, or nothing
// for one file.
func filesText(fs []status.StorageFile) string {
	if len(fs) < 2 {
		return ""
	}
	parts := make([]string, len(fs))
	for i, f := range fs {
		approx := ""
		if f.Estimated {
			approx = "≈"
		}
		parts[i] = fmt.Sprintf("%s %s%s", strings.ReplaceAll(f.File, "_", " "), approx, bytesText(f.Written))
	}
	return " (since start: " + strings.Join(parts, " · ") + ")"
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// BasicAuth lets through requests whose user and password verify accepts
// (and any to /healthz and /readyz, which say nothing); others get 401.
func BasicAuth(verify func(name, password string) bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
			next.ServeHTTP(w, r)
			return
		}
		if name, pass, ok := r.BasicAuth(); ok && verify(name, pass) {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="edgegw", charset="UTF-8"`)
		http.Error(w, "log in (http.users_file)", http.StatusUnauthorized)
	})
}

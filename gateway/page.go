package gateway

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/edgegw/edgegw/gateway/mqttbroker"
)

//go:embed web/page.html
var pageHTML string

// pageTemplate is parsed once; a broken template is a build defect that
// TestPageTemplate catches.
var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{"secs": secs}).Parse(pageHTML))

// pageData is what the page shows.
type pageData struct {
	S                         Status
	Now, Uptime, ConfigRev    string
	RTT, LastAck, TimeToDrain string
	Held, Oldest, DiskFree    string
	WrittenPerHour            string
	Sources                   []pageSource
	Sparks                    []spark
}

type pageSource struct {
	S            SourceStatus
	Class, State string // the dot: ok (receiving), stale, err
	Age          string
}

type spark struct {
	Title, Now string
	SVG        template.HTML
}

// staleAfter: a source that delivered nothing for this long shows stale.
const staleAfter = 5 * time.Minute

func (g *Gateway) page(w http.ResponseWriter, _ *http.Request) {
	st := g.Status()
	hist := g.history.snapshot()
	d := pageData{S: st, Now: time.Now().Format("2006-01-02 15:04:05"), Uptime: secs(st.UptimeSeconds),
		ConfigRev: g.configRev(), RTT: "—", LastAck: "never", TimeToDrain: "—", DiskFree: "—", WrittenPerHour: "—",
		Held: bytesText(st.Buffer.Bytes), Oldest: secs(st.Buffer.OldestAgeSeconds)}
	if !st.Upstream.LastAck.IsZero() {
		d.LastAck = secs(time.Since(st.Upstream.LastAck).Seconds()) + " ago"
	}
	if n := len(hist); n > 0 {
		last := hist[n-1]
		if last.rttMillis >= 0 && st.Upstream.Connected {
			d.RTT = fmt.Sprintf("%.1f ms", last.rttMillis)
		}
		switch {
		case st.Buffer.Events == 0:
			d.TimeToDrain = "drained"
		case last.drain > last.ingest:
			d.TimeToDrain = secs(float64(st.Buffer.Events) / (last.drain - last.ingest))
		default:
			d.TimeToDrain = "not draining"
		}
		if n > 1 && hist[0].written <= last.written {
			if dt := last.at.Sub(hist[0].at).Hours(); dt > 0 {
				d.WrittenPerHour = bytesText(int64(float64(last.written-hist[0].written) / dt))
			}
		}
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(g.cfg.Buffer.Path), &fs); err == nil {
		d.DiskFree = bytesText(int64(fs.Bavail) * int64(fs.Bsize))
	}
	for _, s := range st.Sources {
		d.Sources = append(d.Sources, sourceRow(s))
	}
	d.Sparks = sparks(hist)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := pageTemplate.Execute(w, d); err != nil {
		g.log.Error("render the page", "err", err)
	}
}

// sourceRow is a source's line on the page: its dot says receiving, stale
// (nothing for staleAfter) or error.
func sourceRow(s SourceStatus) pageSource {
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
func sparks(hist []sample) []spark {
	series := func(title, unit string, f func(sample) float64) spark {
		v := make([]float64, len(hist))
		for i, s := range hist {
			v[i] = f(s)
		}
		now := "—"
		if len(v) > 0 {
			now = fmt.Sprintf("%.0f%s", v[len(v)-1], unit)
		}
		return spark{Title: title, Now: now, SVG: sparkline(v)}
	}
	out := []spark{
		series("ingest", "/s", func(s sample) float64 { return s.ingest }),
		series("drain", "/s", func(s sample) float64 { return s.drain }),
	}
	for p := range 10 {
		used := false
		for _, s := range hist {
			used = used || s.backlog[p] > 0
		}
		if !used {
			continue
		}
		out = append(out,
			series(fmt.Sprintf("backlog, priority %d", p), " events", func(s sample) float64 { return float64(s.backlog[p]) }),
			series(fmt.Sprintf("oldest, priority %d", p), " s", func(s sample) float64 { return s.oldest[p] }))
	}
	return out
}

// sparkline draws v as an inline SVG polyline, scaled to its maximum.
func sparkline(v []float64) template.HTML {
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
	return template.HTML(b.String()) // numbers only: nothing from outside
}

// configRev is a short hash of the effective config.
func (g *Gateway) configRev() string {
	sum := sha256.Sum256([]byte(g.cfg.Summary()))
	return hex.EncodeToString(sum[:4])
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

// basicAuth lets through requests with a user and password of users (or
// to /healthz and /readyz, which say nothing); others get 401.
func basicAuth(users []mqttbroker.User, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
			next.ServeHTTP(w, r)
			return
		}
		name, pass, ok := r.BasicAuth()
		if ok {
			for _, u := range users {
				if u.Name == name && bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(pass)) == nil {
					next.ServeHTTP(w, r)
					return
				}
			}
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="edgegw", charset="UTF-8"`)
		http.Error(w, "log in (http.users_file)", http.StatusUnauthorized)
	})
}

package sensors

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"time"
)

// Report is report by exception for a polled sensor: a reading is sent
// only when one of its values moved past its band since the last reading
// sent, or when Heartbeat has passed since then; every value of the
// reading goes together. The rest are suppressed and counted.
type Report struct {
	// Deadband is the absolute band around the last sent value; a value
	// further from it than the band is a change.
	Deadband float64 `yaml:"deadband,omitempty"`
	// DeadbandPct is the band as a percentage of the last sent value's
	// magnitude. With both, the band is the wider of the two.
	DeadbandPct float64 `yaml:"deadband_pct,omitempty"`
	// Heartbeat sends a reading at least this often (default 1h).
	Heartbeat time.Duration `yaml:"heartbeat,omitempty"`
	// Values gives some values bands of their own, by name.
	Values map[string]Band `yaml:"values,omitempty"`
}

// Band is one value's deadbands.
type Band struct {
	Deadband    float64 `yaml:"deadband,omitempty"`
	DeadbandPct float64 `yaml:"deadband_pct,omitempty"`
}

// DefaultHeartbeat is a report's heartbeat when the config gives none.
const DefaultHeartbeat = time.Hour

// Check reports what is wrong with r, each at its key under report.
func (r Report) Check() []*SpecError {
	var errs []*SpecError
	check := func(field string, b Band) {
		if b.Deadband < 0 || math.IsNaN(b.Deadband) || math.IsInf(b.Deadband, 0) {
			errs = append(errs, specErr(field+"deadband", "%v is not a finite band of 0 or more", b.Deadband))
		}
		if b.DeadbandPct < 0 || b.DeadbandPct > 1000 || math.IsNaN(b.DeadbandPct) {
			errs = append(errs, specErr(field+"deadband_pct", "%v is outside 0..1000 (percent of the last sent value)", b.DeadbandPct))
		}
	}
	check("report.", Band{r.Deadband, r.DeadbandPct})
	names := make([]string, 0, len(r.Values))
	for n := range r.Values {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		check("report.values."+n+".", r.Values[n])
	}
	if r.Heartbeat < 0 {
		errs = append(errs, specErr("report.heartbeat", "must not be negative (default %s)", DefaultHeartbeat))
	}
	return errs
}

// LastSent is what a sensor last sent, as report by exception compares
// with it; the gateway stores it with the reading, in the same commit, so
// a restart picks up where it was.
type LastSent struct {
	Time   time.Time          `json:"t"`
	Values map[string]float64 `json:"v"`
	Text   map[string]string  `json:"s,omitempty"`
}

// ParseLastSent reads a stored LastSent; nil for none or a damaged one
// (the next reading is then sent).
func ParseLastSent(b []byte) *LastSent {
	if len(b) == 0 {
		return nil
	}
	var l LastSent
	if json.Unmarshal(b, &l) != nil || l.Time.IsZero() {
		return nil
	}
	return &l
}

func (l *LastSent) encode() []byte {
	b, _ := json.Marshal(l)
	return b
}

// due says whether the reading (vals, text at now) is sent, and why.
func (r Report) due(last *LastSent, now time.Time, vals map[string]float64, text map[string]string) (bool, string) {
	if last == nil {
		return true, "first reading"
	}
	hb := r.Heartbeat
	if hb == 0 {
		hb = DefaultHeartbeat
	}
	if now.Sub(last.Time) >= hb || now.Before(last.Time) {
		return true, "heartbeat"
	}
	if len(vals) != len(last.Values) || len(text) != len(last.Text) {
		return true, "a value appeared or vanished"
	}
	for name, v := range vals {
		old, ok := last.Values[name]
		if !ok {
			return true, name + " appeared"
		}
		b, own := r.Values[name]
		if !own {
			b = Band{r.Deadband, r.DeadbandPct}
		}
		band := max(b.Deadband, b.DeadbandPct/100*math.Abs(old))
		if math.Abs(v-old) > band || math.IsNaN(v) != math.IsNaN(old) {
			return true, fmt.Sprintf("%s moved %g", name, v-old)
		}
	}
	for name, t := range text {
		if old, ok := last.Text[name]; !ok || old != t {
			return true, name + " changed"
		}
	}
	return false, ""
}

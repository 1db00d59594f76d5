package gateway

import (
	"fmt"
	"time"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/config"
)

// StorageStatus is what edgegw writes to its storage, by file, and what
// that means for the card.
type StorageStatus struct {
	Files []StorageFile `json:"files"`
	// Written since start, all files; per reading appended since start;
	// per day at the rate of the last hour (since start when shorter).
	Written    int64   `json:"written"`
	PerReading float64 `json:"written_per_reading"`
	PerDay     float64 `json:"written_per_day"`
	// The card (gateway.storage), and how long PerDay takes to write it
	// RatedWrites times: Life says it in words, "unknown" without both.
	CardSize    int64   `json:"card_size,omitempty"`
	RatedWrites int     `json:"card_rated_writes,omitempty"`
	LifeYears   float64 `json:"card_life_years,omitempty"`
	Life        string  `json:"card_life"`
}

// StorageFile is one file's part of StorageStatus.
type StorageFile struct {
	File    string `json:"file"` // buffer, broker_sessions
	Path    string `json:"path"`
	Written int64  `json:"written"` // since start
	Commits uint64 `json:"commits"` // since start: each writes a few pages and fsyncs twice
	// Estimated: counted as commits of three pages (the broker's
	// sessions file), not as the bytes written.
	Estimated bool `json:"estimated,omitempty"`
}

// storageStatus fills in the totals and the card's life from files, the
// readings appended since start, the uptime and the history's written
// figures (oldest first, each a total of files).
func storageStatus(card *config.StorageConfig, files []StorageFile, readings uint64, uptime time.Duration, hist []sample) StorageStatus {
	s := StorageStatus{Files: files, Life: "unknown: set gateway.storage.size and rated_writes"}
	for _, f := range files {
		s.Written += f.Written
	}
	if readings > 0 {
		s.PerReading = float64(s.Written) / float64(readings)
	}
	if uptime > 0 {
		s.PerDay = float64(s.Written) / uptime.Seconds() * 86400
	}
	if n := len(hist); n > 1 {
		first, last := hist[0], hist[n-1]
		if dt := last.at.Sub(first.at); dt >= time.Minute && last.written >= first.written {
			s.PerDay = float64(last.written-first.written) / dt.Seconds() * 86400
		}
	}
	if card == nil || card.Size <= 0 || card.RatedWrites <= 0 {
		return s
	}
	s.CardSize, s.RatedWrites = int64(card.Size), card.RatedWrites
	if s.PerDay <= 0 {
		s.Life = "no writes yet"
		return s
	}
	days := float64(card.Size) * float64(card.RatedWrites) / s.PerDay
	s.LifeYears = days / 365.25
	s.Life = lifeText(days)
	return s
}

// lifeText says a number of days as an operator would.
func lifeText(days float64) string {
	switch {
	case days >= 2*365.25:
		return fmt.Sprintf("about %.0f years", days/365.25)
	case days >= 60:
		return fmt.Sprintf("about %.0f months", days/30.44)
	default:
		return fmt.Sprintf("about %.0f days", days)
	}
}

// storageFiles is what each file has had written since start: the
// buffer's (when open) and the embedded broker's sessions file.
func storageFiles(c *config.Config, open bool, bs buffer.Stats, sources []SourceStatus) []StorageFile {
	var fs []StorageFile
	if open {
		fs = append(fs, StorageFile{File: "buffer", Path: c.Buffer.Path, Written: bs.Written, Commits: bs.Commits})
	}
	for _, s := range sources {
		if s.SessionsWritten != nil {
			fs = append(fs, StorageFile{File: "broker_sessions", Path: brokerSessionsPath(c), Written: *s.SessionsWritten, Commits: uint64(*s.SessionsWritten) / (3 * 4096), Estimated: true})
		}
	}
	return fs
}

package gateway

import (
	"fmt"
	"time"

	"github.com/edgegw/edgegw/buffer"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/status"
	"github.com/edgegw/edgegw/gateway/web"
)

// storageStatus fills in the totals and the card's life from files, the
// readings appended since start, the uptime and the history's written
// figures (oldest first, each a total of files).
func storageStatus(card *config.StorageConfig, files []status.StorageFile, readings uint64, uptime time.Duration, hist []web.Sample) status.StorageStatus {
	s := status.StorageStatus{Files: files, Life: "unknown: set gateway.storage.size and rated_writes"}
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
		if dt := last.At.Sub(first.At); dt >= time.Minute && last.Written >= first.Written {
			s.PerDay = float64(last.Written-first.Written) / dt.Seconds() * 86400
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
func storageFiles(c *config.Config, open bool, bs buffer.Stats, sources []status.SourceStatus) []status.StorageFile {
	var fs []status.StorageFile
	if open {
		fs = append(fs, status.StorageFile{File: "buffer", Path: c.Buffer.Path, Written: bs.Written, Commits: bs.Commits})
	}
	for _, s := range sources {
		if s.SessionsWritten != nil {
			fs = append(fs, status.StorageFile{File: "broker_sessions", Path: brokerSessionsPath(c), Written: *s.SessionsWritten, Commits: *s.SessionsCommits, Estimated: true})
		}
	}
	return fs
}

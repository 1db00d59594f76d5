package gateway

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/status"
	"github.com/edgegw/edgegw/gateway/web"
)

// The wear budget's arithmetic: per reading, per day (from the history
// when it spans a minute, since start before), and the card's life.
func TestStorageBudget(t *testing.T) {
	files := []status.StorageFile{{File: "buffer", Written: 900_000}, {File: "broker_sessions", Written: 100_000, Estimated: true}}
	s := storageStatus(nil, files, 250, 24*time.Hour, nil)
	if s.Written != 1_000_000 || s.PerReading != 4000 || s.PerDay != 1_000_000 {
		t.Fatalf("since start: %+v", s)
	}
	if !strings.HasPrefix(s.Life, "unknown") || s.LifeYears != 0 {
		t.Fatalf("no card configured, life %q %v", s.Life, s.LifeYears)
	}

	// The last hour wrote 1 GB/day's worth: 32 GB rated for 3000 writes
	// lasts 96,000 days.
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	hist := []web.Sample{{At: t0, Written: 5_000_000}, {At: t0.Add(36 * time.Minute), Written: 5_000_000 + 25_000_000}}
	s = storageStatus(&config.StorageConfig{Size: 32e9, RatedWrites: 3000}, files, 250, 24*time.Hour, hist)
	if math.Abs(s.PerDay-1e9) > 1 {
		t.Fatalf("per day from the history: %v", s.PerDay)
	}
	if s.LifeYears < 262.8 || s.LifeYears > 262.9 || s.Life != "about 263 years" {
		t.Fatalf("life %v years, %q", s.LifeYears, s.Life)
	}
	// Less than a minute of history: since start.
	s = storageStatus(&config.StorageConfig{Size: 1e9, RatedWrites: 100}, files, 250, time.Hour, hist[:1])
	if s.PerDay != 24_000_000 || s.Life != "about 11 years" {
		t.Fatalf("since start: %v per day, %q", s.PerDay, s.Life)
	}
	s = storageStatus(&config.StorageConfig{Size: 1e9, RatedWrites: 10}, files, 250, time.Hour, nil)
	if s.Life != "about 14 months" {
		t.Fatalf("%q", s.Life)
	}
	s = storageStatus(&config.StorageConfig{Size: 1e8, RatedWrites: 10}, files, 250, time.Hour, nil)
	if s.Life != "about 42 days" {
		t.Fatalf("%q", s.Life)
	}
	s = storageStatus(&config.StorageConfig{Size: 1e8, RatedWrites: 10}, nil, 0, time.Hour, nil)
	if s.Life != "no writes yet" || s.PerReading != 0 {
		t.Fatalf("nothing written: %+v", s)
	}
}

// Package status is edgegw's read model: what /status serves, the
// metrics and the on-site page show, the fleet's status entries and
// heartbeats carry, and edgegw status prints. It imports nothing of
// edgegw.
package status

import (
	"fmt"
	"strings"
	"time"
)

// MaxPriority is the lowest lane priority (the buffer's).
const MaxPriority = 9

// Source kinds, as in /status and the source_up metric.
const (
	KindMQTT = "mqtt"
	// KindMQTTServer is the embedded broker (mqtt.server).
	KindMQTTServer = "mqtt-server"
	KindSensor     = "sensor" // a polled I²C, 1-Wire or simulated sensor
	KindGPIO       = "gpio"   // an edge source or a pulse counter
)

// Status is what /status serves: one snapshot of the whole gateway.
type Status struct {
	Gateway       string         `json:"gateway"`
	Version       string         `json:"version"`
	Started       time.Time      `json:"started,omitzero"`
	UptimeSeconds float64        `json:"uptime_seconds"`
	Ready         bool           `json:"ready"`
	NotReady      string         `json:"not_ready,omitempty"` // why not, when not
	Buffer        BufferStatus   `json:"buffer"`
	Upstream      UpstreamStatus `json:"upstream"`
	Sources       []SourceStatus `json:"sources"`
	Storage       StorageStatus  `json:"storage"` // bytes written (SD wear)
}

// BufferStatus is the buffer part of Status.
type BufferStatus struct {
	Open             bool    `json:"open"`
	Path             string  `json:"path"`
	Events           uint64  `json:"events"`
	Bytes            int64   `json:"bytes"`
	MaxBytes         int64   `json:"max_bytes"`
	FileBytes        int64   `json:"file_bytes"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	FirstSeq         uint64  `json:"first_seq"`
	NextSeq          uint64  `json:"next_seq"`
	Appended         uint64  `json:"appended"`
	Acked            uint64  `json:"acked"`
	DroppedFull      uint64  `json:"dropped_full"`
	DroppedAge       uint64  `json:"dropped_age"`
	Rejected         uint64  `json:"rejected"`
	// The dead-letter lane: events set aside (edgegw buffer dead-letters).
	DeadLetters uint64 `json:"dead_letters"`
	DeadBytes   int64  `json:"dead_letter_bytes"`
	DeadTotal   uint64 `json:"dead_letters_total"`
	DeadDropped uint64 `json:"dead_letters_dropped"`
	// Damaged files moved aside at open, and the last one in words.
	Quarantined    uint64 `json:"quarantined"`
	LastQuarantine string `json:"last_quarantine,omitempty"`
	// CommitError: the last commit failed (a full disk, an I/O error).
	CommitError      string    `json:"commit_error,omitempty"`
	CommitErrorSince time.Time `json:"commit_error_since,omitzero"`
	DroppedTTL       uint64    `json:"dropped_ttl"`
	// ClockSynced: the wall clock is synchronized now (docs/lanes.md).
	ClockSynced bool `json:"clock_synced"`
	// DiskFree is what an unprivileged writer may still use on the
	// buffer's file system; absent when it cannot be read.
	DiskFree *int64 `json:"disk_free,omitempty"`
	// Lanes: one per priority and TTL that holds or has counted events.
	Lanes []LaneStatus `json:"lanes"`
}

// LaneStatus is one lane of the buffer in Status.
type LaneStatus struct {
	Priority         int     `json:"priority"`
	TTL              string  `json:"ttl,omitempty"`
	Events           uint64  `json:"events"`
	Bytes            int64   `json:"bytes"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	Acked            uint64  `json:"acked"`
	DroppedFull      uint64  `json:"dropped_full"`
	DroppedAge       uint64  `json:"dropped_age"`
	DroppedTTL       uint64  `json:"dropped_ttl"`
}

// UpstreamStatus is the JetStream side of Status.
type UpstreamStatus struct {
	Connected bool   `json:"connected"`
	Stream    string `json:"stream"`
	Published uint64 `json:"published"`
	Acked     uint64 `json:"acked"`
	Resent    uint64 `json:"resent"`
	Skipped   uint64 `json:"skipped"`
	Rejected  uint64 `json:"rejected"`
	Expired   uint64 `json:"expired"` // past their MQTT 5 message expiry, not sent
	LastSeq   uint64 `json:"last_acked_seq"`
	LagEvents uint64 `json:"lag_events"` // buffered, not yet acknowledged upstream
	// The uplink's bytes on the network since start (below TLS, after
	// compression: what a metered link bills), per reading acknowledged
	// and per day at this rate.
	WireUp         int64   `json:"wire_up_bytes"`
	WireDown       int64   `json:"wire_down_bytes"`
	WirePerReading float64 `json:"wire_bytes_per_reading"`
	WirePerDay     float64 `json:"wire_bytes_per_day"`
	LagSeconds     float64 `json:"lag_seconds"` // age of the oldest of those
	LastError      string  `json:"last_error,omitempty"`
	Drain          string  `json:"drain"`    // live_first or oldest_first
	Servers        string  `json:"servers"`  // the hub's URLs, credentials hidden
	Backfill       uint64  `json:"backfill"` // events sent behind live ones
	// ConfigError: the stream is missing or refuses this gateway; retrying
	// will not help until the hub or the config changes.
	ConfigError bool `json:"config_error,omitempty"`
	// Held: routes whose events the stream does not capture; they wait
	// in the buffer while the others flow.
	Held      []HeldRoute `json:"held,omitempty"`
	DownSince time.Time   `json:"down_since,omitzero"`
	LastAck   time.Time   `json:"last_ack,omitzero"`
}

// HeldRoute is a route the stream does not capture, in UpstreamStatus.
type HeldRoute struct {
	Route   string    `json:"route"`   // its subject filter
	Subject string    `json:"subject"` // the first subject held
	Events  uint64    `json:"events"`  // passed over since the forwarder's session began; they wait in the buffer
	Since   time.Time `json:"since"`
	Why     string    `json:"why"` // and the fix
}

// SourceStatus is one source in Status.
type SourceStatus struct {
	Name        string `json:"name"`
	Kind        string `json:"kind"` // mqtt, sensor, gpio
	Up          bool   `json:"up"`
	Ingested    uint64 `json:"ingested"`     // events committed to the buffer
	Duplicates  uint64 `json:"duplicates"`   // redelivered copies of stored events, dropped
	StoreErrors uint64 `json:"store_errors"` // commits the buffer refused (each retried)
	SetAside    uint64 `json:"set_aside"`    // events too large to store, put in the dead-letter lane
	// MQTT only.
	TooLarge   uint64 `json:"too_large,omitempty"`
	Unmappable uint64 `json:"unmappable,omitempty"`
	Clients    *int64 `json:"clients,omitempty"` // the embedded broker: devices connected
	// Address is where the source is: the broker it subscribes to
	// (credentials hidden), or the embedded broker's listeners.
	Address string `json:"address,omitempty"`
	// The embedded broker's limits (docs/mqtt-server.md): connections
	// not logged in yet, connections and logins refused by reason,
	// retained messages kept and their bytes, the sessions file's size.
	Pending       *int              `json:"pending_logins,omitempty"`
	Refused       map[string]uint64 `json:"refused_connections,omitempty"`
	RetainedKept  *int              `json:"retained_kept,omitempty"`
	RetainedBytes *int64            `json:"retained_bytes,omitempty"`
	SessionsBytes *int64            `json:"sessions_file_bytes,omitempty"`
	// SessionsWritten estimates the bytes written to the sessions file
	// since start (Status.Storage).
	SessionsWritten *int64  `json:"sessions_file_written,omitempty"`
	SessionsCommits *uint64 `json:"sessions_file_commits,omitempty"`
	Retained        uint64  `json:"retained_skipped,omitempty"` // retained copies on (re)subscribe, skipped
	// Sensors and pins only.
	NotStored uint64 `json:"not_stored,omitempty"` // readings skipped because the buffer refused them
	Errors    uint64 `json:"errors,omitempty"`     // failed opens and reads
	// Suppressed: readings report by exception did not send.
	Suppressed uint64 `json:"suppressed,omitempty"`
	LastError  string `json:"last_error,omitempty"`

	LastValue      string    `json:"last_value,omitempty"` // the last reading's payload, at most 120 bytes
	LastFrom       string    `json:"last_from,omitempty"`  // its MQTT topic or sensor
	LastReading    time.Time `json:"last_reading,omitzero"`
	LastReadingAge *float64  `json:"last_reading_age_seconds,omitempty"`
}

// Ready: the buffer is open and commits, the upstream does not refuse
// this gateway's events, and at least one source can deliver. An uplink
// that is down does not make the gateway unready: buffering through
// outages is its job.
func Ready(st Status) (bool, string) {
	if !st.Buffer.Open {
		return false, "buffer not open"
	}
	if b := st.Buffer; b.CommitError != "" {
		return false, fmt.Sprintf("buffer cannot commit since %s: %s", b.CommitErrorSince.UTC().Format(time.RFC3339), b.CommitError)
	}
	if u := st.Upstream; u.ConfigError {
		return false, "upstream refuses this gateway's events: " + u.LastError
	}
	if h := st.Upstream.Held; len(h) > 0 {
		why := make([]string, len(h))
		for i, r := range h {
			why[i] = fmt.Sprintf("route %s held since %s (%d events waiting): %s", r.Route, r.Since.UTC().Format(time.RFC3339), r.Events, r.Why)
		}
		return false, strings.Join(why, "; ")
	}
	var why []string
	for _, s := range st.Sources {
		if s.Up {
			return true, ""
		}
		why = append(why, fmt.Sprintf("%s: %s", s.Name, s.LastError))
	}
	if len(why) == 0 {
		return false, "no source running"
	}
	return false, "no source running (" + strings.Join(why, "; ") + ")"
}

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

// Fleet states, as in the status bucket.
const (
	StateApplied    = "applied"     // the desired config runs (or none is desired)
	StateApplying   = "applying"    // running it, waiting for the health check
	StateRejected   = "rejected"    // it failed the checks; the old config runs
	StateRolledBack = "rolled_back" // it failed its health check; the last known good runs
)

// FleetStatus is a gateway's entry in the status bucket (key gw.<id>),
// and the fleet part of the config endpoint. Revisions are the config
// bucket's: desired_revision is the newest of the gateway's two keys, and
// desired/applied give each key's.
type FleetStatus struct {
	Gateway         string            `json:"gateway"`
	DesiredRevision uint64            `json:"desired_revision"`
	AppliedRevision uint64            `json:"applied_revision"`
	Desired         map[string]uint64 `json:"desired"`
	Applied         map[string]uint64 `json:"applied"`
	State           string            `json:"state"`
	Error           string            `json:"error,omitempty"`
	At              time.Time         `json:"at"`
	Heartbeat       *Heartbeat        `json:"heartbeat,omitempty"`
}

// Heartbeat is published on edgegw.status.<id> every fleet.heartbeat, and
// kept in the status entry.
type Heartbeat struct {
	Gateway          string          `json:"gateway"`
	At               time.Time       `json:"at"`
	Uplink           bool            `json:"uplink"`
	Backlog          uint64          `json:"backlog"`
	BacklogBytes     int64           `json:"backlog_bytes"`
	OldestAgeSeconds float64         `json:"oldest_age_seconds"`
	Lanes            []HeartbeatLane `json:"lanes,omitempty"`
	ClockSynced      bool            `json:"clock_synced"`
	DiskFreeBytes    int64           `json:"disk_free_bytes"`
	Version          string          `json:"version"`
	GoVersion        string          `json:"go_version"`
	AppliedRevision  uint64          `json:"applied_revision"`
	State            string          `json:"state"`
	// NotReady is /readyz's reason when the gateway is not ready: a held
	// route, a buffer that cannot commit, an upstream that refuses.
	NotReady string `json:"not_ready,omitempty"`
}

// HeartbeatLane is one buffer lane in a heartbeat.
type HeartbeatLane struct {
	Priority         int     `json:"priority"`
	TTL              string  `json:"ttl,omitempty"`
	Events           uint64  `json:"events"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
}

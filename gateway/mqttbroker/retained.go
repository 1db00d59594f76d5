package mqttbroker

import (
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	bbolt "go.etcd.io/bbolt"
)

// Defaults of the bounds on what clients make the broker keep.
const (
	DefaultMaxRetained      = 10_000
	DefaultMaxRetainedBytes = 4 << 20
	DefaultSessionMaxBytes  = 16 << 20

	// RefusedRetained: a retained publish past the bounds, delivered but
	// not kept.
	RefusedRetained = "retained_limit"
)

// retainedSet is what the broker retains, topic by topic: its count and
// payload bytes bound it.
type retainedSet struct {
	mu    sync.Mutex
	size  map[string]int
	bytes int64
}

// load takes what mochi loaded from the sessions file.
func (r *retainedSet) load(srv *mqtt.Server) {
	for topic, pk := range srv.Topics.Retained.GetAll() {
		r.set(topic, len(pk.Payload))
	}
}

// set records topic's retained payload of n bytes (0: none).
func (r *retainedSet) set(topic string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.size == nil {
		r.size = map[string]int{}
	}
	r.bytes -= int64(r.size[topic])
	delete(r.size, topic)
	if n > 0 {
		r.size[topic] = n
		r.bytes += int64(n)
	}
}

// fits says whether retaining n bytes on topic stays within the bounds.
func (r *retainedSet) fits(topic string, n, maxCount int, maxBytes int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	old, had := r.size[topic]
	count := len(r.size)
	if !had {
		count++
	}
	return count <= maxCount && r.bytes-int64(old)+int64(n) <= maxBytes
}

func (r *retainedSet) stats() (int, int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.size), r.bytes
}

// boundSessions moves the sessions file aside when it is over
// SessionMaxBytes or does not check out as a bbolt file, so a start never
// loads more than the bound and never stops on a damaged file: what a
// client made the broker keep, or what the storage did to it, cannot keep
// the box from coming back. As a damaged buffer is, it is moved, logged
// and counted (SessionsMovedAside).
func (b *Broker) boundSessions() {
	fi, err := os.Stat(b.o.SessionPath)
	if err != nil || fi.Size() == 0 {
		return
	}
	why, kind := "", ""
	switch {
	case fi.Size() > b.o.SessionMaxBytes:
		why, kind = fmt.Sprintf("it is %d bytes, over mqtt.server.sessions_max_bytes (%d)", fi.Size(), b.o.SessionMaxBytes), "toolarge"
	default:
		if err := checkSessions(b.o.SessionPath); err != nil {
			why, kind = fmt.Sprintf("it is damaged: %v", err), "corrupt"
		}
	}
	if why == "" {
		return
	}
	aside := fmt.Sprintf("%s.%s-%s", b.o.SessionPath, kind, time.Now().UTC().Format("20060102T150405.000Z"))
	if err := os.Rename(b.o.SessionPath, aside); err != nil {
		b.log.Error("the broker's sessions file could not be moved aside; starting with it", "path", b.o.SessionPath, "why", why, "err", err)
		return
	}
	b.movedAside.Add(1)
	b.log.Error("the broker's sessions file was moved aside; local subscribers' sessions and retained messages start empty", "path", b.o.SessionPath, "moved_to", aside, "why", why)
}

// checkSessions opens the sessions file read-only and runs bbolt's own
// check; a fault or panic while reading is an error too.
func checkSessions(path string) (err error) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if err != nil {
		return err
	}
	defer db.Close()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("reading it failed: %v", r)
		}
	}()
	return db.View(func(tx *bbolt.Tx) error {
		var first error
		for e := range tx.Check() {
			if first == nil {
				first = e
			}
		}
		return first
	})
}

// maxQueuedPerClient bounds the packets queued for one client to write,
// and the QoS 1/2 messages stored for it.
const maxQueuedPerClient = 1000

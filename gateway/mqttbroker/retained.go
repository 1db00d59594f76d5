package mqttbroker

import (
	"fmt"
	"os"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
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

// boundSessions moves a sessions file over SessionMaxBytes aside, so a
// start never loads more than the bound: what a client made the broker
// keep cannot keep the box from coming back.
func (b *Broker) boundSessions() {
	fi, err := os.Stat(b.o.SessionPath)
	if err != nil || fi.Size() <= b.o.SessionMaxBytes {
		return
	}
	aside := fmt.Sprintf("%s.toolarge-%s", b.o.SessionPath, time.Now().UTC().Format("20060102T150405.000Z"))
	if err := os.Rename(b.o.SessionPath, aside); err != nil {
		b.log.Error("the broker's sessions file is over its bound and could not be moved aside; starting with it", "path", b.o.SessionPath, "bytes", fi.Size(), "bound", b.o.SessionMaxBytes, "err", err)
		return
	}
	b.movedAside.Add(1)
	b.log.Error("the broker's sessions file was over its bound (mqtt.server.sessions_max_bytes): moved aside; local subscribers' sessions and retained messages start empty", "path", b.o.SessionPath, "moved_to", aside, "bytes", fi.Size(), "bound", b.o.SessionMaxBytes)
}

// maxQueuedPerClient bounds the packets queued for one client to write,
// and the QoS 1/2 messages stored for it.
const maxQueuedPerClient = 1000

package buffer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// The redelivery marks (see Mark) live in memory, indexed by slot, and on
// disk as a log: each mark a commit stores is appended at the log's end
// under the next key, so a commit's marks write the log's last page only
// (marks kept by slot wrote one page per device in every commit: the
// slots' keys are spread over the whole bucket). Open reads the log in
// order and replays it. A mark that a later one in the same slot
// replaced, or that fell out of its group's window, is stale: stale
// entries are deleted from the log's start, markTrim at a time.
var (
	bucketMarkLog = []byte("marklog")
	bucketMarks   = []byte("marks") // before the log: one key per slot
)

const (
	// MarksPerGroup is how many marks a group keeps: its latest slots.
	// An MQTT client redelivers, after a reconnect, what it had sent on
	// the connection that ended and not seen acknowledged: at most its
	// receive maximum (the embedded broker's mqtt.server.max_inflight),
	// all among the last it sent.
	MarksPerGroup = 4096
	// markTrim is how many stale entries wait before a commit deletes
	// them from the log's start (a few pages of it).
	markTrim = 256
)

type markEntry struct {
	token []byte
	key   uint64 // its log entry
	group *markGroup
}

type markRef struct {
	key  uint64
	slot string
}

// A markGroup is one group's live marks, oldest first; refs may also hold
// entries since replaced in their slot, skipped when met.
type markGroup struct {
	name string
	refs []markRef
	live int
}

type markIndex struct {
	// mu guards slots against MarkToken's readers; the writer goroutine,
	// the index's owner, reads without it and takes it to change slots.
	mu     sync.RWMutex
	slots  map[string]*markEntry
	groups map[string]*markGroup
	next   uint64   // the next log key
	stale  []uint64 // log keys no longer live, not yet deleted
}

func newMarkIndex() *markIndex {
	return &markIndex{slots: map[string]*markEntry{}, groups: map[string]*markGroup{}, next: 1}
}

// token is the token slot holds, or nil.
func (x *markIndex) token(slot []byte) []byte {
	if e := x.slots[string(slot)]; e != nil {
		return e.token
	}
	return nil
}

// add enters a mark stored under log key key.
func (x *markIndex) add(key uint64, group, slot, token []byte) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.next = max(x.next, key+1)
	g := x.groups[string(group)]
	if g == nil {
		g = &markGroup{name: string(group)}
		x.groups[g.name] = g
	}
	if old := x.slots[string(slot)]; old != nil {
		x.stale = append(x.stale, old.key)
		old.group.live--
		if old.group != g && old.group.live == 0 {
			delete(x.groups, old.group.name)
		}
	}
	x.slots[string(slot)] = &markEntry{token: token, key: key, group: g}
	g.refs = append(g.refs, markRef{key: key, slot: string(slot)})
	g.live++
	for g.live > MarksPerGroup {
		r := g.refs[0]
		g.refs = g.refs[1:]
		if e := x.slots[r.slot]; e != nil && e.key == r.key {
			delete(x.slots, r.slot)
			x.stale = append(x.stale, r.key)
			g.live--
		}
	}
	if len(g.refs) > 2*g.live+64 { // refs to replaced marks: drop them
		g.refs = slices.DeleteFunc(g.refs, func(r markRef) bool {
			e := x.slots[r.slot]
			return e == nil || e.key != r.key
		})
	}
}

// markLogValue is a log entry: the group's and the slot's lengths
// (uvarint), the group, the slot, the token.
func markLogValue(group, slot, token []byte) []byte {
	v := make([]byte, 0, 2*binary.MaxVarintLen16+len(group)+len(slot)+len(token))
	v = binary.AppendUvarint(v, uint64(len(group)))
	v = binary.AppendUvarint(v, uint64(len(slot)))
	v = append(v, group...)
	v = append(v, slot...)
	return append(v, token...)
}

func parseMarkLogValue(v []byte) (group, slot, token []byte, err error) {
	g, n := binary.Uvarint(v)
	if n <= 0 {
		return nil, nil, nil, errors.New("bad group length")
	}
	v = v[n:]
	s, n := binary.Uvarint(v)
	if n <= 0 {
		return nil, nil, nil, errors.New("bad slot length")
	}
	v = v[n:]
	if g+s > uint64(len(v)) {
		return nil, nil, nil, errors.New("lengths past the entry's end")
	}
	return v[:g:g], v[g : g+s : g+s], v[g+s:], nil
}

// loadMarks reads the mark log into a fresh index, taking the marks of a
// file written before the log into it first (their order is lost: each
// group's window then drops them in slot order).
func loadMarks(tx *bolt.Tx) (*markIndex, error) {
	x := newMarkIndex()
	log := tx.Bucket(bucketMarkLog)
	if old := tx.Bucket(bucketMarks); old != nil {
		var err error
		if log, err = tx.CreateBucketIfNotExists(bucketMarkLog); err != nil {
			return nil, err
		}
		if err := old.ForEach(func(slot, token []byte) error {
			// Slots were "mqtt/<session>/" and two bytes of packet id.
			var group []byte
			if bytes.HasPrefix(slot, []byte("mqtt/")) && len(slot) > 8 {
				group = slot[:len(slot)-3]
			}
			key := x.next
			if err := log.Put(seqKey(key), markLogValue(group, slot, token)); err != nil {
				return err
			}
			x.add(key, bytes.Clone(group), bytes.Clone(slot), bytes.Clone(token))
			return nil
		}); err != nil {
			return nil, err
		}
		if err := tx.DeleteBucket(bucketMarks); err != nil {
			return nil, err
		}
		return x, nil
	}
	if log == nil {
		return x, nil
	}
	err := log.ForEach(func(k, v []byte) error {
		if len(k) != 8 {
			return corruptf("mark log key %x is not 8 bytes", k)
		}
		group, slot, token, err := parseMarkLogValue(v)
		if err != nil {
			return corruptf("mark log entry %x: %v", k, err)
		}
		x.add(binary.BigEndian.Uint64(k), bytes.Clone(group), bytes.Clone(slot), bytes.Clone(token))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return x, nil
}

// markTxn is one commit's marks: what it stored, seen by the rest of the
// same commit, entered in the index once it has committed.
type markTxn struct {
	x       *markIndex
	log     *bolt.Bucket
	next    uint64
	added   []markAdd
	pending map[string][]byte // slot: token, stored in this commit
	trimmed int               // stale keys deleted in this commit
}

type markAdd struct {
	key                uint64
	group, slot, token []byte
}

func (m *markTxn) token(slot []byte) []byte {
	if t, ok := m.pending[string(slot)]; ok {
		return t
	}
	return m.x.token(slot)
}

func (m *markTxn) put(tx *bolt.Tx, mk *Mark) error {
	if m.log == nil {
		var err error
		if m.log, err = tx.CreateBucketIfNotExists(bucketMarkLog); err != nil {
			return err
		}
		m.log.FillPercent = 1 // keys only ever grow: pack pages full
		m.next = m.x.next
		m.pending = map[string][]byte{}
	}
	a := markAdd{key: m.next, group: bytes.Clone(mk.Group), slot: bytes.Clone(mk.Slot), token: bytes.Clone(mk.Token)}
	if err := m.log.Put(seqKey(a.key), markLogValue(a.group, a.slot, a.token)); err != nil {
		return err
	}
	m.next++
	m.added = append(m.added, a)
	m.pending[string(a.slot)] = a.token
	return nil
}

// trim deletes the oldest stale entries from the log once markTrim of
// them wait, so that they go a few pages at a time.
func (m *markTxn) trim(tx *bolt.Tx) error {
	if len(m.x.stale) < markTrim {
		return nil
	}
	log := tx.Bucket(bucketMarkLog)
	if log == nil {
		return fmt.Errorf("buffer: %d stale marks but no mark log", len(m.x.stale))
	}
	slices.Sort(m.x.stale)
	for _, k := range m.x.stale[:markTrim] {
		if err := log.Delete(seqKey(k)); err != nil {
			return err
		}
	}
	m.trimmed = markTrim
	return nil
}

// done enters a committed transaction's marks in the index.
func (m *markTxn) done() {
	m.x.stale = m.x.stale[m.trimmed:]
	for _, a := range m.added {
		m.x.add(a.key, a.group, a.slot, a.token)
	}
}

// MarkToken is the token of the mark stored last in slot, or nil: a
// source reads back what it stored with its last event (the readings a
// sensor last sent, for report by exception) in the same commit.
func (q *Queue) MarkToken(slot []byte) []byte {
	x := q.marks
	x.mu.RLock()
	defer x.mu.RUnlock()
	return bytes.Clone(x.token(slot))
}

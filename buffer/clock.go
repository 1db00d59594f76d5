package buffer

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// A Stamp is what a Clock says of now.
type Stamp struct {
	// Boot names this boot of the machine (Linux's boot_id).
	Boot string
	// Since is the time since boot, suspend included (CLOCK_BOOTTIME): it
	// never jumps.
	Since time.Duration
	// Wall is the wall clock, which jumps: a box without a real-time clock
	// boots with the time saved at shutdown and steps when NTP syncs.
	Wall time.Time
	// Synced says the wall clock is synchronized (the kernel's adjtimex
	// status, or systemd-timesyncd's flag file).
	Synced bool
}

// A Clock tells the queue the time. Each event records the stamp of its
// commit, so that its age can be known across reboots and clock jumps: see
// Age. The default is SystemClock; tests pass their own to simulate
// reboots.
type Clock interface {
	Now() Stamp
}

// SystemClock returns the machine's clock: on Linux, the boot id from
// /proc/sys/kernel/random/boot_id, CLOCK_BOOTTIME, and adjtimex.
// Elsewhere a random id per process stands for the boot, so ages are
// known within a run and, with the clock synchronized, across runs.
func SystemClock() Clock { return newSystemClock() }

// header is what the queue stores before each event's data: the stamp of
// the commit that appended it. The boot is the number of the boot in the
// file's boots table; its top bit says the wall clock was synchronized,
// the next one that a checksum follows the header (every event appended
// since format 3; see sum).
type header struct {
	wall   int64         // Unix ns
	since  time.Duration // boot time
	boot   uint32
	synced bool
	summed bool // a CRC-32C follows the header
}

const (
	headerSize = 20
	sumSize    = 4
	syncedBit  = 1 << 31
	summedBit  = 1 << 30
)

func (h header) append(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(h.wall))
	b = binary.BigEndian.AppendUint64(b, uint64(h.since))
	n := h.boot
	if h.synced {
		n |= syncedBit
	}
	if h.summed {
		n |= summedBit
	}
	return binary.BigEndian.AppendUint32(b, n)
}

func readHeader(v []byte) (header, bool) {
	if len(v) < headerSize {
		return header{}, false
	}
	n := binary.BigEndian.Uint32(v[16:])
	h := header{
		wall:   int64(binary.BigEndian.Uint64(v)),
		since:  time.Duration(binary.BigEndian.Uint64(v[8:])),
		boot:   n &^ (syncedBit | summedBit),
		synced: n&syncedBit != 0,
		summed: n&summedBit != 0,
	}
	if h.summed && len(v) < headerSize+sumSize {
		return header{}, false
	}
	return h, true
}

// dataOf is the event's data in a stored value v whose header reads.
func dataOf(v []byte, h header) []byte {
	if h.summed {
		return v[headerSize+sumSize:]
	}
	return v[headerSize:]
}

// valueData is dataOf for a value not yet read, nil if it is too short.
func valueData(v []byte) []byte {
	h, ok := readHeader(v)
	if !ok {
		return nil
	}
	return dataOf(v, h)
}

// castagnoli is CRC-32C, which amd64 and arm64 compute in hardware.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// sum is the checksum stored after a summed header: CRC-32C of the key
// (the seq), the header and the data, so a damaged seq, stamp or byte of
// data is found, and so is a value moved under another key.
func sum(key, hdr, data []byte) uint32 {
	c := crc32.Update(0, castagnoli, key)
	c = crc32.Update(c, castagnoli, hdr[:headerSize])
	return crc32.Update(c, castagnoli, data)
}

// appendValue appends the stored value of an event: header, checksum,
// data. h must have summed set.
func appendValue(b, key []byte, h header, data []byte) []byte {
	off := len(b)
	b = h.append(b)
	b = binary.BigEndian.AppendUint32(b, sum(key, b[off:], data))
	return append(b, data...)
}

// ErrChecksum is wrapped by Record.Damaged for an event whose bytes no
// longer match the checksum stored with them: the storage changed them.
var ErrChecksum = errors.New("checksum")

// checkValue verifies the value v stored under key: nil when its checksum
// holds. An event of a file written before checksums (seq below from, the
// file's first summed seq) has none to check; at or past from one without
// a checksum was damaged in its header.
func checkValue(key, v []byte, from uint64) error {
	h, ok := readHeader(v)
	if !ok || len(key) != 8 {
		return fmt.Errorf("%w: a %d-byte key and a %d-byte value are not an event", ErrChecksum, len(key), len(v))
	}
	if !h.summed {
		if binary.BigEndian.Uint64(key) >= from {
			return fmt.Errorf("%w: the header says the event has no checksum, but every event since seq %d has one: its header was damaged on disk", ErrChecksum, from)
		}
		return nil
	}
	want := binary.BigEndian.Uint32(v[headerSize:])
	if got := sum(key, v, dataOf(v, h)); got != want {
		return fmt.Errorf("%w: CRC-32C of the stored bytes is %08x, the event was stored with %08x: it was damaged on disk", ErrChecksum, got, want)
	}
	return nil
}

// A boot is one entry of the file's boots table: a boot of the machine
// during which events were appended.
type boot struct {
	n     uint32
	id    string
	first uint64 // the first seq this boot could append
	// offset is wall - since once the clock was synchronized during the
	// boot: every event of the boot has wall time offset + since.
	offset time.Duration
	synced bool // offset is known
}

func (b boot) encode() []byte {
	v := make([]byte, 0, 17+len(b.id))
	v = binary.BigEndian.AppendUint64(v, b.first)
	v = binary.BigEndian.AppendUint64(v, uint64(b.offset))
	if b.synced {
		v = append(v, 1)
	} else {
		v = append(v, 0)
	}
	return append(v, b.id...)
}

func decodeBoot(k, v []byte) (boot, bool) {
	if len(k) != 4 || len(v) < 17 {
		return boot{}, false
	}
	return boot{
		n:      binary.BigEndian.Uint32(k),
		first:  binary.BigEndian.Uint64(v),
		offset: time.Duration(binary.BigEndian.Uint64(v[8:])),
		synced: v[16] == 1,
		id:     string(v[17:]),
	}, true
}

// boots is the boots table, in order; the last is the current boot.
type boots []boot

func (bs boots) get(n uint32) (boot, bool) {
	// Boots are few and numbered in order; most lookups are the last.
	for i := len(bs) - 1; i >= 0; i-- {
		if bs[i].n == n {
			return bs[i], true
		}
	}
	return boot{}, false
}

// nextFirst is the first seq of the boot after n, 0 if none.
func (bs boots) nextFirst(n uint32) uint64 {
	for _, b := range bs {
		if b.n > n {
			return b.first
		}
	}
	return 0
}

// wallOf is the wall time of an event with header h, and whether it can
// be trusted: the clock was synchronized when it was appended, or later in
// the same boot (then it is corrected: the boot's offset plus h.since).
func (bs boots) wallOf(h header) (time.Time, bool) {
	if h.synced {
		return time.Unix(0, h.wall), true
	}
	if b, ok := bs.get(h.boot); ok && b.synced {
		return time.Unix(0, int64(b.offset+h.since)), true
	}
	return time.Unix(0, h.wall), false
}

// age is the age at now of an event with header h, and whether it is
// known. Within one boot it is the boot time elapsed, whatever the wall
// clock did. Across boots it is the wall time elapsed, only when both
// ends are trustworthy (see wallOf; now.Synced). Otherwise it is unknown,
// and such an event never expires by age.
func (bs boots) age(h header, now Stamp, cur uint32) (time.Duration, bool) {
	if h.boot == cur {
		return now.Since - h.since, true
	}
	w, ok := bs.wallOf(h)
	if !ok || !now.Synced {
		return 0, false
	}
	return now.Wall.Sub(w), true
}

// randomBoot stands for a boot id where the system has none.
func randomBoot() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

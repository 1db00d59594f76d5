package buffer

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
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
// file's boots table; its top bit says the wall clock was synchronized.
type header struct {
	wall   int64         // Unix ns
	since  time.Duration // boot time
	boot   uint32
	synced bool
}

const (
	headerSize = 20
	syncedBit  = 1 << 31
)

func (h header) append(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(h.wall))
	b = binary.BigEndian.AppendUint64(b, uint64(h.since))
	n := h.boot
	if h.synced {
		n |= syncedBit
	}
	return binary.BigEndian.AppendUint32(b, n)
}

func readHeader(v []byte) (header, bool) {
	if len(v) < headerSize {
		return header{}, false
	}
	n := binary.BigEndian.Uint32(v[16:])
	return header{
		wall:   int64(binary.BigEndian.Uint64(v)),
		since:  time.Duration(binary.BigEndian.Uint64(v[8:])),
		boot:   n &^ syncedBit,
		synced: n&syncedBit != 0,
	}, true
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

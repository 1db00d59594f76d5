package buffer

import (
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

type systemClock struct {
	boot string

	mu      sync.Mutex
	checked time.Duration // boot time of the last sync check
	synced  bool
}

func newSystemClock() *systemClock {
	id, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	c := &systemClock{boot: strings.TrimSpace(string(id)), checked: -time.Hour}
	if err != nil || c.boot == "" {
		c.boot = randomBoot()
	}
	return c
}

// syncCheckEvery bounds how often Now asks the kernel whether the clock is
// synchronized (a syscall and a stat).
const syncCheckEvery = time.Second

func (c *systemClock) Now() Stamp {
	var ts unix.Timespec
	var since time.Duration
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) == nil {
		since = time.Duration(ts.Nano())
	}
	s := Stamp{Boot: c.boot, Since: since, Wall: time.Now()}
	c.mu.Lock()
	defer c.mu.Unlock()
	if since-c.checked >= syncCheckEvery || since < c.checked {
		c.checked = since
		c.synced = clockSynced()
	}
	s.Synced = c.synced
	return s
}

// clockSynced asks the kernel (adjtimex: STA_UNSYNC clear) and
// systemd-timesyncd (its flag file) whether the wall clock is
// synchronized.
func clockSynced() bool {
	var tx unix.Timex
	if state, err := unix.Adjtimex(&tx); err == nil && state != unix.TIME_ERROR && tx.Status&unix.STA_UNSYNC == 0 {
		return true
	}
	_, err := os.Stat("/run/systemd/timesync/synchronized")
	return err == nil
}

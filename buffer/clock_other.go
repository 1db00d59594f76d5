//go:build !linux

package buffer

import "time"

type systemClock struct {
	boot  string
	start time.Time
}

func newSystemClock() *systemClock {
	return &systemClock{boot: randomBoot(), start: time.Now()}
}

// Now: the process's monotonic clock stands for the boot time; the wall
// clock counts as synchronized (there is no portable way to ask).
func (c *systemClock) Now() Stamp {
	now := time.Now()
	return Stamp{Boot: c.boot, Since: now.Sub(c.start), Wall: now, Synced: true}
}

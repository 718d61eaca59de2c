package agent

import (
	"time"

	"golang.org/x/sys/unix"
)

// processStart anchors bootClock's fallback.
var processStart = time.Now()

// bootClock is the time since the kernel booted, suspends included
// (CLOCK_BOOTTIME): what the clock measurement's drift is counted against.
// Go's monotonic clock (its fallback) stops while the machine is
// suspended.
func bootClock() time.Duration {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) != nil {
		return time.Since(processStart)
	}
	return time.Duration(ts.Nano())
}

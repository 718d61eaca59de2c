package agent

import (
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/farego/farego/queue"
)

// wallOnly returns t, a reading of time.Now (with its monotonic clock
// reading), with its wall clock moved by d and its monotonic reading
// kept: what time.Now returns after a suspend of d (CLOCK_REALTIME moved
// on, CLOCK_MONOTONIC stopped) or a step of the system clock by d.
func wallOnly(tb testing.TB, t time.Time, d time.Duration) time.Time {
	tb.Helper()
	type timeLayout struct {
		wall uint64
		ext  int64
		loc  *time.Location
	}
	const hasMonotonic = 1 << 63
	p := (*timeLayout)(unsafe.Pointer(&t))
	if p.wall&hasMonotonic == 0 || d%time.Second != 0 || d < 0 {
		tb.Fatalf("wallOnly: %v has no monotonic reading, or %v is not whole positive seconds", t, d)
	}
	p.wall += uint64(d/time.Second) << 30 // the wall seconds, above the 30 bits of nanoseconds
	return t
}

// TestClockOffsetThroughSuspendRealClock (review of 335b369): the clock
// offset's drift is the wall clock's move minus the boot clock's. With
// Config.Now the validator's, time.Now, a.now().Sub(r.wall) is not the
// wall clock's move: both readings carry Go's monotonic clock, and Sub
// uses it (CLOCK_MONOTONIC, stopped during a suspend, blind to a step of
// the system clock). Against the boot clock, which counts the suspend, a
// board that slept 3 h came back 3 h *behind* the server and out of
// service; and a step of the system clock by 2 h was never seen (before
// 335b369 as well). The fake clock of the other tests has no monotonic
// reading, so they did not see it.
func TestClockOffsetThroughSuspendRealClock(t *testing.T) {
	var wall, asleep atomic.Int64
	h := newHarness(t, func(c *Config, _ *queue.Options) {
		c.Now = func() time.Time { return wallOnly(t, time.Now(), time.Duration(wall.Load())) }
	})
	h.a.sinceBoot = func() time.Duration { return bootClock() + time.Duration(asleep.Load()) }
	h.a.ClockMeasured(0, 10*time.Millisecond)

	// Suspended for three hours: the wall clock and the boot clock moved
	// on, the monotonic clock did not.
	wall.Add(int64(3 * time.Hour))
	asleep.Add(int64(3 * time.Hour))
	if off, _, _ := h.a.ClockOffset(); off.Abs() > time.Second {
		t.Errorf("offset after a suspend of 3 h = %v, want about 0", off)
	}
	if s := h.a.OutOfService(); s != "" {
		t.Errorf("OutOfService() after a suspend = %q, want in service", s)
	}

	// The system clock stepped 2 h ahead (no suspend): 2 h off.
	wall.Add(int64(2 * time.Hour))
	if off, _, _ := h.a.ClockOffset(); (off - 2*time.Hour).Abs() > time.Second {
		t.Errorf("offset after the clock stepped 2 h ahead = %v, want about 2h", off)
	}
}

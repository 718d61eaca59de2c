package uplink

import (
	"math"
	"time"
)

// ClockSample is one measurement of the device clock against the
// settlement server's, taken from a timed ack (wire.Ack.Time) of a batch
// sent once.
type ClockSample struct {
	// Offset is the device clock (Config.Now) minus the server's.
	Offset time.Duration
	// Uncertainty bounds the error: the true offset lies within Offset ±
	// Uncertainty (half the round trip, and the ack time's millisecond).
	Uncertainty time.Duration
	// At is when it was measured (time.Now, with its monotonic reading,
	// so that later wall-clock jumps can be told apart from time passing).
	At time.Time
	// RTT is the round trip: from publishing the batch to its ack (the
	// ack latency).
	RTT time.Duration
}

// clockSample records a sample, publishes the status if the offset moved
// by a second or more, and hands it to Config.OnClock.
func (u *Uplink) clockSample(smp ClockSample) {
	prev := u.clock.Swap(&smp)
	if prev == nil || math.Abs(float64(prev.Offset-smp.Offset)) >= float64(time.Second) {
		u.statusDirty.Store(true)
		u.log.Info("uplink: clock offset measured against the server", "offset", smp.Offset.String(),
			"uncertainty", smp.Uncertainty.String())
	}
	if u.cfg.OnClock != nil {
		u.cfg.OnClock(smp)
	}
}

// Clock returns the last clock sample, and false if there is none yet (no
// timed ack of a batch sent once has come since New).
func (u *Uplink) Clock() (ClockSample, bool) {
	if s := u.clock.Load(); s != nil {
		return *s, true
	}
	return ClockSample{}, false
}

// serverNow is the settlement server's clock as this device knows it: its
// own, less the offset the last timed ack measured (none before one).
func (u *Uplink) serverNow() time.Time {
	now := u.cfg.Now()
	if c, ok := u.Clock(); ok {
		now = now.Add(-c.Offset)
	}
	return now
}

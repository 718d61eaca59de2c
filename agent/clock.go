package agent

import (
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/queue"
)

// DefaultMaxClockOffset is the default Config.MaxClockOffset: the code
// skew tolerance (paycode.DefaultSkew). A validator further off than that
// refuses fresh codes as "from the future" (clock behind) or expired
// (clock ahead), blaming the rider; it goes out of service instead.
const DefaultMaxClockOffset = 30 * time.Second

// maxClockDrift bounds how fast a clock that nothing steps drifts from
// the server's (the boot clock runs on the same crystal, so the tracking
// does not see it): 100 ppm, 8.6 s a day, above a cheap crystal's 20–50.
const maxClockDrift = 100e-6

// clockRef is a measured offset of the device clock from the server's,
// with both clocks read when it was taken: the offset now is the measured
// one plus however far the wall clock has moved beyond the time elapsed
// since (a jump or a correction of the system clock).
//
// The time elapsed is the kernel's boot clock (CLOCK_BOOTTIME), which
// counts a suspend, not Go's monotonic clock (CLOCK_MONOTONIC), which
// stops during one: a board suspended while the bus was parked came back
// with its wall clock right and the offset ahead by the suspend's length,
// out of service (TestClockOffsetThroughSuspend).
type clockRef struct {
	offset, uncertainty time.Duration
	wall                time.Time     // Config.Now at the sample
	boot                time.Duration // Agent.sinceBoot at the sample
	code                time.Time     // seedBehind's: the newest code's time
}

// ClockMeasured records a measurement of the device clock against the
// settlement server's (the uplink takes them from the server's timed
// acks): offset is the device clock minus the server's, within ±
// uncertainty. From then on the agent tracks the offset through jumps of
// the system clock (against the monotonic clock), and is out of service
// (clock_offset) while it is beyond Config.MaxClockOffset.
//
// A sample less precise than the measurement held (its uncertainty grown
// by maxClockDrift since it was taken) that agrees with it within both
// uncertainties is passed over: an ack that came back minutes after its
// batch (a server working through a backlog) measured the clock ± a
// minute or more, replaced the measurement to ± milliseconds held, and
// left a clock set back by two minutes in service, taking codes Prune had
// forgotten a second time (TestImpreciseClockSampleKeepsThePrecise).
func (a *Agent) ClockMeasured(offset, uncertainty time.Duration) {
	uncertainty = max(uncertainty, 0)
	if r := a.clock.Load(); r != nil {
		cur, unc, _ := a.ClockOffset()
		held := unc + time.Duration(float64(max(a.sinceBoot()-r.boot, 0))*maxClockDrift)
		if uncertainty > held && (offset-cur).Abs() <= uncertainty+held {
			return
		}
	}
	a.clock.Store(&clockRef{offset: offset, uncertainty: uncertainty, wall: a.wallNow(), boot: a.sinceBoot()})
	a.behind.Store(nil) // measured: the bound says no more
	a.checkClock()
}

// ClockOffset returns the device clock's current offset from the server's
// and its uncertainty, and false if it was never measured since New.
func (a *Agent) ClockOffset() (offset, uncertainty time.Duration, ok bool) {
	r := a.clock.Load()
	if r == nil {
		return 0, 0, false
	}
	drift := a.wallNow().Sub(r.wall) - (a.sinceBoot() - r.boot)
	return r.offset + drift, r.uncertainty, true
}

// wallNow is Config.Now without its monotonic clock reading: time.Now
// carries one, and Time.Sub of two readings that both carry one is the
// monotonic clock's move (stopped during a suspend, blind to a step of
// the system clock), not the wall clock's (TestClockOffsetThroughSuspendRealClock).
func (a *Agent) wallNow() time.Time { return a.now().Round(0) }

// clockBeyond reports whether the device clock is known to be further
// from the server's than MaxClockOffset, with the offset: measured, or
// before any measurement, the bound the newest code accepted here sets
// (seedBehind: the clock is behind by at least its offset then).
func (a *Agent) clockBeyond() (bool, time.Duration) {
	beyond, off, _ := a.clockState()
	return beyond, off
}

// clockState is clockBeyond with, when the bound the newest code accepted
// here sets is what puts the clock beyond (behindBound), that code's
// time (zero otherwise). A measurement leaves the offset within its
// uncertainty; the bound narrows that range too, unless the two disagree
// (the bound above the measurement's range: then the bound's premise, a
// clock within MaxClockOffset when the code was accepted, failed, and
// the measurement says). Without the bound, a clock whose only
// measurement was imprecise (a slow ack's, ± minutes) stayed in service
// set back by more than Prune allows for, within the bound and its
// uncertainty, and took a code Prune had forgotten a second time
// (TestImpreciseOnlySampleCodeOnce).
func (a *Agent) clockState() (bool, time.Duration, time.Time) {
	if a.cfg.MaxClockOffset < 0 {
		return false, 0, time.Time{}
	}
	off, unc, ok := a.ClockOffset()
	if ok && off.Abs()-unc > a.cfg.MaxClockOffset {
		return true, off, time.Time{}
	}
	if b, code, bok := a.behindBound(); bok && -b > a.cfg.MaxClockOffset && (!ok || b >= off-unc) {
		return true, b, code
	}
	return false, off, time.Time{}
}

// seedBehind takes, at the start, the newest code this device accepted
// as a bound on the clock: a rider's code is accepted only when its time
// is within the skew of the device clock, itself within MaxClockOffset
// of the server's, so when that code was accepted it was at least its
// time less both. A board without a battery-backed clock restarts after a
// power cut with its clock at the build date or at the last time saved
// (systemd-timesyncd's, up to half an hour old): in service, it refused
// every rider's fresh code as from the future ("Code not valid here") for
// as long as it stayed offline. With the bound it is out of service
// (clock_offset) until the clock is stepped past it or measured against
// the server's; how far behind it is, the bound cannot say.
func (a *Agent) seedBehind() error {
	var newest int64
	err := a.q.ViewState(func(st *queue.State) error {
		return st.ForEach(bucketSeen, func(_, v []byte) error {
			if len(v) >= 4 {
				newest = max(newest, int64(binary.BigEndian.Uint32(v)))
			}
			return nil
		})
	})
	if err != nil || newest == 0 {
		return err
	}
	a.newest.Store(newest)
	floor := a.codeFloor(time.Unix(newest, 0))
	if wall := a.wallNow(); wall.Before(floor) {
		a.behind.Store(&clockRef{offset: wall.Sub(floor), wall: wall, boot: a.sinceBoot(), code: time.Unix(newest, 0)})
		a.checkClock()
	}
	return nil
}

// codeFloor is the earliest the server's clock can have read when a code
// of time code was accepted here: its time less the skew and
// MaxClockOffset (seedBehind).
func (a *Agent) codeFloor(code time.Time) time.Time {
	skew := a.cfg.Policy.Skew
	if skew <= 0 {
		skew = paycode.DefaultSkew
	}
	return code.Add(-skew - max(a.cfg.MaxClockOffset, 0))
}

// behindBound returns the bound the newest code accepted here sets on
// the clock's offset (negative: behind by at least that much), with that
// code's time, and false without one: the lower of seedBehind's, moved by
// any step of the wall clock since the start, and the clock now against
// the newest code accepted so far. The second is a bound too (the
// server's clock has not gone back since that code was accepted), and
// it sees a clock set back while the device runs: seedBehind looks only
// at the start, and a clock set back an hour without a restart took the
// codes of an hour before, forgotten by Prune, a second time
// (TestCodeOncePastAClockSetBack).
func (a *Agent) behindBound() (time.Duration, time.Time, bool) {
	var off time.Duration
	var code time.Time
	ok := false
	if r := a.behind.Load(); r != nil {
		off, code, ok = r.offset+a.wallNow().Sub(r.wall)-(a.sinceBoot()-r.boot), r.code, true
	}
	if n := a.newest.Load(); n > 0 {
		c := time.Unix(n, 0)
		if live := a.wallNow().Sub(a.codeFloor(c)); !ok || live < off {
			off, code, ok = live, c, true
		}
	}
	return off, code, ok
}

// checkClock notes a change between a clock within bounds and one beyond
// them, logged once each way (riders see it when they scan).
func (a *Agent) checkClock() {
	beyond, off, code := a.clockState()
	if a.clockOff.Swap(beyond) == beyond {
		return
	}
	defer a.serviceChanged()
	if beyond && !code.IsZero() {
		a.log.Error("clock behind the newest code accepted here: out of service until it is set (NTP) or measured against the server's",
			"behind_at_least", (-off).Round(time.Second).String(), "code_time", code.UTC().Format(time.RFC3339))
		return
	}
	if beyond {
		a.log.Error("clock too far from the server's: out of service until it is corrected",
			"offset", off.Round(time.Millisecond).String(), "max_clock_offset", a.cfg.MaxClockOffset.String())
		return
	}
	a.log.Info("clock back within bounds of the server's: in service", "offset", off.Round(time.Millisecond).String())
}

// OutOfService returns why the validator takes no taps now ("" when it
// takes them): its state, not a rider's code. The uplink's status
// carries it.
func (a *Agent) OutOfService() string {
	if h := a.hold.Load(); h != nil {
		return string(h.reason) + ": " + h.detail
	}
	if f := a.recordFail.Load(); f != nil && f.fatal {
		return fmt.Sprintf("%s: taps cannot be recorded (since %s: %s); restart the validator to take taps again, and replace its storage",
			record.ReasonInternal, f.since.UTC().Format(time.TimeOnly), f.err)
	}
	if f := a.recordFail.Load(); f != nil {
		return fmt.Sprintf("%s: taps cannot be recorded (since %s: %s); the next tap recorded ends this", record.ReasonInternal,
			f.since.UTC().Format(time.TimeOnly), f.err)
	}
	if a.now().Before(a.cfg.MinClock) {
		return fmt.Sprintf("%s: clock unset (before %s)", record.ReasonClock, a.cfg.MinClock.Format(time.DateOnly))
	}
	if beyond, off, code := a.clockState(); beyond {
		if !code.IsZero() {
			return fmt.Sprintf("%s: clock behind by at least %s: it reads %s, and a code made at %s was accepted here "+
				"(a restart without a battery-backed clock, or the clock set back?); set the clock (NTP), or let the device measure it against the server's "+
				"([selftest] time_url, or the ack of a batch it sends)",
				record.ReasonClockOffset, (-off).Round(time.Second), a.wallNow().UTC().Format(time.RFC3339), code.UTC().Format(time.RFC3339))
		}
		return fmt.Sprintf("%s: clock %s from the server's (bound %s)", record.ReasonClockOffset,
			off.Round(time.Second), a.cfg.MaxClockOffset)
	}
	s := a.state.Load()
	if s.keyring == nil || s.fares == nil {
		return fmt.Sprintf("%s: not provisioned (keyring version %d, fare table version %d)", record.ReasonNoFare,
			s.versions[record.DocKeyring], s.versions[record.DocFares])
	}
	// The tap path's order: a route the fare table does not serve first.
	if why := routeNotCovered(s, a.assign.Load()); why != "" {
		return why
	}
	if now := a.now(); !s.keyring.ValidAt(now, a.cfg.Policy) {
		keys := "it holds no key"
		if n := s.keyring.Len(); n > 0 {
			from, to := s.keyring.Span()
			keys = fmt.Sprintf("none of its %d keys, the first valid from %s, the last until %s, is valid at %s", n,
				from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
		return fmt.Sprintf("%s: no key of keyring version %d is valid now (%s): connect the device to the broker "+
			"for the server's keyring, or provision it again", record.ReasonNoValidKey, s.keyring.Version(), keys)
	}
	return ""
}

// hold is an out-of-service state set from outside the tap path.
type hold struct {
	reason record.Reason
	detail string
}

// Hold puts the validator out of service for reason (one of the
// out-of-service reasons, such as record.ReasonQueueDamaged) with a
// detail for the operator, until Hold is called with an empty reason.
func (a *Agent) Hold(reason record.Reason, detail string) {
	if reason == "" {
		if a.hold.Swap(nil) != nil {
			a.log.Info("back in service")
			a.serviceChanged()
		}
		return
	}
	a.hold.Store(&hold{reason: reason, detail: detail})
	a.log.Error("out of service", "reason", reason, "detail", detail)
	a.serviceChanged()
}

func (a *Agent) serviceChanged() {
	if a.cfg.ServiceChanged != nil {
		a.cfg.ServiceChanged()
	}
}

// clockOffsetSeconds is the gauge of the measured clock offset (NaN
// before the first measurement).
func (a *Agent) clockOffsetSeconds() float64 {
	off, _, ok := a.ClockOffset()
	if !ok {
		return math.NaN()
	}
	return off.Seconds()
}

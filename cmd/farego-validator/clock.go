package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/farego/farego/agent"
)

// kernelClockSynced reports whether the kernel says its clock is kept by
// NTP (adjtimex: STA_UNSYNC clear; a test build may say, see
// kernelSyncedForTest), and the error if it could not be asked (a
// system-call filter without adjtimex: systemd's ProtectClock=, or an
// allow-list such as @system-service that lacks it).
func kernelClockSynced() (bool, error) {
	if synced, ok, err := kernelSyncedForTest(); ok {
		return synced, err
	}
	var tx unix.Timex
	if _, err := unix.Adjtimex(&tx); err != nil {
		return false, fmt.Errorf("adjtimex: %w", err)
	}
	return tx.Status&unix.STA_UNSYNC == 0, nil
}

// httpClockInterval is how often httpClock samples the server's Date while
// no ack has measured the clock.
const httpClockInterval = 2 * time.Minute

// httpClock measures the device clock against the Date of the settlement
// server's HTTP answer (url: [selftest] time_url, its /healthz) at start,
// and again every httpClockInterval until an ack of a tap batch has
// measured it (ackClock). A validator started hours off refused every
// rider's fresh code as expired and, taking no tap, never got an ack to
// learn why; now it is out of service (clock_offset, "Out of service:
// clock") until the clock is put right, and back in service at the next
// sample after that. The Date is whole seconds: the uncertainty is half a
// second more than half the round trip.
//
// A Date over plain HTTP is anyone's on the path to rewrite: one further
// than bound (max_clock_offset) from a clock the kernel says NTP keeps is
// not believed, only logged (a device attack review: a forged Date put a
// right validator out of service, and with nothing to send it never got an
// ack to learn better). Over https, or on a clock NTP does not keep (a
// bus just powered, its RTC off), it is believed.
func httpClock(ctx context.Context, url string, bound time.Duration, now func() time.Time, a *agent.Agent, ackClock *atomic.Bool, log *slog.Logger) {
	failing, doubted := false, false
	plain := strings.HasPrefix(strings.ToLower(url), "http://")
	if _, err := kernelClockSynced(); plain && bound > 0 && err != nil {
		// The shipped unit's filter once lacked adjtimex: every forged
		// Date was believed, and nothing said so.
		log.Warn("cannot read whether NTP keeps this clock: a Date over plain HTTP is believed however far off "+
			"(allow adjtimex: SystemCallFilter=adjtimex and no ProtectClock= in the unit; or an https time_url)", "url", url, "err", err)
	}
	for {
		if !ackClock.Load() {
			off, rtt, err := httpClockSample(ctx, url, now)
			switch {
			case err != nil && ctx.Err() == nil:
				if !failing {
					log.Warn("reading the server's clock over HTTP failed; trying again", "url", url, "err", err)
				}
				failing = true
			case err == nil:
				if failing {
					log.Info("reading the server's clock over HTTP works again", "url", url)
				}
				failing = false
				if synced, _ := kernelClockSynced(); plain && bound > 0 && off.Abs() > bound && synced {
					if !doubted {
						log.Warn("the server's Date over plain HTTP is far from this device's clock, which NTP keeps: not believed "+
							"(an https time_url is; an ack of a tap batch measures the clock)", "url", url, "offset", off.Round(time.Millisecond))
					}
					doubted = true
					break
				}
				doubted = false
				if !ackClock.Load() { // an ack's sample is better
					a.ClockMeasured(off, rtt/2+500*time.Millisecond)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(httpClockInterval):
		}
	}
}

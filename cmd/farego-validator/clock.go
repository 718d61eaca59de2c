package main

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/farego/farego/agent"
)

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
func httpClock(ctx context.Context, url string, now func() time.Time, a *agent.Agent, ackClock *atomic.Bool, log *slog.Logger) {
	failing := false
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

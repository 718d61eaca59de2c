// Package backoff is the retry wait of every farego edge that reconnects:
// a serial scanner that was unplugged (driver/scanner) and the MQTT
// clients of the device uplink and the server ingest (through
// sync/internal/mqttclient). Jittered, doubling, capped, context-aware, and
// reset by the caller on success. It sits at the bottom of the import graph
// (driver/) so that the hardware edges and the link share one copy.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff yields jittered, doubling waits between Min and Max: each wait is
// uniformly random in [d/2, d] where d doubles from Min up to Max. Reset
// starts again from Min. The zero value waits 0.
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration
}

// Next returns the next wait.
func (b *Backoff) Next() time.Duration {
	switch {
	case b.cur == 0:
		b.cur = b.Min
	case b.cur > b.Max/2:
		b.cur = b.Max // also keeps 2*cur from overflowing
	default:
		b.cur *= 2
	}
	if b.cur <= 0 {
		return 0
	}
	half := b.cur / 2
	return half + rand.N(b.cur-half+1)
}

// Reset starts again from Min.
func (b *Backoff) Reset() { b.cur = 0 }

// Sleep waits for d or until ctx is done; it reports whether the whole wait
// passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

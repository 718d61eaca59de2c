package ingest

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff yields jittered, doubling waits between min and max: each wait is
// uniformly random in [d/2, d] where d doubles from min up to max. reset
// starts again from min.
type backoff struct {
	min, max time.Duration
	cur      time.Duration
}

func (b *backoff) next() time.Duration {
	switch {
	case b.cur == 0:
		b.cur = b.min
	case b.cur > b.max/2:
		b.cur = b.max // also keeps 2*cur from overflowing
	default:
		b.cur *= 2
	}
	if b.cur <= 0 {
		return 0
	}
	half := b.cur / 2
	return half + rand.N(b.cur-half+1)
}

func (b *backoff) reset() { b.cur = 0 }

// sleep waits for d or until ctx is done; it reports whether the whole wait
// passed.
func sleep(ctx context.Context, d time.Duration) bool {
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

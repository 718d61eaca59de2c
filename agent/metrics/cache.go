package metrics

import (
	"sync"
	"time"
)

// Cache reads a figure at most once per TTL, for a gauge whose reading
// costs (a table read): scrapes however frequent, by whoever may ask, cost
// one reading per TTL. The zero TTL reads every time. Safe for concurrent
// use; Read is called with the cache's lock held, so one reading at a time.
type Cache[T any] struct {
	TTL  time.Duration
	Read func() T

	mu sync.Mutex
	at time.Time
	v  T
}

// Get returns the figure, read again if the last reading is older than TTL.
func (c *Cache[T]) Get() T {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() || time.Since(c.at) >= c.TTL {
		c.v, c.at = c.Read(), time.Now()
	}
	return c.v
}

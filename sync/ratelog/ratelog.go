// Package ratelog keeps a repeating complaint from flooding the log: a line
// per key goes through at most once per interval, and the next one that
// does says how many were held back. The server's ingest (one key per device
// and kind of refusal) and its broker (per client) use it.
package ratelog

import (
	"crypto/sha256"
	"sync"
	"time"
)

// DefaultEvery is how often one kind of complaint about one key is logged.
const DefaultEvery = time.Minute

// maxKeys bounds the complaints remembered; past it, keys older than the
// interval are forgotten, and if that is not enough, every new key shares
// one entry until some age out: one line an interval for all
// of them, saying how many it held back, so a flood of new keys neither
// grows the table nor silences the log (callers still count them in their
// metrics).
const maxKeys = 4096

// maxKeyLen bounds a remembered key: a longer one (a client's 64 KiB
// username in it) is kept as its SHA-256.
const maxKeyLen = 128

// Limiter lets a log line through at most once per interval per key and
// counts the lines it held back. It is safe for concurrent use.
type Limiter struct {
	now   func() time.Time
	every time.Duration

	mu       sync.Mutex
	keys     map[string]*entry
	overflow *entry // the entry new keys share while keys is full
}

type entry struct {
	last       time.Time
	suppressed int
}

// New returns a limiter with the clock now (nil: time.Now) and interval
// every (zero: DefaultEvery).
func New(now func() time.Time, every time.Duration) *Limiter {
	if now == nil {
		now = time.Now
	}
	if every <= 0 {
		every = DefaultEvery
	}
	return &Limiter{now: now, every: every, keys: map[string]*entry{}}
}

// Allow reports whether a line for key may be logged now, and how many
// were held back since the last one.
func (l *Limiter) Allow(key string) (bool, int) {
	if len(key) > maxKeyLen {
		sum := sha256.Sum256([]byte(key))
		key = string(sum[:])
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.keys[key]; e != nil {
		return e.allow(now, l.every)
	}
	if len(l.keys) >= maxKeys {
		for k, e := range l.keys {
			if now.Sub(e.last) >= l.every {
				delete(l.keys, k)
			}
		}
		if len(l.keys) >= maxKeys {
			// Every new key shares one entry, apart from the table.
			if l.overflow == nil {
				l.overflow = &entry{last: now}
				return true, 0
			}
			return l.overflow.allow(now, l.every)
		}
	}
	l.keys[key] = &entry{last: now}
	return true, 0
}

// allow is Allow for a key seen before.
func (e *entry) allow(now time.Time, every time.Duration) (bool, int) {
	if d := now.Sub(e.last); d >= 0 && d < every {
		e.suppressed++
		return false, 0
	}
	n := e.suppressed
	e.last, e.suppressed = now, 0
	return true, n
}

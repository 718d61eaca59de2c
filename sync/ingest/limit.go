package ingest

import (
	"sync"
	"time"
)

// logEvery is how often one kind of complaint about one device is logged.
const logEvery = time.Minute

// maxLimiterKeys bounds the complaints remembered; past it, keys older
// than logEvery are forgotten, and if that is not enough, new keys are not
// logged until some age out (they are still counted in the metrics).
const maxLimiterKeys = 4096

// logLimiter lets a log line through at most once per interval per key and
// counts the lines it held back.
type logLimiter struct {
	now   func() time.Time
	every time.Duration

	mu   sync.Mutex
	keys map[string]*limitEntry
}

type limitEntry struct {
	last       time.Time
	suppressed int
}

func newLogLimiter(now func() time.Time, every time.Duration) *logLimiter {
	return &logLimiter{now: now, every: every, keys: map[string]*limitEntry{}}
}

// allow reports whether a line for key may be logged now, and how many
// were held back since the last one.
func (l *logLimiter) allow(key string) (bool, int) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.keys[key]
	if e != nil {
		if now.Sub(e.last) < l.every && now.Sub(e.last) >= 0 {
			e.suppressed++
			return false, 0
		}
		n := e.suppressed
		e.last, e.suppressed = now, 0
		return true, n
	}
	if len(l.keys) >= maxLimiterKeys {
		for k, e := range l.keys {
			if now.Sub(e.last) >= l.every {
				delete(l.keys, k)
			}
		}
		if len(l.keys) >= maxLimiterKeys {
			return false, 0
		}
	}
	l.keys[key] = &limitEntry{last: now}
	return true, 0
}

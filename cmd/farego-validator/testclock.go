//go:build farego_testhooks

package main

import (
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"
)

// clockSkewEnv names a file whose content, a Go duration ("2h", "-90s"),
// is added to the validator's clock, read again at most once a second. It
// is for fault-injection tests only (the chaos test jumps a validator's
// clock with it), built only with -tags farego_testhooks: the release
// build (testhooks_release.go) runs on the system clock whatever its
// environment says, so whoever sets a shipped validator's environment
// cannot skew the clock that decides whether payment codes are fresh.
const clockSkewEnv = "FAREGO_TEST_CLOCK_SKEW_FILE"

// validatorClock returns the clock the agent and the uplink use: the
// system clock, skewed by the file clockSkewEnv names, if it is set.
func validatorClock(log *slog.Logger) func() time.Time {
	path := os.Getenv(clockSkewEnv)
	if path == "" {
		return time.Now
	}
	log.Warn("clock skewed by a test file: for fault-injection tests only", "env", clockSkewEnv, "file", path)
	var mu sync.Mutex
	var skew time.Duration
	var read time.Time
	return func() time.Time {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if now.Sub(read) >= time.Second || read.IsZero() {
			read = now
			skew = 0
			if b, err := os.ReadFile(path); err == nil {
				if d, err := time.ParseDuration(strings.TrimSpace(string(b))); err == nil {
					skew = d
				}
			}
		}
		return now.Add(skew)
	}
}

//go:build !farego_testhooks

package main

import (
	"log/slog"
	"time"
)

// The release build's test hooks do nothing: the fault injection of the
// OTA tests is in testhooks.go and the chaos test's clock skew in
// testclock.go, built only with -tags farego_testhooks.

func crashAtStart(*slog.Logger) {}

func silentTapLoop(*slog.Logger) bool { return false }

// validatorClock is the system clock: FAREGO_TEST_CLOCK_SKEW_FILE is not
// read.
func validatorClock(*slog.Logger) func() time.Time { return time.Now }

// kernelSyncedForTest leaves adjtimex's word alone.
func kernelSyncedForTest() (synced, ok bool, err error) { return false, false, nil }

// scannerGrace is scannerDownGrace: FAREGO_TEST_SCANNER_GRACE is not read.
func scannerGrace(*slog.Logger) time.Duration { return scannerDownGrace }

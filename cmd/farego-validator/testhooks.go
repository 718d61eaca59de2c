//go:build farego_testhooks

package main

import (
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/farego/farego/agent"
)

// Fault injection for the OTA tests, built only with -tags
// farego_testhooks (testhooks_release.go is the release build's: no
// hooks), so that whoever sets the environment of a shipped validator
// cannot make it crash-loop.

// crashEnv names a version that exits at once after the updater's boot
// check: the OTA test's "new binary that crashes at start".
const crashEnv = "FAREGO_TEST_CRASH_VERSION"

// crashAtStart exits if crashEnv names the running version.
func crashAtStart(log *slog.Logger) {
	if v := os.Getenv(crashEnv); v != "" && v == agent.Version {
		log.Error("crashing at start for a test", "env", crashEnv)
		os.Exit(exitFailure)
	}
}

// silentTapLoopEnv names a version whose tap loop never beats: the test's
// "new binary whose tap path hangs".
const silentTapLoopEnv = "FAREGO_TEST_SILENT_TAP_LOOP_VERSION"

// silentTapLoop reports whether silentTapLoopEnv names the running
// version.
func silentTapLoop(log *slog.Logger) bool {
	if v := os.Getenv(silentTapLoopEnv); v != "" && v == agent.Version {
		log.Error("the tap loop never beats, for a test", "env", silentTapLoopEnv)
		return true
	}
	return false
}

// kernelSyncedEnv says (1 or 0) whether the kernel's clock is to be taken
// as kept by NTP, whatever adjtimex says: the forged-Date tests' machine;
// "denied": adjtimex fails as under a system-call filter without it.
const kernelSyncedEnv = "FAREGO_TEST_KERNEL_CLOCK_SYNCED"

func kernelSyncedForTest() (synced, ok bool, err error) {
	switch os.Getenv(kernelSyncedEnv) {
	case "1":
		return true, true, nil
	case "0":
		return false, true, nil
	case "denied":
		return false, true, fmt.Errorf("adjtimex: %w", syscall.EPERM)
	}
	return false, false, nil
}

// scannerGraceEnv shortens scannerDownGrace for the tests of a scanner
// unplugged (a Go duration).
const scannerGraceEnv = "FAREGO_TEST_SCANNER_GRACE"

// scannerGrace returns scannerGraceEnv's duration, or scannerDownGrace.
func scannerGrace(log *slog.Logger) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(scannerGraceEnv)); err == nil && d > 0 {
		log.Warn("out of service after no scanner is read for a test's grace", "env", scannerGraceEnv, "grace", d)
		return d
	}
	return scannerDownGrace
}

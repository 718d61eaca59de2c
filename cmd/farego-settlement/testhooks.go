//go:build farego_testhooks

package main

import (
	"log/slog"
	"os"
	"strconv"
	"sync/atomic"
)

// Fault injection for the rig's tests, built only with -tags
// farego_testhooks (testhooks_release.go is the release build's: no
// hooks), so that whoever sets the environment of a shipped server cannot
// make it exit after every commit.

// exitAfterCommitsEnv names n: the server exits after its n-th ledger
// commit, before the commit's ack goes out.
const exitAfterCommitsEnv = "FAREGO_FAULT_EXIT_AFTER_COMMITS"

// exitAfterCommits returns the server's AfterCommit for
// exitAfterCommitsEnv, nil if it is not set.
func exitAfterCommits(log *slog.Logger) func() {
	n, err := strconv.Atoi(os.Getenv(exitAfterCommitsEnv))
	if err != nil || n <= 0 {
		return nil
	}
	var commits atomic.Int64
	return func() {
		if commits.Add(1) == int64(n) {
			log.Warn("fault injection: exiting between ledger commit and ack", "env", exitAfterCommitsEnv)
			os.Exit(3)
		}
	}
}

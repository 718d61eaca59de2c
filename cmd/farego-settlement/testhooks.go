//go:build farego_testhooks

package main

import (
	"log/slog"
	"os"
	"runtime/pprof"
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

// cpuProfileEnv names a file: the server writes its CPU profile there,
// from start to a clean exit (the rig's benchmarks use it to see where a
// catch-up's time goes).
const cpuProfileEnv = "FAREGO_TEST_CPUPROFILE"

// startCPUProfile starts the CPU profile cpuProfileEnv asks for and
// returns what stops and writes it (a no-op when it is not set).
func startCPUProfile() func() {
	path := os.Getenv(cpuProfileEnv)
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

//go:build !farego_testhooks

package main

import "log/slog"

// The release build's test hooks do nothing: the fault injection of the
// rig's tests is in testhooks.go, built only with -tags farego_testhooks.

// exitAfterCommits is nil: FAREGO_FAULT_EXIT_AFTER_COMMITS is not read.
func exitAfterCommits(*slog.Logger) func() { return nil }

// startCPUProfile does nothing: FAREGO_TEST_CPUPROFILE is not read.
func startCPUProfile() func() { return func() {} }

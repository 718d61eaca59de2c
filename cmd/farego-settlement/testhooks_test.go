//go:build !farego_testhooks

package main

import (
	"log/slog"
	"testing"
)

// TestExitAfterCommitsOnlyWithTestTag: built as the release is (no
// -tags), the server ignores FAREGO_FAULT_EXIT_AFTER_COMMITS, so whoever
// sets its environment cannot make it exit after each commit; the rig's
// TestServerKilledBetweenCommitAndAck runs the -tags farego_testhooks
// build, which exits.
func TestExitAfterCommitsOnlyWithTestTag(t *testing.T) {
	t.Setenv("FAREGO_FAULT_EXIT_AFTER_COMMITS", "1")
	if exitAfterCommits(slog.New(slog.DiscardHandler)) != nil {
		t.Fatal("the release build arms the exit after a commit")
	}
}

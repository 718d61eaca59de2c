package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/server/ledger"
)

// TestVerifyProgressWhileACheckRuns: a check that runs for minutes is
// named while it runs, from --progress on, at most every --progress. It
// was named only as the next check began: the first check, often the
// longest (every posting), was never named, and a verify stuck in it said
// nothing for minutes, which --progress was made to end.
func TestVerifyProgressWhileACheckRuns(t *testing.T) {
	var out strings.Builder
	t0 := time.Unix(1_800_000_000, 0)
	now := t0
	p := &verifyProgress{w: &out, every: 5 * time.Second, now: func() time.Time { return now }, start: t0, last: t0}
	p.tick() // before any check: nothing
	p.begin(1, "account balance differs")
	now = now.Add(3 * time.Second)
	p.tick()
	if out.Len() != 0 {
		t.Fatalf("before 5 s: %q", out.String())
	}
	now = now.Add(3 * time.Second)
	p.tick()
	want := fmt.Sprintf("verify: 6s: check 1 of %d, looking for: account balance differs\n", ledger.InvariantSteps)
	if out.String() != want {
		t.Fatalf("check 1 running for 6 s: %q, want %q", out.String(), want)
	}
	now = now.Add(2 * time.Second)
	p.tick() // 2 s since the last line: nothing
	now = now.Add(4 * time.Second)
	p.tick()
	if n := strings.Count(out.String(), "check 1 of"); n != 2 {
		t.Errorf("check 1 running for 12 s: named %d times, want 2:\n%s", n, out.String())
	}
	p.end()
	now = now.Add(time.Minute)
	p.tick()
	if n := strings.Count(out.String(), "verify: "); n != 2 {
		t.Errorf("after the checks: %d lines, want no more:\n%s", n, out.String())
	}
}

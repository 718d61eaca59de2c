package agent

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/driver/scanner"
	"github.com/farego/farego/queue"
)

// TestContinuousHintOnlyPastReReadMaxAtTheDoor: the continuous-mode hint
// goes with a code_used refusal of a code the accepting door's scanner is
// still reading past ReReadMax, not with the same code shown at the other
// door while its own door re-reads it (one code handed across the bus, not
// a scanner setting): that line told the technician to reprogram a
// scanner that was right.
func TestContinuousHintOnlyPastReReadMaxAtTheDoor(t *testing.T) {
	var logs syncBuffer
	h := newHarness(t, func(c *Config, _ *queue.Options) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	var boot atomic.Int64 // every refusal a second after the last: each logged
	h.a.sinceBoot = func() time.Duration { return time.Duration(boot.Add(int64(time.Second))) }
	tapAt := func(door, text string) Outcome {
		return h.a.Tap(context.Background(), scanner.Frame{Scanner: door, Text: text, Time: h.clock.Now()})
	}
	refusedLine := func() string {
		t.Helper()
		lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
		l := lines[len(lines)-1]
		if !strings.Contains(l, `msg="tap refused"`) || !strings.Contains(l, "reason=code_used") {
			t.Fatalf("last log line %s; want a code_used refusal", l)
		}
		return l
	}

	text := h.issuer.Rider(t, 4242, t0).Code(t, t0)
	if out := tapAt("front", text); !out.Accepted {
		t.Fatal(out)
	}
	h.clock.Add(time.Second)
	if out := tapAt("front", text); !out.AlreadyPaid() {
		t.Fatalf("re-read at the accepting door: %+v", out)
	}
	h.clock.Add(500 * time.Millisecond)
	if out := tapAt("rear", text); out.Reason != record.ReasonCodeUsed {
		t.Fatalf("the code at the other door: %+v, want code_used", out)
	}
	if l := refusedLine(); strings.Contains(l, "continuous") {
		t.Errorf("the code shown at the other door 1.5 s after its acceptance: %s\nwant no continuous-mode hint", l)
	}

	// The accepting door's scanner reading it on and on past ReReadMax.
	for range 8 { // to 5.5 s after the acceptance
		h.clock.Add(500 * time.Millisecond)
		if out := tapAt("front", text); !out.AlreadyPaid() {
			t.Fatalf("re-read at %v: %+v", h.clock.Now().Sub(t0), out)
		}
	}
	h.clock.Add(500 * time.Millisecond)
	if out := tapAt("front", text); out.Reason != record.ReasonCodeUsed {
		t.Fatalf("read past ReReadMax: %+v, want code_used", out)
	}
	if l := refusedLine(); !strings.Contains(l, "continuous (auto-sense) mode") {
		t.Errorf("the code read on and on past ReReadMax: %s\nwant the continuous-mode hint", l)
	}
	// And the other door then, within ReReadWindow of the last re-read.
	h.clock.Add(100 * time.Millisecond)
	if out := tapAt("rear", text); out.Reason != record.ReasonCodeUsed {
		t.Fatalf("the other door: %+v", out)
	}
	if l := refusedLine(); strings.Contains(l, "continuous") {
		t.Errorf("the code at the other door: %s\nwant no continuous-mode hint", l)
	}
}

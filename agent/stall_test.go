package agent

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/driver/scanner"
	"github.com/farego/farego/queue"
)

// hangingFeedback is a fault: its Accepted blocks until released (a hung
// output), after telling entered.
type hangingFeedback struct {
	feedback.Recorder
	entered, release chan struct{}
}

func (f *hangingFeedback) Accepted(ctx context.Context, a feedback.Accept) error {
	f.entered <- struct{}{}
	<-f.release
	return f.Recorder.Accepted(ctx, a)
}

// A tap stuck on the tap path makes the agent stalled (no heartbeats for
// the watchdog) once it is older than TapStallAfter; it recovers when the
// tap completes.
func TestStalledTap(t *testing.T) {
	h := newHarness(t, func(c *Config, _ *queue.Options) { c.TapStallAfter = 10 * time.Second })
	fb := &hangingFeedback{entered: make(chan struct{}), release: make(chan struct{})}
	h.a.fb = fb
	if err := h.a.Stalled(); err != nil {
		t.Fatalf("idle agent stalled: %v", err)
	}
	done := make(chan Outcome)
	code := h.issuer.Rider(t, 5, t0).Code(t, t0)
	go func() {
		done <- h.a.Tap(context.Background(), scanner.Frame{Scanner: "front", Text: code, Time: h.clock.Now()})
	}()
	<-fb.entered
	if err := h.a.Stalled(); err != nil {
		t.Errorf("a tap under way for no time counts as stalled: %v", err)
	}
	h.clock.Add(11 * time.Second)
	if err := h.a.Stalled(); !errors.Is(err, ErrStalled) {
		t.Errorf("Stalled = %v with a tap hanging for 11s, want ErrStalled", err)
	}
	close(fb.release)
	if out := <-done; !out.Accepted {
		t.Fatalf("tap = %+v", out)
	}
	if err := h.a.Stalled(); err != nil {
		t.Errorf("stalled after the tap completed: %v", err)
	}
}

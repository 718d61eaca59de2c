package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/farego/farego/agent"
	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/queue"
)

// TestHTTPClockWhileOutOfBounds: an ack measured the clock, and then the
// clock was seen out of bounds (a jump, a resume): the validator is out
// of service and, taking no tap, gets no ack to measure it again. The
// server's Date still does, and puts it back in service.
func TestHTTPClockWhileOutOfBounds(t *testing.T) {
	q, err := queue.Open(filepath.Join(t.TempDir(), "validator.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	a, err := agent.New(q, feedback.Multi{}, agent.Config{DeviceID: "bus-1", Route: "42", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	a.ClockMeasured(2*time.Hour, 0)
	if !a.ClockBeyond() {
		t.Fatal("a clock 2 h off is not out of bounds")
	}
	var ackClock atomic.Bool
	ackClock.Store(true) // an ack measured it before
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		httpClock(ctx, dateServer(t, 0)+"/healthz", agent.DefaultMaxClockOffset, time.Now, a, &ackClock, slog.New(slog.DiscardHandler))
	}()
	defer func() { cancel(); <-done }()
	for deadline := time.Now().Add(10 * time.Second); a.ClockBeyond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("still out of bounds: the server's Date was not read while the clock was out of bounds")
		}
	}
	if off, _, _ := a.ClockOffset(); off.Abs() > 2*time.Second {
		t.Errorf("offset after the Date = %v, want about 0", off)
	}
}

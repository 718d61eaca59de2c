package feedback

import (
	"context"
	"fmt"
	"slices"
	"sync"
)

// Kind is the kind of a recorded [Event].
type Kind int

const (
	KindAccepted     Kind = iota + 1 // Accepted was called
	KindRejected                     // Rejected was called
	KindOutOfService                 // OutOfService was called
)

// String returns "accepted", "rejected" or "out_of_service".
func (k Kind) String() string {
	switch k {
	case KindAccepted:
		return "accepted"
	case KindRejected:
		return "rejected"
	case KindOutOfService:
		return "out_of_service"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Event is one call recorded by a [Recorder].
type Event struct {
	Kind Kind
	// Accept is set for KindAccepted.
	Accept Accept
	// Reject is set for KindRejected.
	Reject Reject
	// Message is set for KindOutOfService.
	Message string
}

// Recorder records every event, for tests. The zero value is ready to use
// and it is safe for concurrent use.
type Recorder struct {
	// Fail, if not nil, is called with each event after it is recorded, and
	// its result is returned to the caller: a way to inject feedback
	// failures. Set it before the Recorder is used.
	Fail func(Event) error

	mu      sync.Mutex
	events  []Event
	changed chan struct{} // closed and replaced at each event
}

var _ Feedback = (*Recorder)(nil)

// Accepted implements [Feedback].
func (r *Recorder) Accepted(_ context.Context, a Accept) error {
	return r.record(Event{Kind: KindAccepted, Accept: a})
}

// Rejected implements [Feedback].
func (r *Recorder) Rejected(_ context.Context, rej Reject) error {
	return r.record(Event{Kind: KindRejected, Reject: rej})
}

// OutOfService implements [Feedback].
func (r *Recorder) OutOfService(_ context.Context, msg string) error {
	return r.record(Event{Kind: KindOutOfService, Message: msg})
}

func (r *Recorder) record(e Event) error {
	r.mu.Lock()
	r.events = append(r.events, e)
	if r.changed != nil {
		close(r.changed)
		r.changed = nil
	}
	r.mu.Unlock()
	if r.Fail != nil {
		return r.Fail(e)
	}
	return nil
}

// Events returns a copy of the events so far, oldest first.
func (r *Recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// Wait waits until at least n events have been recorded and returns the n-th
// (counting from 1), or ctx's error if it is done first.
func (r *Recorder) Wait(ctx context.Context, n int) (Event, error) {
	if n < 1 {
		return Event{}, fmt.Errorf("feedback: Wait for event %d: events count from 1", n)
	}
	for {
		r.mu.Lock()
		if len(r.events) >= n {
			e := r.events[n-1]
			r.mu.Unlock()
			return e, nil
		}
		if r.changed == nil {
			r.changed = make(chan struct{})
		}
		changed := r.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-ctx.Done():
			return Event{}, fmt.Errorf("feedback: waiting for event %d: %w", n, ctx.Err())
		}
	}
}

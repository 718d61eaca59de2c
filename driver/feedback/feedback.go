package feedback

import (
	"context"
	"errors"
)

// Feedback shows the rider the outcome of a tap. Implementations must return
// quickly: the tap path calls them, and a light pattern or a beep must not
// hold it up.
type Feedback interface {
	// Accepted shows that the rider may go on (green): the tap was
	// accepted and charged Fare, or the code had already paid here
	// (Fare 0, "Already paid": a re-scan is charged nothing).
	Accepted(ctx context.Context, a Accept) error
	// Rejected shows that the tap was refused, and why.
	Rejected(ctx context.Context, r Reject) error
	// OutOfService shows that the validator takes no taps at the moment
	// (queue full, no keys, scanner away). The next Accepted or Rejected
	// replaces it.
	OutOfService(ctx context.Context, msg string) error
}

// Accept describes an accepted tap.
type Accept struct {
	// Fare is the amount charged, in minor units of Currency (cents).
	Fare int64
	// Currency is the ISO 4217 code, for example "EUR".
	Currency string
	// Message is the text for the rider ("Child fare", "Transfer").
	Message string
	// Scanner is the name of the scanner the tap came from ("front").
	Scanner string
}

// Reject describes a refused tap.
type Reject struct {
	// Reason is the stable machine-readable reason ("code_expired",
	// "denied", "passback", ...).
	Reason string
	// Message is the text for the rider ("Code expired: refresh the app").
	Message string
	// Scanner is the name of the scanner the tap came from.
	Scanner string
}

// Multi sends every event to each of its outputs in turn (the console and
// the lights, say). All outputs are called even if some fail; the errors are
// joined.
type Multi []Feedback

var _ Feedback = Multi(nil)

// Accepted implements [Feedback].
func (m Multi) Accepted(ctx context.Context, a Accept) error {
	var errs []error
	for _, f := range m {
		errs = append(errs, f.Accepted(ctx, a))
	}
	return errors.Join(errs...)
}

// Rejected implements [Feedback].
func (m Multi) Rejected(ctx context.Context, r Reject) error {
	var errs []error
	for _, f := range m {
		errs = append(errs, f.Rejected(ctx, r))
	}
	return errors.Join(errs...)
}

// OutOfService implements [Feedback].
func (m Multi) OutOfService(ctx context.Context, msg string) error {
	var errs []error
	for _, f := range m {
		errs = append(errs, f.OutOfService(ctx, msg))
	}
	return errors.Join(errs...)
}

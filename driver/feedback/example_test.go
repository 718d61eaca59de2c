package feedback_test

import (
	"context"
	"os"
	"time"

	"github.com/farego/farego/driver/feedback"
)

func ExampleConsole() {
	clock := func() time.Time { return time.Date(2026, 1, 1, 8, 0, 5, 0, time.UTC) }
	fb := feedback.NewConsole(os.Stdout, feedback.ConsoleConfig{Color: feedback.ColorNever, Now: clock})
	ctx := context.Background()
	fb.Accepted(ctx, feedback.Accept{Fare: 250, Currency: "EUR", Message: "Child fare", Scanner: "front"})
	fb.Rejected(ctx, feedback.Reject{Reason: "code_expired", Message: "Code expired: refresh the app", Scanner: "rear"})
	fb.OutOfService(ctx, "queue full")
	// Output:
	// 08:00:05 [front] ACCEPTED  2.50 EUR  Child fare
	// 08:00:05 [rear] REJECTED  Code expired: refresh the app (code_expired)
	// 08:00:05 OUT OF SERVICE  queue full
}

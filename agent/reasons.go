package agent

import "github.com/farego/farego/agent/ridertext"

// Reasons the agent adds to paycode's. Like those, they are stable API
// (logs, metrics, feedback).
const (
	ReasonDenied    = "denied"
	ReasonDuplicate = "duplicate"
	ReasonPassback  = "passback"
	ReasonRiskCap   = "risk_cap"
	ReasonNoFare    = "no_fare"
	ReasonQueueFull = "queue_full"
	ReasonClock     = "clock"
	ReasonInternal  = "internal"
)

// Reasons lists the agent's own reasons; with paycode.Reasons, every
// reason a tap can be refused for.
var Reasons = []string{
	ReasonDenied, ReasonDuplicate, ReasonPassback, ReasonRiskCap,
	ReasonNoFare, ReasonQueueFull, ReasonClock, ReasonInternal,
}

// RiderMessage returns the short English text a rider sees for a reason
// (see agent/ridertext for the other languages, and [Agent.RiderMessage]
// for the device's own).
func RiderMessage(reason string) string {
	return ridertext.Message(ridertext.English, reason)
}

// outOfService reports whether a reason means the validator, not the code,
// is at fault: it shows out of service rather than a red light.
func outOfService(reason string) bool {
	switch reason {
	case ReasonQueueFull, ReasonClock, ReasonInternal, ReasonNoFare:
		return true
	}
	return false
}

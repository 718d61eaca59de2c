package agent

import (
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/agent/ridertext"
)

// Reasons lists the agent's own reasons (record.Reason*); with
// paycode.Reasons, every reason a tap can be refused for (record.Reasons).
var Reasons = []record.Reason{
	record.ReasonDenied, record.ReasonDuplicate, record.ReasonCodeUsed, record.ReasonPassback, record.ReasonRiskCap,
	record.ReasonNoFare, record.ReasonQueueFull, record.ReasonClock, record.ReasonInternal,
	record.ReasonClockOffset, record.ReasonQueueDamaged, record.ReasonRouteNotInFares,
	record.ReasonNoValidKey,
}

// RiderMessage returns the short English text a rider sees for a reason
// (see agent/ridertext for the other languages, and [Agent.RiderMessage]
// for the device's own).
func RiderMessage(reason record.Reason) string {
	return ridertext.Message(ridertext.English, string(reason))
}

package agent

import "github.com/farego/farego/agent/paycode"

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

// riderMessages are the short texts a rider sees on the validator display.
var riderMessages = map[string]string{
	string(paycode.ReasonMalformed):              "Code not readable - try again",
	string(paycode.ReasonUnsupportedVersion):     "Please update your app",
	string(paycode.ReasonUnknownIssuerKey):       "Code not valid here",
	string(paycode.ReasonBadCredentialSignature): "Invalid code",
	string(paycode.ReasonCredentialNotYetValid):  "Code not valid yet",
	string(paycode.ReasonCredentialExpired):      "Open your app online to renew",
	string(paycode.ReasonBadCodeSignature):       "Invalid code",
	string(paycode.ReasonCodeFromFuture):         "Check your phone's clock",
	string(paycode.ReasonCodeExpired):            "Code expired - refresh it",
	ReasonDenied:                                 "Account blocked - see your app",
	ReasonDuplicate:                              "Already paid",
	ReasonPassback:                               "Already used - please wait",
	ReasonRiskCap:                                "Limit reached - go online",
	ReasonNoFare:                                 "Out of service: fares",
	ReasonQueueFull:                              "Out of service",
	ReasonClock:                                  "Out of service: clock",
	ReasonInternal:                               "Out of service",
}

// RiderMessage returns the short text a rider sees for a reason.
func RiderMessage(reason string) string {
	if m, ok := riderMessages[reason]; ok {
		return m
	}
	return "Not accepted"
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

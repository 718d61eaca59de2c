package agent

import (
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
)

// riderMessages are the short texts a rider sees on the validator display.
var riderMessages = map[record.Reason]string{
	paycode.ReasonMalformed:              "Code not readable - try again",
	paycode.ReasonUnsupportedVersion:     "Please update your app",
	paycode.ReasonUnknownIssuerKey:       "Code not valid here",
	paycode.ReasonBadCredentialSignature: "Invalid code",
	paycode.ReasonCredentialNotYetValid:  "Code not valid yet",
	paycode.ReasonCredentialExpired:      "Open your app online to renew",
	paycode.ReasonBadCodeSignature:       "Invalid code",
	paycode.ReasonCodeFromFuture:         "Check your phone's clock",
	paycode.ReasonCodeExpired:            "Code expired - refresh it",
	record.ReasonDenied:                  "Account blocked - see your app",
	record.ReasonDuplicate:               "Already paid",
	record.ReasonPassback:                "Already used - please wait",
	record.ReasonRiskCap:                 "Limit reached - go online",
	record.ReasonNoFare:                  "Out of service: fares",
	record.ReasonQueueFull:               "Out of service",
	record.ReasonClock:                   "Out of service: clock",
	record.ReasonInternal:                "Out of service",
}

// RiderMessage returns the short text a rider sees for a reason.
func RiderMessage(reason record.Reason) string {
	if m, ok := riderMessages[reason]; ok {
		return m
	}
	return "Not accepted"
}

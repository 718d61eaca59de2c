package record

import "github.com/farego/farego/agent/paycode"

// Reason is the stable, machine-readable reason a tap was refused: one of
// paycode's (the code itself) or one the validator adds (its state). They
// are API: logs, metrics, feedback, the check command's output.
type Reason = paycode.Reason

// Reasons the validator adds after paycode's, in checking order.
const (
	ReasonDenied    Reason = "denied"    // account or credential on the deny list
	ReasonDuplicate Reason = "duplicate" // this code was accepted here a moment ago (a re-read): no charge
	// ReasonCodeUsed: this code was accepted here longer ago than a
	// scanner's re-read (the phone was handed on): refused, no charge.
	ReasonCodeUsed  Reason = "code_used"
	ReasonPassback  Reason = "passback"   // the same account within the passback window
	ReasonRiskCap   Reason = "risk_cap"   // the account reached the offline cap
	ReasonNoFare    Reason = "no_fare"    // out of service: no fare table or fare
	ReasonQueueFull Reason = "queue_full" // out of service: the queue is full
	ReasonClock     Reason = "clock"      // out of service: the clock is unset
	ReasonInternal  Reason = "internal"   // out of service: recording failed
	// ReasonClockOffset: out of service: the clock is set but further from
	// the server's than the configured bound (measured from the acks).
	ReasonClockOffset Reason = "clock_offset"
	// ReasonQueueDamaged: out of service: the queue file was damaged and
	// nothing could be read from it; an operator must reset it.
	ReasonQueueDamaged Reason = "queue_damaged"
	// ReasonRouteNotInFares: out of service: the route the vehicle is
	// assigned has no fares in the device's fare table (and the table has
	// no default route); charging another route's fare would be wrong.
	ReasonRouteNotInFares Reason = "route_not_in_fares"
	// ReasonNoValidKey: out of service: no issuer key of the device's
	// keyring is valid now (an old bundle's keyring, or a device offline
	// past a key rotation): every code would be refused as
	// unknown_issuer_key, a device fault shown to riders as theirs.
	ReasonNoValidKey Reason = "no_valid_key"
)

// Reasons lists every reason a validator can give, in checking order.
var Reasons = append(append([]Reason(nil), paycode.Reasons...),
	ReasonDenied, ReasonDuplicate, ReasonCodeUsed, ReasonPassback, ReasonRiskCap,
	ReasonNoFare, ReasonQueueFull, ReasonClock, ReasonInternal, ReasonClockOffset, ReasonQueueDamaged,
	ReasonRouteNotInFares, ReasonNoValidKey)

// OutOfService reports whether a reason means the validator, not the
// code, is at fault.
func OutOfService(r Reason) bool {
	switch r {
	case ReasonQueueFull, ReasonClock, ReasonInternal, ReasonNoFare, ReasonClockOffset, ReasonQueueDamaged, ReasonRouteNotInFares,
		ReasonNoValidKey:
		return true
	}
	return false
}

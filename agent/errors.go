package agent

import (
	"errors"
	"fmt"
)

// ErrStaleVersion is returned by Apply for a document whose version is not
// newer than the one applied.
var ErrStaleVersion = errors.New("agent: stale version")

// ErrInvalidDocument is returned (wrapped) by Apply for a document that does
// not parse or whose version disagrees with the downlink's.
var ErrInvalidDocument = errors.New("agent: invalid document")

// ErrNotProvisioned is returned by New when the device has no keyring or no
// fare table, from its own state or the provisioning bundle.
var ErrNotProvisioned = errors.New("agent: not provisioned")

// ErrInvalidAssignment is returned (wrapped) for a route or vehicle name
// that is empty (a route), too long or not plain text.
var ErrInvalidAssignment = errors.New("agent: invalid assignment")

// ErrStalled is returned (wrapped) by Stalled when the tap path hangs.
var ErrStalled = errors.New("agent: stalled")

// ErrConfig is returned (wrapped) for an invalid Config.
var ErrConfig = errors.New("agent: invalid config")

// Refusals raised inside the queue transaction; they carry the reason.
var (
	errPassback = errors.New("passback")
	errRiskCap  = errors.New("risk cap")
	errCodeUsed = errors.New("code used")
	// errCodeHeldOn is errCodeUsed for a code the accepting door's
	// scanner is still reading again and again past ReReadMax (a scanner
	// in continuous mode): its refusal is logged with continuousHint.
	errCodeHeldOn = fmt.Errorf("%w: still read again and again past ReReadMax", errCodeUsed)
)

// duplicateError is raised inside the queue transaction for a code already
// accepted here; seq is the record of the tap that paid with it.
type duplicateError struct{ seq uint64 }

func (e *duplicateError) Error() string { return "duplicate" }

package wire

import (
	"errors"
	"fmt"
)

// ErrMalformed is returned (wrapped, with the detail) for a message or record
// that does not decode: bad magic, truncated, trailing bytes, a field out of
// range.
var ErrMalformed = errors.New("wire: malformed message")

// ErrTooLarge is returned for a message or inflated payload over its limit.
var ErrTooLarge = errors.New("wire: message too large")

// ErrBadSignature is returned when a message's signature does not verify
// with the expected key.
var ErrBadSignature = errors.New("wire: bad signature")

// ErrUnsupported is returned for an unknown message type or version.
var ErrUnsupported = errors.New("wire: unsupported message type or version")

// ErrNoBuild is matched (errors.Is) by a NoBuildError: a release rollout
// without a build for the device's architecture, not a protocol mismatch
// but a build to add.
var ErrNoBuild = errors.New("wire: no build for this architecture")

// NoBuildError is Rollout.For's error for an architecture the release has
// no build for; its text is what the device reports to the operator.
type NoBuildError struct{ Version, Arch string }

func (e *NoBuildError) Error() string {
	return fmt.Sprintf("release %s has no build for %s (farego-settlement release add --arch %s)", e.Version, e.Arch, e.Arch)
}

// Is makes errors.Is(err, ErrNoBuild) true.
func (e *NoBuildError) Is(target error) bool { return target == ErrNoBuild }

// ErrBadTopic is returned for a topic that is not one of farego's.
var ErrBadTopic = errors.New("wire: not a farego topic")

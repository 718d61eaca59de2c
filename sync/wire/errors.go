package wire

import "errors"

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

// ErrNoBuild is returned when a release rollout has no build for the
// device's architecture: not a protocol mismatch, a release to add.
var ErrNoBuild = errors.New("wire: no build for this architecture")

// ErrBadTopic is returned for a topic that is not one of farego's.
var ErrBadTopic = errors.New("wire: not a farego topic")

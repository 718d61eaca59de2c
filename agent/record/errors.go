package record

import "errors"

// ErrMalformed is returned (wrapped, with the detail) for a record or
// document that does not decode: truncated, trailing bytes, a field out of
// range, fields that disagree with the code.
var ErrMalformed = errors.New("record: malformed")

// ErrTooLarge is returned for a record or document over its limit.
var ErrTooLarge = errors.New("record: too large")

// ErrUnsupported is returned for a record of an unknown version.
var ErrUnsupported = errors.New("record: unsupported version")

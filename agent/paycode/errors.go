package paycode

import "errors"

// ErrMalformed is returned when bytes or text are not a well-formed version 1
// credential or code (wrong prefix, bad Base45, wrong length).
var ErrMalformed = errors.New("paycode: malformed")

// ErrUnsupportedVersion is returned for a code of another format version
// ("FG2:…" or a version byte other than 1).
var ErrUnsupportedVersion = errors.New("paycode: unsupported version")

// ErrInvalidField is returned when a credential or code cannot be built
// because one of its fields is out of range (for example not after before not
// before, or a reserved rider profile).
var ErrInvalidField = errors.New("paycode: invalid field")

// ErrBadKey is returned for a key or secret of the wrong size.
var ErrBadKey = errors.New("paycode: bad key")

// ErrKeyring is returned (wrapped, with the details) when a keyring file or
// value is invalid.
var ErrKeyring = errors.New("paycode: invalid keyring")

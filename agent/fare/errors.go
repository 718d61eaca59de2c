package fare

import "errors"

// ErrInvalid is returned (wrapped, with details) for a fare table that does
// not parse or breaks a rule.
var ErrInvalid = errors.New("fare: invalid fare table")

// ErrNoFare is returned when the table has no fare for a route and profile.
var ErrNoFare = errors.New("fare: no fare for this route and profile")

package fleet

import "errors"

var (
	// ErrConfig is a Config without a required field.
	ErrConfig = errors.New("fleet: incomplete configuration")
	// ErrServer is an answer of the settlement server that makes no sense
	// (a malformed credential, a metric missing from /metrics).
	ErrServer = errors.New("fleet: unexpected answer from the settlement server")
)

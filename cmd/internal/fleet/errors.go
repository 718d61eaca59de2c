package fleet

import "errors"

var (
	// ErrConfig is a Config without a required field.
	ErrConfig = errors.New("fleet: incomplete configuration")
	// ErrServer is an answer of the settlement server that makes no sense
	// (a malformed credential, a metric missing from /metrics).
	ErrServer = errors.New("fleet: unexpected answer from the settlement server")
	// ErrNoMetrics is a settlement server that answers GET /metrics 404
	// at the address asked: run --metrics ADDR serves it there alone.
	ErrNoMetrics = errors.New("fleet: no /metrics here (a server run with --metrics ADDR serves it on that address alone)")
)

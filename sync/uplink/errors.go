package uplink

import "errors"

// ErrConfig is returned (wrapped, with the detail) by New for a Config that
// cannot work: a missing or malformed broker URL, device id or key, limits
// out of range, unreadable TLS files.
var ErrConfig = errors.New("uplink: invalid config")

// ErrRunning is returned by Run when the uplink is already running.
var ErrRunning = errors.New("uplink: already running")

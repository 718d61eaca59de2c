package broker

import "errors"

// ErrConfig is returned (wrapped, with the detail) by New for a Config that
// cannot work: no secret, a malformed listen address or topic prefix,
// unreadable TLS files.
var ErrConfig = errors.New("broker: invalid config")

// ErrStarted is returned by Start when the broker was started before.
var ErrStarted = errors.New("broker: already started")

// ErrDisconnected is the cause recorded when the broker closes a device's
// connection because its credential was revoked or rotated.
var ErrDisconnected = errors.New("broker: credential revoked or rotated")

// errNotReady is the reason a device is refused while Config.DevicesReady
// says the settlement server is not ready for it.
var errNotReady = errors.New("broker: the settlement server is not ready for devices yet (its ingest has not subscribed); the device retries")

package ingest

import "errors"

// ErrConfig is returned (wrapped, with the detail) by New and NewPublisher
// for a configuration that cannot work: no broker, a malformed broker URL,
// a missing fleet key, keyring or store, limits out of range.
var ErrConfig = errors.New("ingest: invalid config")

// ErrUnknownDevice is what a Store's DeviceKey returns (wrapped) for a
// device that is not registered. The ingest refuses the device's messages
// without acking them, and logs that at most once a minute per device.
var ErrUnknownDevice = errors.New("ingest: unknown device")

// ErrRevokedDevice is what a Store's DeviceKey returns (wrapped), together
// with the device's key, for a device the operator revoked. The ingest
// checks the signature (so that only the device's own messages count),
// hands a signed batch to Store.Commit marked Revoked — the store keeps it
// aside, uncharged — and never acks it; a status is refused.
var ErrRevokedDevice = errors.New("ingest: revoked device")

// ErrNotConnected is returned by Replay and Publisher.Publish while the
// client is not connected to the broker.
var ErrNotConnected = errors.New("ingest: not connected to the broker")

// ErrRunning is returned by Run when the Ingest or Publisher is already
// running.
var ErrRunning = errors.New("ingest: already running")

// ErrPublish is returned (wrapped, with the detail) when the broker did not
// confirm a publication in time or refused it.
var ErrPublish = errors.New("ingest: publish failed")

// ErrStaleVersion is returned by Publisher.Publish for a document version
// older than the one it last published of that kind: the retained message
// would go back in time.
var ErrStaleVersion = errors.New("ingest: downlink version older than the one published")

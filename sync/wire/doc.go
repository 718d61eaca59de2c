// Package wire defines the MQTT topics and messages of the farego link,
// shared by the validator and the settlement server.
//
// Every message is an envelope:
//
//	"FGW1" | type (1) | flags (1) | payload | Ed25519 signature (64)
//
// The signature covers "farego-wire-v1" ‖ type ‖ flags ‖ payload, where the
// payload is as sent (compressed when flag bit 0 is set: raw DEFLATE). The
// receiver checks the size, then the signature, and only then inflates,
// with a hard limit on the inflated size. Tap batches and status are signed
// by the device's own key; acks, replay requests and fleet downlinks by the
// operator's fleet key.
//
// Payloads are compact binary (batches, acks; a batch carries tap records,
// whose format and the encoding the messages share live in agent/record,
// below both ends) or JSON (status, downlink bodies); every decoder is strict: unknown versions, trailing
// bytes, oversized fields, bad UTF-8 and out-of-range values are errors,
// never panics.
//
// Topics live under a configurable prefix (default "farego"):
//
//	PREFIX/dev/ID/taps     device → server   tap batches (QoS 1)
//	PREFIX/dev/ID/ack      server → device   application-level acks (QoS 1)
//	PREFIX/dev/ID/status   device → server   status, retained; last will "offline"
//	PREFIX/dev/ID/cmd      server → device   replay requests (QoS 1)
//	PREFIX/fleet/keyring   server → devices  issuer keyring, retained
//	PREFIX/fleet/denylist  server → devices  deny list, retained (whole, while small)
//	PREFIX/fleet/denylist/N server → devices deny-list shard N (0-255), retained
//	PREFIX/fleet/denyindex server → devices  deny-list shard index (each shard's version), retained
//	PREFIX/fleet/fares     server → devices  fare table, retained
//	PREFIX/fleet/release   server → devices  software rollout (Rollout, signed manifests), retained
package wire

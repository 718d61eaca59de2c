// Package record is what a validator produces and decides with, shared by
// the device (agent) and the link (sync/wire, the server's ingest): the tap
// record, device ids, the device documents (keyring, deny list, fare
// table) and the stable refusal reasons. It sits below both, so imports
// run one way: the agent does not import the link's wire package.
//
// The tap record is compact binary, written with Encoder and read with a
// strict Decoder (unknown versions, trailing bytes, oversized fields, bad
// UTF-8 and out-of-range values are errors, never panics); the link's own
// messages use the same encoding. A record carries the whole payment code
// (the server re-verifies it) and the hash of the device's previous record
// (Hash), so a device's records form a tamper-evident chain.
package record

// Package sync is the parent of farego's MQTT store-and-forward link. It has
// no code of its own (a package literally named sync would shadow the
// standard library); the work is in its sub-packages:
//
//   - sync/wire: topics and messages shared by both ends, strictly decoded,
//     signed (device key for tap batches and status, fleet key for acks and
//     downlinks) and optionally compressed.
//   - sync/uplink: the device side: drains the bbolt queue in signed batches
//     over MQTT QoS 1, deletes records only on the server's signed
//     application-level ack, publishes status, and applies signed fleet
//     downlinks (keyring, deny list, fare table).
//   - sync/ingest: the server side: consumes tap batches through a shared
//     subscription, hands them to the ledger and acks what was committed.
package sync

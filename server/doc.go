// Package server is the settlement server: it runs the ledger, the HTTP API
// for riders, merchants and operators, the MQTT ingest of tap batches, the
// publication of fleet downlinks, and (by default) an embedded MQTT broker.
//
// Sub-packages:
//
//   - server/ledger: accounts, append-only postings, idempotent tap
//     settlement with event-time re-rating, online payments, deny list;
//     SQLite or PostgreSQL.
//   - server/keys: the operator's secrets on disk (issuer root secret, fleet
//     key, operator token) and the issuer keyring with rotation.
//   - server/api: the HTTP JSON API.
//   - server/broker: the embedded MQTT broker with per-device access control.
//
// [Server] wires them together; cmd/farego-settlement parses flags and runs it.
package server

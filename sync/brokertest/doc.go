// Package brokertest runs real MQTT brokers for the tests of farego's sync
// packages: an in-process mochi-mqtt broker on a free loopback port that can
// be stopped and started again on the same port (the broker "going down"),
// can drop a client's connection without a DISCONNECT (so its last will is
// published), can refuse chosen client ids, and can serve mutual TLS with a
// throw-away certificate authority made by NewPKI.
//
// It is test support only: nothing in a production binary imports it (the
// device binary must not link broker code).
//
// # Caveats
//
//   - The broker keeps retained messages in memory. Restart carries them over
//     to the new broker, like a broker with persistence would; in-flight
//     QoS 1 messages and sessions are not carried over.
//   - mochi-mqtt's default MaximumInflight (8,192 per client) and
//     MaximumClientWritesPending make it drop QoS 1 messages silently under
//     a large backlog; Start raises both to their maxima. Tests must still
//     never rely on the broker for durability.
//   - Restart on the same port retries for a while if the port is briefly
//     taken; another process grabbing it for good fails the test.
package brokertest

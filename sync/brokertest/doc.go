// Package brokertest is the shared test support of farego's MQTT tests:
// those of sync/uplink, sync/ingest and server/broker. It provides
//
//   - Start: an in-process mochi-mqtt broker on a free loopback port that
//     can be stopped and started again on the same port (the broker "going
//     down"), can drop a client's connection without a DISCONNECT (so its
//     last will is published), can refuse chosen client ids, and can serve
//     mutual TLS;
//   - NewPKI: a throw-away certificate authority with a server certificate
//     for 127.0.0.1/localhost and client certificates, as PEM files and as
//     ready tls.Config values;
//   - StartMosquitto: a mosquitto process of the test's own with the
//     configuration the test gives, on free loopback ports, with an
//     optional password file;
//   - MosquittoURL: the external Mosquitto of FAREGO_TEST_MOSQUITTO, or a
//     skip without it (a failure under FAREGO_CI);
//   - LeakCheck: a TestMain helper that fails the run if goroutines of paho,
//     mochi-mqtt or the suite's own packages outlive the tests.
//
// Helpers that only one suite uses (its fixtures, clients and waits) stay
// in that suite.
//
// It is test support only: no package imports it outside its tests (the
// device binary must not link broker code). It is not under internal/ so
// that the server's tests can use it; TestOnlyTestsImportIt and the
// dependency tests of sync/uplink and sync/ingest keep it out of
// production code.
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
//   - StartMosquitto picks its ports with FreeAddr, which frees them again
//     before mosquitto binds them: another process taking one in between
//     makes mosquitto exit, and StartMosquitto picks new ports, up to five
//     times. It waits for mosquitto's own listening sockets (read from
//     /proc), not for a connection. It skips the test when
//     mosquitto is not installed (unless FAREGO_CI is set) and under
//     qemu-user emulation (FAREGO_QEMU).
//   - LeakCheck matches goroutine stacks as text: a marker such as
//     "sync/uplink.(*" counts every goroutine with a method of that
//     package's types in its stack, or started by one. Goroutines of plain
//     functions need a marker of their own. It checks only when the tests
//     passed.
package brokertest

// Package mqttclient is farego's one MQTT client core, shared by the
// device uplink (sync/uplink) and the server's ingest and downlink
// publisher (sync/ingest): the connect loop, the subscriptions and their
// SUBACK check, the reconnection backoff, the logging of outages and the
// redaction of broker credentials.
//
// Every connection attempt uses a fresh paho client with a clean session,
// a memory store (the durable stores are the device queue and the ledger),
// unordered delivery and paho's own reconnection off (it is not
// context-aware, has no jitter, and races with publishing in v1.5.1). The
// attempt's network connections end with its context (Dialer). After the
// CONNACK the client subscribes to Config.Filters and checks that the
// broker granted every one (a refusal, SUBACK 0x80, usually means the ACL
// or the credentials are wrong). Then the connection is ready and Run
// hands it to the caller's session function until the connection is lost
// or the context ends; then it says goodbye (Config.Goodbye), disconnects,
// and waits a jittered, doubling, capped backoff (driver/backoff) before
// the next attempt. A run of failures is logged once, at its start, and
// the recovery once, with the attempts and the outage's length.
//
// # Caveats
//
// MQTT 3.1.1 only (shared subscriptions "$share/…" work with Mosquitto,
// EMQX and mochi). Publishing is the caller's, on Session.Client; a
// publish on a lost connection fails at once or when its token times out.
package mqttclient

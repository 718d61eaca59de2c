// Package broker is the settlement server's embedded MQTT broker
// (github.com/mochi-mqtt/server/v2) with farego's authentication and access
// rules, so that one command runs everything on one machine. A fleet that
// outgrows it runs Mosquitto or EMQX instead with the same rules
// (testdata/broker holds a Mosquitto sample).
//
// # Authentication
//
// A client proves one identity: a device id, or the settlement server's
// username (Config.ServerUsername, default "farego-server").
//
//   - On the plain listener (and on a TLS listener without client
//     certificates) with a username and password. A device's username is
//     its id; its password is random per registration, and the broker asks
//     Config.Devices (the settlement server answers from the ledger, where
//     only a hash is kept, in Mosquitto's "$7$" format: HashPassword,
//     CheckPassword). The server's own clients use [ServerPassword].
//   - On the TLS listener with ClientCAFile (mutual TLS): the common name
//     of the client certificate, verified against the CA and accepted by
//     Config.Devices (the ledger pins each device's certificate). A
//     username, if sent, must equal it. No certificate authenticates as the
//     settlement server, whatever its common name.
//
// A device id must satisfy record.ValidDeviceID, and a device must use its
// own client id, DeviceClientIDPrefix + id: it can neither take another
// device's session over nor hold more than one. A connection is also
// refused when its last will names a topic the client may not publish to
// (mochi does not check wills against the ACL), or when its client id is
// in use by another identity. Refusals are counted and logged at most once
// a minute per username.
//
// # Access rules
//
//	device ID   publish    PREFIX/dev/ID/taps, PREFIX/dev/ID/status (its will too)
//	            subscribe  PREFIX/dev/ID/ack, PREFIX/dev/ID/cmd, PREFIX/fleet/#
//	server      publish    PREFIX/dev/+/ack, PREFIX/dev/+/cmd, PREFIX/fleet/#
//	            subscribe  PREFIX/dev/+/taps, PREFIX/dev/+/status, PREFIX/fleet/#,
//	                       also as $share/GROUP/… (several settlement instances)
//
// Everything else is denied: other devices' topics, $SYS, topics outside
// the prefix, wildcard subscriptions wider than the above. A denied QoS 1
// publication from an MQTT 3.1.1 client disconnects it (mochi's rule; the
// protocol has no negative PUBACK); a denied subscription gets the SUBACK
// failure code. A retained publication on a taps topic is stored as not
// retained.
//
// # Capabilities
//
// mochi's defaults are raised or changed where DESIGN.md's pitfalls say:
//
//   - MaximumInflight 65,535 (default 8,192): beyond it mochi drops QoS 1
//     messages to a client silently, which a probe measured at 5-39 % under
//     a large backlog. The settlement server's subscription carries every
//     device's batches.
//   - ReceiveMaximum 65,535 (default 1,024): an MQTT 3.1.1 client with more
//     QoS 1 publications unacknowledged towards the broker is disconnected.
//   - MaximumMessageExpiryInterval 0 (default 24 h): with the default, mochi
//     deletes retained messages older than a day (the fleet keyring would
//     vanish for devices connecting after it) and drops messages in flight
//     after a day.
//   - MaximumSessionExpiryInterval SessionExpiry (default 24 h; mochi's is
//     136 years): bounds the memory of clients asking for persistent
//     sessions. farego's own clients use clean sessions.
//   - MaximumPacketSize 1 MiB + 64 KiB (a wire message with its headers).
//
// A connection gets ConnectTimeout for its TLS handshake and CONNECT packet
// (mochi's own listener waits for ever).
//
// # Caveats
//
//   - Nothing is persisted: retained messages (device status, fleet
//     downlinks) are lost when the server stops, and the downlink
//     publisher publishes the downlinks again when it connects. Devices
//     resend unacked batches, so nothing else is lost.
//   - Passwords on the plain listener travel in clear. Bind it to loopback
//     for the server's own clients and give devices the TLS listener, or
//     use it only on a trusted network.
//   - The broker secret derives every password: changing it changes all of
//     them. Keep it with the server's other secrets.
//   - Stats.MessagesDropped and Stats.InflightDropped count what mochi
//     dropped; watch them.
package broker

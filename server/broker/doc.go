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
// in use by another identity, or while Config.DevicesReady says the
// settlement server is not ready for devices (its ingest has not
// subscribed yet, at a restart). Refusals are counted and logged at most
// once a minute per username.
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
//   - MaximumSessionExpiryInterval SessionExpiry (default 1 h; mochi's is
//     136 years): bounds the memory of clients asking for persistent
//     sessions. farego's own clients use clean sessions, and a device
//     can hold one session only (its own client id).
//   - MaximumPacketSize 400 KiB (wire.MaxMessageSize, 384 KiB, with its
//     topic and headers); a larger packet disconnects its sender.
//
// # Limits
//
// Config.Limits bound what one device can make the broker hold or do:
//
//   - A publication budget per device: 256 KiB/s with an 8 MiB burst, and
//     20 publications (or connections) a second with a burst of 400. A
//     device over its budget is held back (the broker stops reading its
//     connection until the budget allows); one that stays over it
//     (more than 10 s of holding back, draining at a quarter of real
//     time), or that reconnects in a loop, is disconnected and refused
//     for a minute, doubling for each flood within an hour, up to 16
//     minutes (Stats.Flooded). Legitimate traffic (a bus makes a few
//     hundred bytes a minute, a week's backlog is a few megabytes) never
//     gets near it.
//   - At most 1,024 QoS 1 messages and 32 MiB held for one device (sent
//     and not acknowledged, or waiting): deliveries beyond are dropped
//     (Stats.Shed); acks come again on the device's resend, downlinks on
//     its next connection. The bound is on deliveries, not on
//     subscriptions: a device at it may still subscribe (to its own ack
//     and cmd topics after a reconnection, say), and the retained messages
//     a subscription brings are deliveries like any other.
//   - At most 32 subscriptions for one device, each filter at most 128
//     bytes after the prefix; each SUBSCRIBE costs a message from the
//     device's budget.
//   - Only QoS 1 counts against the bounds above: mochi queues QoS 0
//     messages for a client that does not read (up to MaxPendingWrites
//     packets, each up to MaxPacketSize, a copy per subscriber) without a
//     hook to count them. So nothing a device causes travels at QoS 0: its
//     QoS 0 publications are dropped (after they are charged to its
//     budget; Stats.Denied), its QoS 0 subscriptions refused, and its last
//     will published at QoS 1. The settlement server's own clients are
//     trusted to publish and subscribe at QoS 1.
//   - At most 64 MiB held for the settlement server's clients together:
//     beyond it devices' publications are acknowledged and dropped
//     (Stats.Shed), and the devices send them again when no ack comes.
//     The server's memory does not grow with a flood.
//
// A connection gets ConnectTimeout for its TLS handshake and CONNECT packet
// (mochi's own listener waits for ever). The broker reads the CONNECT whole
// before it hands the connection to mochi, which sets aside a client's
// write queue (MaxPendingWrites slots) and two goroutines at once: a
// connection not logged in holds what it sent and a few KB. At most
// MaxPendingPerAddress connections of one address (an IPv6 /64) are not
// logged in at once, and of one IPv6 site (its /48) the larger of 4 times
// that and a sixteenth of MaxConnections: validators reach the broker
// through mobile carriers, whose /48s they share with the public (a bound
// of a few addresses' let four phones there keep them out), and one /48
// must not hold every place (a tunnel's is 65,536 /64s).
//
// # Writes to clients
//
// A publisher never waits on a subscriber. mochi hands a delivery to a
// subscriber's outbound queue without writing it, but the packet id it
// takes for it (Client.NextPacketID) takes the subscriber's lock, which
// mochi holds while it writes to the subscriber's connection: a device
// that stopped reading would hold up every publisher of what it subscribed
// to (the settlement server's fleet and ack publications among them) for
// as long as a write to it blocked. So a write to a connection only queues
// its bytes, and a goroutine per connection writes them out:
//
//   - While a connection has DeviceSendBuffer (64 KiB) queued, the next
//     packet for it waits before mochi takes the client's lock (the
//     OnPacketEncode hook), holding up nothing but that client's own
//     writer: deliveries to it wait in its outbound queue and as messages
//     in flight (bounded above), and a device that is slow but reading
//     gets every one of them (a live deny-list shard dropped would not
//     come again until it reconnects). A connection holds at most that
//     and a few packets (3 × MaxPacketSize); more closes it.
//   - At most SendBufferTotal (256 MiB) is queued for all devices'
//     connections together: a device whose write would go over it is
//     disconnected at once (Stats.Stalled), whatever it is. A device that
//     does not read holds about 64 + 400 KiB, so that is some 560 devices
//     that stopped reading at once, or about 4,000 downloading the deny
//     list at once (which mochi's copies of the messages in flight, up to
//     32 MiB each, outweigh). The settlement server's clients are outside
//     this bound (they are few and each holds at most the above).
//   - A client that takes nothing of a write for WriteTimeout (30 s) is
//     disconnected, whatever its keep-alive (Stats.Stalled). QoS 1
//     messages it had not acknowledged stay in its session and are sent
//     again when it comes back with it (mochi's rule); with a clean
//     session its retained downlinks come again on subscription.
//   - When mochi closes a connection, what is queued for it (a refused
//     CONNACK, a DISCONNECT) is still written, within WriteTimeout.
//
// Stats.Queued is the bytes queued now.
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

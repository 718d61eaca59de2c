// Package ingest is the settlement server's side of the MQTT link: it
// consumes the validators' tap batches and status messages, hands them to
// the ledger, acks what was committed, asks devices to replay archived
// records, and publishes the fleet downlinks.
//
// It does not import the server: the ledger plugs in through the small
// [Store] interface defined here, and the downlink documents through a
// [Source] function.
//
// # Tap batches
//
// [Ingest.Run] subscribes, after every (re)connection, to
//
//	$share/GROUP/PREFIX/dev/+/taps
//	$share/GROUP/PREFIX/dev/+/status
//
// (plain PREFIX/dev/+/… with NoSharedSubscription), so that several
// settlement instances in one group share the devices' messages. paho's
// message handler never blocks: it puts the message on its device's queue
// (DeviceQueueSize messages, DeviceQueueBytes) and drops it when that is
// full (device_queue_full) or when all the queues together are
// (QueueSize, QueueBytes: queue_full); the device sends it again. Workers
// goroutines serve the devices round-robin, at most one message per device
// per round, so that one device's flood or backlog delays another's batch
// by at most one message per device: it fills and overflows only its own
// queue. Stats (and the server's metrics) show the queue depth.
//
// A worker takes up to CoalesceBatches messages of different devices at
// once, checks each, and when the Store is a [BatchCommitter] commits
// their batches in one call (the ledger settles one big set faster than
// many small ones); if that call fails, each batch is committed alone. A
// batch is acked only after its own taps are committed.
//
// A worker takes the device id from the topic, reads the device's key
// (Store.DeviceKey), checks the envelope's signature (wire.Open), decodes
// the batch and checks that it names the topic's device. An unknown device,
// a bad signature or a malformed batch is refused without an ack, counted
// by reason and logged at most once a minute per device and reason. Each
// record is then decoded (record.ParseTap: same device, sequence number and
// epoch as its batch) and its payment code re-verified at the tap's own
// time against the server's current keyring (paycode, with Config.Policy).
// A record that does not decode gets the verdict [VerdictMalformedRecord];
// a code that does not verify gets the paycode reason. Every record of the
// batch, valid or not, goes to Store.Commit, which settles the valid ones
// and quarantines the others; only when Commit returns nil is the
// fleet-signed wire.Ack published (QoS 1, not retained, on
// PREFIX/dev/ID/ack), covering every sequence number of the batch and
// echoing its epoch, so that one bad record never blocks a device's queue.
// A failed commit is not acked: the device sends the batch again, and the
// ledger's idempotence by tap id makes the second delivery harmless.
//
// Status messages are checked the same way (device key, signature, same
// device) and handed to Store.Status; when the Store is a
// [StatusRecorder], the statuses a worker took at once are recorded in one
// call, after its batches are committed and acked (a validator reports its
// status each time an ack empties its queue: about as many statuses as
// batches while riders tap). A status older than one of its device's
// already recorded by another worker is passed over.
//
// [Ingest.Replay] publishes a fleet-signed wire.Replay on PREFIX/dev/ID/cmd.
//
// # Downlinks
//
// A [Publisher] keeps the fleet documents (keyring, deny list, fare table)
// published as fleet-signed, versioned wire.Downlink messages, retained, on
// PREFIX/fleet/KIND. [Publisher.Changed] (non-blocking) makes Run read the
// document from the Source at most once per CoalesceInterval and publish
// it if its version is newer than the last one published; Run also reads
// every document every PollInterval, so changes made by other settlement
// instances or by the ledger itself (an account going negative is
// deny-listed) go out without an explicit Changed, and publishes every
// document after each (re)connection, in case the broker lost its retained
// messages. [Publisher.Publish] publishes a given version at once. No
// downlink is larger than wire.MaxDownlinkSize (256 KiB).
//
// With PublisherConfig.DenyShards the deny list also goes out in
// record.DenyShardCount shards (record.DocDenyShard), each retained on
// PREFIX/fleet/denylist/N with the deny-list version it was cut from: a
// read of the list (after Changed(record.DocDenyList), every poll)
// publishes only the shards whose content changed, so a million entries
// travel in 256 messages of a few dozen kilobytes and a change resends
// one. A shard too large for a downlink is not published, and logged.
// After the shards (when any went out, and after every connection) it
// publishes the shard index (record.DocDenyIndex: the version of each
// shard as last published, 0 for none), fleet-signed, retained, on
// PREFIX/fleet/denyindex, at the list's version (never below the last
// index): published after the shards it names, it never says a shard is
// newer than the retained one. Validators that subscribe to it fetch only
// the shards they lack instead of all 256 on every connection.
//
// # Connection
//
// Both use paho.mqtt.golang with a clean session, an in-memory store (the
// ledger is the durable store; paho's file store does not fsync) and
// unordered delivery, but not paho's automatic reconnection (in paho v1.5.1
// it races with publishing): Run makes a fresh client for every connection
// attempt, subscribes on it (waiting for the SUBACK; a subscription the
// broker refuses, check its ACL, fails the attempt) and, when an attempt
// fails or the connection is lost, tries again after a jittered wait that
// doubles up to MaxReconnectInterval (it starts again from a second once a
// connection has stayed up that long). Dialling and the MQTT handshake end
// as soon as Run's context does. A run of failed connection attempts is
// logged once, and the recovery once ("ingest connected after 14 failed
// attempts"). Each needs a client id unique per server instance (by
// default a random one).
//
// # Caveats
//
//   - An ack is published after the commit; if it is lost (connection
//     drop, device offline: its session is clean) the device sends the
//     batch again after its ack timeout, and the store must answer the
//     second Commit as the first. The Store must therefore be idempotent
//     by tap id, and Commit must store invalid and malformed records too
//     (quarantine), or they are sent forever.
//   - paho completes a publish token without error when the connection
//     drops; a "published" ack or downlink is a hint, not a proof. Devices
//     resend, and the Publisher republishes on every connection.
//   - Messages taken from the broker but still queued when Run ends are
//     not processed; their devices send them again.
//   - With a shared subscription the broker does not send retained
//     messages on subscribing, so a device's last retained status is seen
//     only when the device publishes again (at least every heartbeat).
//   - After a restart a Publisher knows no shard's version and publishes
//     every shard at the list's current version (and an index saying so):
//     validators then fetch all 256 once, as before the index.
//   - Several Publishers (one per instance) may race: after a reconnection
//     one may republish a version another has just superseded. Devices
//     refuse older versions, and the stale instance publishes the newer
//     one at its next poll, so the retained document is behind for at most
//     PollInterval.
//   - DeviceKey is called for every message; a Store backed by a database
//     may want to cache keys briefly.
package ingest

// Package uplink is the validator's side of the MQTT link: it drains the
// durable tap queue to the settlement server and applies the fleet
// downlinks the server publishes.
//
// # Taps
//
// Run reads records from the queue (sync/wire tap records) and publishes
// them in batches signed with the device key, at QoS 1, on
// PREFIX/dev/ID/taps. A batch is at most BatchRecords records and
// BatchBytes of record data (up to 320 KiB), so that it fits in one wire
// message (wire.MaxMessageSize, 384 KiB: brokers refuse larger packets);
// one that would not fit anyway (records that do not compress) is halved
// until it does, and the rest goes in the next batch (Stats.BatchesSplit).
// A record leaves the queue only when the server's
// application-level ack (wire.Ack, signed with the fleet key, on
// PREFIX/dev/ID/ack) names it and the queue's epoch: a PUBACK, or a paho
// token that completed, proves only that the broker had the message, and
// paho completes tokens without error when a connection drops. Up to
// MaxInFlight batches are out at once; if the oldest is not acked within
// AckTimeout (doubling while no ack takes it out), or the connection is new,
// sending starts again from the oldest unacked record. The server is
// idempotent by tap id, so a record sent twice is settled once. Acked
// records are deleted by a goroutine beside the session, so the next
// batches go out during the fsync, and acks that arrive together share one.
//
// After an ack empties the queue the uplink calls StateApplier.SyncSucceeded,
// at most once per SyncInterval.
//
// # Downlinks and commands
//
// The uplink subscribes to PREFIX/fleet/keyring, /denylist, /fares and
// the deny-list shards /denylist/+ (retained) and to PREFIX/dev/ID/cmd. A
// downlink is applied (StateApplier.Apply) only if it is signed with the
// fleet key, well formed, of the topic's kind (a shard: of the topic's
// shard) and newer than the applied version (a shard's version is
// Versions()[record.DenyShardKey(n)]); anything else is refused, logged
// and counted, never a crash. The status reports document versions
// without the shards' (their newest is the "denylist" version). A
// fleet-signed wire.Replay for this device and epoch moves archived
// records back into the queue (queue.Replay) and they are sent again; a
// request whose id is not above the last one carried out (a copy sent
// again) is refused; one without an id (the copy for validators from
// before ids) is ignored.
//
// # Deny-list shard index
//
// With Config.DenyIndexWait the uplink subscribes to the shard index,
// PREFIX/fleet/denyindex (record.DenyIndex: each shard's version as
// published, retained, published after the shards it names), instead of
// /denylist/+, whose 256 retained shards the broker would send again on
// every connection, and instead of the whole list (/denylist, published
// for older validators while it fits one downlink: the shards carry the
// same entries). An index is taken only if it is fleet-signed, well
// formed, of kind record.DocDenyIndex and not older than the newest index
// taken since the uplink started (Stats.DenyIndexes); anything else is
// refused and counted as a downlink. On an index the uplink subscribes to
// the topics of the shards the index has newer than the device, 16 at a
// time (with its own 6 or 7 subscriptions, within the embedded broker's
// 32; a refused subscription is tried again a few times, since the
// embedded broker refuses a SUBSCRIBE or UNSUBSCRIBE whose packet id is
// that of a delivery still unacknowledged, and a broker that still
// refuses some gets groups of what it granted), each
// shard applied as above when its retained message comes, and unsubscribes
// from a group once each of its shards came (or after a minute without
// one; those are tried again on the next index). The index never changes
// the deny list itself: a stale or replayed one can only leave a shard to
// be fetched later, never make the device drop or downgrade one. A device
// up to date receives the index and no shard (Stats.DenyShardMessages and
// DenyShardBytes count what comes on shard topics). If no index comes
// within DenyIndexWait of a connection (a server without one), the uplink
// subscribes to /denylist/+ and /denylist for the rest of that connection
// (Stats.DenyIndexFallbacks).
//
// # Status
//
// The device's status (wire.Status, signed with the device key, never
// compressed so that mosquitto_sub shows its JSON) is retained on
// PREFIX/dev/ID/status: online, queue depth (records adopted from an
// earlier queue file included), age of the oldest unacked tap, last
// sequence number, queue epoch, applied downlink versions, device clock,
// its offset from the server's (clock_offset_ms) and software, and what
// Config.Status adds (out of service, the last salvage). It is published
// on connecting, when something it shows changes (a downlink applied, the
// queue drained, a replay, the clock offset, StatusChanged; routine ones
// at most once every StatusMinInterval, the changes within it in one
// status) and every Heartbeat.
//
// # Clock
//
// Acks carry the server's time (wire.Ack version 2). From the ack of a
// batch sent once, the uplink takes a ClockSample: the device clock at the
// middle of the round trip (measured on the monotonic clock) minus the
// ack's time, within half the round trip. Clock returns the last one;
// Config.OnClock gets each.
//
// # Adopted records
//
// Records a queue file adopted from a damaged earlier one (queue.Adopt)
// are sent after the file's own, in batches of their own epoch, and
// deleted (queue.AckAdopted) on an ack of that epoch. The MQTT last will is the same status with
// online false, made when connecting; on a clean shutdown Run publishes it
// itself before disconnecting.
//
// # Connection
//
// Each connection uses a fresh paho client with a clean session, an
// in-memory store (the bbolt queue is the durable store), unordered
// delivery and no automatic reconnect: the client subscribes as soon as
// its connection is up, before anything is sent, and a lost connection is
// a new client that subscribes again (what paho's advice to subscribe in
// the OnConnect handler is for: a reconnect that resumes without its
// subscriptions). Message
// handlers hand messages to goroutines through buffered channels: acks
// and commands never wait (what does not fit is dropped and logged); a
// fleet downlink waits up to 30 s for room (paho runs each handler in a
// goroutine of its own), since a connection brings every retained
// downlink at once and a dropped one would come again only at the next
// connection. Run reconnects with
// jittered, capped backoff that starts again after a success, logs a run
// of failures once and the recovery once ("uplink connected after 14
// failed attempts"). Brokers are tcp:// or mqtt:// (plain), ssl://, tls://
// or mqtts:// (TLS, optionally with a client certificate); a username and
// password may be given with either.
//
// # Caveats
//
//   - The session is clean: an ack or a replay request published while the
//     device is offline is lost. Lost acks only cost a resend; the server
//     should send a replay request while the device's status says online.
//   - A record larger than record.MaxSize cannot be sent. It is logged,
//     counted (Stats.Unsendable) and left in the queue, which then never
//     drains; the agent never writes such records.
//   - SyncSucceeded is called after the queue was seen empty; a tap
//     appended between that check and the call is not acked yet, so the
//     StateApplier must check again in the transaction that resets its
//     counters (the agent does, through queue.State.Unacked).
//   - TLS files are read once, by New: restart the uplink after replacing
//     a certificate.
//   - New records are noticed at the next PollInterval unless the agent
//     calls Notify after appending.
package uplink

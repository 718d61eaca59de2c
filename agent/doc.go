// Package agent is the validator's decision logic: the program that runs on
// the bus and decides, offline and in milliseconds, whether a payment code
// pays the fare.
//
// The tap path, in order (the first refusal wins):
//
//	scanner frame
//	→ the device's state: held, clock unset, clock off   (queue_damaged, clock, clock_offset: out of service)
//	→ the assigned route served by the fare table        (route_not_in_fares: out of service)
//	→ paycode verification against the device keyring   (malformed … code_expired)
//	→ deny list: account, or account + credential serial (denied)
//	→ this exact code already accepted here              (duplicate: green "Already paid", no charge)
//	→ same account accepted within the passback window   (passback)
//	→ offline risk cap since the last successful sync    (risk_cap)
//	→ fare from the fare table by route and profile      (no_fare)
//	→ durable queue append, fsync'd                      (queue_full: out of service)
//	→ feedback: accepted, with the fare
//
// The duplicate, passback and risk-cap checks run inside the queue's write
// transaction, together with the record itself, so they are atomic across
// several scanners and survive power cuts: a green light means the record,
// and the state that refuses the same code again, are both on disk.
//
// Device state — issuer keyring, deny list, fare table (each with its
// version), the codes seen recently, per-account counters and the head of
// the record hash chain — lives in the same bbolt file as the queue, in
// buckets prefixed "agent.". Updates arrive through [Agent.Apply], which
// refuses a version older than or equal to the one applied. The deny list
// is held as record.DenyShardCount shards, each with its own version (a
// shard downlink replaces one; a whole list replaces the older ones), in
// sorted arrays looked up by binary search: a million entries take about
// 16 MB and no map entry each. Entries expire by the validator's clock.
//
// The validator is out of service (a reason in OutOfService, the status
// and the metrics) while its clock is unset, further from the server's
// than MaxClockOffset (measured by ClockMeasured from the acks, tracked
// through jumps against the monotonic clock), not provisioned, or held
// (Hold: a damaged queue file nothing could be read from). Salvage adopts
// the unsent taps and the state of a damaged queue file into a new one.
//
// A code accepted here before is not a refusal: the rider has paid with
// it, so the light is green with "Already paid" and nothing is charged
// again. It is counted as farego_taps_total{outcome="already_paid",
// reason="duplicate"} and logged as "tap already paid" with the sequence
// number of the tap that paid (Outcome.AlreadyPaid). Every other reason is
// a refusal ("tap refused", red) or out of service.
//
// The route and vehicle (the assignment: [Agent.AssignLocal] from the
// onboard computer, [Agent.AssignFromServer] from the operator, versioned)
// are kept in the device state too, read once per tap (a change applies
// between taps) and recorded in every tap. [Agent.Stalled] reports a tap
// stuck on the tap path; Run calls Config.Heartbeat only while there is
// none (the systemd watchdog).
//
// # Caveats
//
// A tap record carries the whole code; logs never do (an account id and a
// short hash are enough to correlate).
//
// The risk cap counts accepted taps per account since the last call to
// [Agent.SyncSucceeded], which the uplink makes when the server has
// acknowledged everything queued.
package agent

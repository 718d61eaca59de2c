// Package fleet simulates validators and riders against a running
// settlement server, all in one process: each validator has its own
// identity (registered through the server's API, which returns its broker
// password), bbolt queue, agent and MQTT uplink; riders are registered,
// topped up and issued credentials through the API and make their payment
// codes in-process. farego-sim and the catch-up benchmark are built on it.
//
// It never counts settled taps from acks: an ack can arrive before the
// simulator has noted the tap it acknowledges. Settled taps come from the
// ledger (Counter: the server's kept figure, through /metrics or, in
// process, the ledger itself), and Reconcile compares every accepted tap
// with the rides the ledger holds for the fleet's riders: lost, doubled
// and unexpected taps, and every balance against its top-up and charges.
//
// # Caveats
//
// A validator's link is up while its Run is running; the caller makes
// outages by ending Run and starting it again. Reconcile reads each
// rider's rides through the API (at most 10,000 a rider: the API's page
// limit), so it costs two requests per rider.
package fleet

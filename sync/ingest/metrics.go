package ingest

import (
	"sync"

	"github.com/farego/farego/agent/paycode"
)

// Reasons a message is refused, dropped or left unacked: stable strings for
// metrics labels and logs.
const (
	// RejectQueueFull: the worker queue was full; the message was dropped
	// (the device sends it again).
	RejectQueueFull = "queue_full"
	// RejectDeviceQueueFull: the device's own queue was full (it sends
	// faster than its batches are committed); its message was dropped,
	// and it sends it again. Other devices are not held up.
	RejectDeviceQueueFull = "device_queue_full"
	// RejectBadTopic: not a device's taps or status topic.
	RejectBadTopic = "bad_topic"
	// RejectMalformed: not a farego envelope of the right type, or a batch
	// or status that does not decode.
	RejectMalformed = "malformed"
	// RejectUnknownDevice: the device is not registered.
	RejectUnknownDevice = "unknown_device"
	// RejectRevokedDevice: the device was revoked; a signed batch is kept
	// aside by the store and not acked.
	RejectRevokedDevice = "revoked_device"
	// RejectBadSignature: the envelope is not signed with the device's key.
	RejectBadSignature = "bad_signature"
	// RejectDeviceMismatch: the payload names another device than the
	// topic.
	RejectDeviceMismatch = "device_mismatch"
	// RejectStoreError: the device key could not be read (the store
	// failed); the device sends the batch again.
	RejectStoreError = "store_error"
	// RejectCommitFailed: Store.Commit failed; no ack, the device sends
	// the batch again.
	RejectCommitFailed = "commit_failed"
	// RejectAckFailed: the batch was committed but its ack could not be
	// published; the device sends the batch again and the store's
	// idempotence settles it once.
	RejectAckFailed = "ack_failed"
	// RejectStatusFailed: Store.Status failed.
	RejectStatusFailed = "status_failed"
	// RejectAsideBudget: the store kept more of the device's records aside
	// in the last hour than Config.AsideBudget: its batch is not committed
	// nor acked (it sends it again once the budget has refilled).
	RejectAsideBudget = "aside_budget"
	// RejectVerifyBudget: the Ingest checked more of the device's records
	// in the last hour than Config.VerifyBudget: its batch is not checked,
	// committed nor acked (it sends it again once the budget has refilled).
	RejectVerifyBudget = "verify_budget"
)

// RejectReasons lists every reject reason.
var RejectReasons = []string{
	RejectQueueFull, RejectDeviceQueueFull, RejectBadTopic, RejectMalformed, RejectUnknownDevice, RejectRevokedDevice, RejectBadSignature,
	RejectDeviceMismatch, RejectStoreError, RejectCommitFailed, RejectAckFailed, RejectStatusFailed, RejectAsideBudget,
	RejectVerifyBudget,
}

// Metrics are hooks for counters (for example Prometheus counters). Each is
// called from the worker goroutines, so it must be safe for concurrent use
// and quick; nil hooks are not called.
type Metrics struct {
	// Batch is called for every batch committed, with its record count.
	Batch func(records int)
	// Tap is called for every record committed, with its verdict: "" for
	// a code valid at its tap time, a paycode.Reason, or
	// VerdictMalformedRecord.
	Tap func(verdict paycode.Reason)
	// Ack is called for every ack published.
	Ack func()
	// Status is called for every device status recorded.
	Status func()
	// Reject is called for every message refused, dropped or left unacked,
	// with one of the Reject* reasons.
	Reject func(reason string)
}

// Stats are an Ingest's counters since New.
type Stats struct {
	Connected     bool              // connected and subscribed now
	Batches       uint64            // batches committed
	Taps          uint64            // records committed
	Verdicts      map[string]uint64 // records committed by verdict ("" valid)
	Acks          uint64            // acks published
	Statuses      uint64            // statuses recorded
	Rejects       map[string]uint64 // by Reject* reason
	Replays       uint64            // replay requests published
	Queued        int               // messages waiting for a worker now
	QueuedBytes   int               // their bytes
	QueuedDevices int               // the devices they are of
	QueueLength   int               // capacity of the worker queues, in messages
}

// counters keeps Stats and calls the Metrics hooks.
type counters struct {
	m  Metrics
	mu sync.Mutex
	s  Stats
}

func newCounters(m Metrics) *counters {
	return &counters{m: m, s: Stats{Verdicts: map[string]uint64{}, Rejects: map[string]uint64{}}}
}

func (c *counters) reject(reason string) {
	c.mu.Lock()
	c.s.Rejects[reason]++
	c.mu.Unlock()
	if c.m.Reject != nil {
		c.m.Reject(reason)
	}
}

func (c *counters) batch(taps []Tap) {
	c.mu.Lock()
	c.s.Batches++
	c.s.Taps += uint64(len(taps))
	for i := range taps {
		c.s.Verdicts[string(taps[i].Verdict)]++
	}
	c.mu.Unlock()
	if c.m.Batch != nil {
		c.m.Batch(len(taps))
	}
	if c.m.Tap != nil {
		for i := range taps {
			c.m.Tap(taps[i].Verdict)
		}
	}
}

func (c *counters) ack() {
	c.mu.Lock()
	c.s.Acks++
	c.mu.Unlock()
	if c.m.Ack != nil {
		c.m.Ack()
	}
}

func (c *counters) status() {
	c.mu.Lock()
	c.s.Statuses++
	c.mu.Unlock()
	if c.m.Status != nil {
		c.m.Status()
	}
}

func (c *counters) replay() {
	c.mu.Lock()
	c.s.Replays++
	c.mu.Unlock()
}

// snapshot returns a copy of the counters.
func (c *counters) snapshot() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.s
	s.Verdicts = make(map[string]uint64, len(c.s.Verdicts))
	for k, v := range c.s.Verdicts {
		s.Verdicts[k] = v
	}
	s.Rejects = make(map[string]uint64, len(c.s.Rejects))
	for k, v := range c.s.Rejects {
		s.Rejects[k] = v
	}
	return s
}

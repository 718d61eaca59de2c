package ingest

import (
	"sync"
	"time"
)

// DefaultAsideBudget is how many records of one device per hour the store
// may keep aside (quarantined, held, or stored flagged and uncharged)
// before the Ingest stops taking that device's batches; it is also the
// burst. An honest validator keeps a few aside in a day; a stolen one
// signing junk, or replaying codes it read, at its broker budget (some 800
// records a second) filled the ledger with gigabytes a day.
const DefaultAsideBudget = 5000

// DefaultVerifyBudget is how many records of one device per hour (and at
// once) the Ingest checks. A batch of a thousand records compresses to a
// few kilobytes, well inside the broker's budget of a device, and each
// record costs an Ed25519 verification (some 45 µs): a stolen validator
// sending the same batch again and again — charged nothing aside, since
// nothing new is kept aside — kept most of a server core busy for good
// (an attack review: 20 batches a second, 20,000 verifications). A bus
// takes a few thousand taps a day; a week's backlog, or an archive
// replayed after a restore, is well inside it.
const DefaultVerifyBudget = 500_000

// maxAsideDevices bounds the devices whose budget is tracked before full
// buckets are forgotten (a full bucket is the same as none).
const maxAsideDevices = 4096

// asideBudget is a token bucket per device of the records the store kept
// aside: a device whose bucket is empty has its batches left unacked (it
// sends them again later, when the bucket has refilled: nothing is lost).
// A batch is charged after its commit: each of the Workers may take one
// batch of a device before any of them is charged, so a device overdraws
// by at most Workers batches (of up to wire.MaxBatchRecords records), and
// pays that back before it is taken again.
type asideBudget struct {
	perHour float64 // also the capacity; 0: no budget
	now     func() time.Time

	mu   sync.Mutex
	devs map[string]*asideBucket
}

type asideBucket struct {
	tokens float64
	at     time.Time
}

func newAsideBudget(perHour int, now func() time.Time) *asideBudget {
	return &asideBudget{perHour: float64(max(perHour, 0)), now: now, devs: map[string]*asideBucket{}}
}

// refill brings b to now; the caller holds mu.
func (a *asideBudget) refill(b *asideBucket, now time.Time) {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(a.perHour, b.tokens+d.Hours()*a.perHour)
	}
	b.at = now
}

// over reports whether device has used its budget up.
func (a *asideBudget) over(device string) bool {
	if a.perHour == 0 {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.devs[device]
	if b == nil {
		return false
	}
	a.refill(b, a.now())
	return b.tokens <= 0
}

// charge takes n records kept aside from device's budget.
func (a *asideBudget) charge(device string, n int) {
	if a.perHour == 0 || n <= 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	b := a.devs[device]
	if b == nil {
		if len(a.devs) >= maxAsideDevices {
			for id, o := range a.devs {
				if a.refill(o, now); o.tokens >= a.perHour {
					delete(a.devs, id)
				}
			}
		}
		b = &asideBucket{tokens: a.perHour, at: now}
		a.devs[device] = b
	}
	a.refill(b, now)
	b.tokens -= float64(n)
}

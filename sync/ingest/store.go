package ingest

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/sync/wire"
)

// VerdictMalformedRecord is the verdict of a record that does not decode as
// a record.Tap, or whose device, sequence number or queue epoch differ from
// its batch's. It is not a paycode reason: the code was never looked at.
const VerdictMalformedRecord paycode.Reason = "malformed_record"

// Store is what the Ingest needs from the settlement side (the ledger). It
// is defined here, where it is used: sync/ingest does not import the
// server. Its methods are called from several worker goroutines at once.
type Store interface {
	// DeviceKey returns a registered device's Ed25519 public key, or an
	// error wrapping ErrUnknownDevice if the device is not registered, or
	// the key AND an error wrapping ErrRevokedDevice if it was revoked.
	// Any other error counts as a store failure: the message is not
	// acked and the device sends it again.
	DeviceKey(ctx context.Context, deviceID string) (ed25519.PublicKey, error)

	// Commit durably and idempotently (by tap id, "device/epoch/seq") settles
	// every tap of the batch: valid ones are charged; those with a
	// Verdict are stored for audit (quarantined) and not charged. When
	// it returns nil, every tap of the batch is committed and the device
	// will delete them all on the ack; when it returns an error nothing
	// is acked and the device sends the batch again, so a partial commit
	// must be idempotent too.
	Commit(ctx context.Context, b *Batch) error

	// Status records a device's status (best effort: an error is logged
	// and counted, nothing else).
	Status(ctx context.Context, st *wire.Status) error
}

// BatchCommitter is a Store that can commit several devices' batches in
// one call (the ledger then settles one big set of taps in one
// transaction instead of many small ones). The Ingest uses it when the
// Store has it. Its contract is Commit's for every batch at once: nil
// means every tap of every batch is committed; an error means the Ingest
// commits each batch alone (with Commit) before acking any.
type BatchCommitter interface {
	CommitBatches(ctx context.Context, bs []*Batch) error
}

// StatusRecorder is a Store that records several devices' statuses in one
// call (one transaction of a database, instead of one per status: a
// validator reports its status each time an ack empties its queue, about
// once a tap while riders tap). A worker hands it the statuses among the
// messages it took at once, at most one per device; if the call fails,
// each is recorded alone with Store.Status.
// If it recorded every status but some it refuses for what they hold, it
// returns a *StatusesRefused naming those: they are not recorded alone.
type StatusRecorder interface {
	Statuses(ctx context.Context, ss []*wire.Status) error
}

// StatusesRefused is a StatusRecorder's answer when it recorded the
// statuses of a call but those it names, by their index in the call, with
// why (one device's bad status must not cost every other's their
// transaction together).
type StatusesRefused struct {
	Refused map[int]error
}

func (e *StatusesRefused) Error() string {
	return fmt.Sprintf("%d statuses refused, the others recorded", len(e.Refused))
}

// Batch is a device's batch after the Ingest checked its signature and
// re-verified every record's payment code.
type Batch struct {
	DeviceID string    // the device, from the topic; the batch says the same
	Epoch    string    // the device queue's epoch
	SentAt   time.Time // the device clock when the batch was sent
	Taps     []Tap     // one per record, in ascending sequence order
	// Revoked: the device was revoked. The store must keep the records
	// aside and charge nothing; the ingest does not ack them.
	Revoked bool
	// Aside is set by the store when it commits the batch: how many of its
	// records it kept aside (quarantined, held, or stored flagged and
	// uncharged). The Ingest charges them to the device's budget
	// (Config.AsideBudget). Flagged taps count when first stored; records
	// quarantined or held count again when their batch comes again (its
	// ack lost), which only makes the budget stricter.
	Aside int
}

// Tap is one record of a batch with the outcome of its checks.
type Tap struct {
	Seq    uint64
	ID     string // record.TapID(DeviceID, Epoch, Seq)
	Record []byte // the record as the device committed it (for audit)

	// Tap is the decoded record; nil when Verdict is
	// VerdictMalformedRecord (and only then).
	Tap *record.Tap
	// Code is the parsed payment code (Code.ID().Key() identifies it for
	// the one-use rule); nil for a malformed record.
	Code *paycode.Code
	// CodeText is the code's text form ("FG1:…"). Never log it; log
	// CodeHash.
	CodeText string
	// CodeHash is paycode.ShortHash(CodeText), for logs and audit.
	CodeHash string

	// Verdict is "" when the code verified at its tap time against the
	// server's keyring, otherwise the paycode.Reason of the first failed
	// check, or VerdictMalformedRecord.
	Verdict paycode.Reason
}

// Valid reports whether the record decoded and its code verified at its
// tap time.
func (t *Tap) Valid() bool { return t.Verdict == "" }

// Attributable reports whether the tap may be stored under the account its
// code names: the code verified, or failed only on time — the issuer
// signed the credential and the rider's key the code (a rider's own code
// shown late, early, or under an expired pass). A code whose credential
// or rider signature does not verify names its account on the device's
// word alone: a stolen validator wrote made-up rides into any account's
// history that way.
func (t *Tap) Attributable() bool {
	switch t.Verdict {
	case "", paycode.ReasonCodeFromFuture, paycode.ReasonCodeExpired:
		return t.Code != nil
	case paycode.ReasonCredentialNotYetValid, paycode.ReasonCredentialExpired:
		return t.Code != nil && t.Code.RiderSigned()
	}
	return false
}

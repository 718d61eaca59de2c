package ledger

import (
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/sync/wire"
)

// Posting kinds.
const (
	KindTopUp          = "topup"           // money in (TopUp)
	KindFare           = "fare"            // a tap's first charge
	KindFareCorrection = "fare_correction" // a later change of a tap's charge after re-rating
	KindPayment        = "payment"         // an online payment (Pay)
)

// Tap flags: a flagged tap is stored for audit and charged 0.
const (
	// FlagDuplicateCode: the tap's payment code paid before (an earlier
	// tap, on any device, or an online payment). The earliest tap by tap
	// time keeps the code whatever the arrival order: a tap that arrives
	// later but was made earlier takes the code over, and the tap that held
	// it is flagged and refunded.
	FlagDuplicateCode = "duplicate_code"
	// FlagUnknownAccount: the tap names an account the ledger does not have
	// (for example a database restored from an old backup).
	FlagUnknownAccount = "unknown_account"
	// FlagUnknownCredential: the code's credential (account, serial and
	// rider key) is not one the ledger issued (for example an account id
	// reused after a restore): it is never charged to whoever holds the id.
	FlagUnknownCredential = "unknown_credential"
	// FlagCurrencyMismatch: the fare table's currency is not the account's.
	FlagCurrencyMismatch = "currency_mismatch"
	// FlagInvalidCode: the ingest layer re-verified the tap's payment code
	// at the tap's time and it failed (a tampered or misconfigured
	// validator). The caller sets it on Tap.Flag; the code is not claimed.
	FlagInvalidCode = "invalid_code"
	// FlagVoided: an operator voided the tap (Store.VoidTap): its charge
	// was given back as fare_correction postings and its day re-rated as if
	// it had never been charged. Flagged taps are left out of every later
	// rating, so it stays void.
	FlagVoided = "voided"
)

// Tap notes: findings on a tap that is charged normally, kept for the
// operator (Ride.Notes, TapResult.Notes).
const (
	// NoteFareMismatch: the validator's claim (base fare, currency or fare
	// version) differs from what the server charged. The server's fare
	// stands; the claim is kept.
	NoteFareMismatch = "fare_mismatch"
	// NoteUnknownFareVersion: the validator named a fare table version the
	// server does not have (or one out of force for longer than the grace
	// period): the tap is rated with the table in force at its time.
	NoteUnknownFareVersion = "unknown_fare_version"
	// NoteProfileMismatch: the record's rider profile is not the
	// credential's; the credential's is charged.
	NoteProfileMismatch = "profile_mismatch"
	// NoteCodeReuseWindow is set on a duplicate_code tap made on another
	// device within the reuse window of the code's first tap: what an
	// innocent rider showing one code on two buses of a quick transfer
	// does. It is charged nothing and does not deny the credential.
	NoteCodeReuseWindow = "code_reuse_window"
	// NoteSameDeviceReuse is set on a duplicate_code tap recorded by a
	// device that had recorded a use of the code before (the tap that
	// keeps it, or a use counted as a reuse): a validator refuses a code
	// it took once (code_used), so two records of one code from it are
	// the device's word (a stolen or tampered validator, or its queue file
	// put back from a backup), not evidence against the rider. It is
	// charged nothing and not counted as a reuse: each device counts once
	// a code.
	NoteSameDeviceReuse = "same_device_reuse"
)

// Deny reasons the ledger sets itself. Operators use their own (see Deny).
const (
	// ReasonCodeReused denies a credential (account + serial) whose payment
	// code was used twice.
	ReasonCodeReused = "code_reused"
	// ReasonCodeReusedAccount denies a whole account one of whose
	// credentials was denied for code_reused while it held others still
	// valid (until an hour after the last of them expires).
	ReasonCodeReusedAccount = "code_reused_account"
	// ReasonNegativeBalance denies a whole account while its balance is
	// below zero. The ledger adds and removes it; operators cannot.
	ReasonNegativeBalance = "negative_balance"
	// ReasonSecretReplaced denies each credential an account held when its
	// secret was replaced (a phone lost, a secret seen: the passes on the
	// old phone stop with the secret), until an hour after it expires.
	ReasonSecretReplaced = "secret_replaced"
)

// StatusPaid is the status of a completed online payment.
const StatusPaid = "paid"

// AccountSpec describes a new account.
type AccountSpec struct {
	// Profile is the rider profile asked for; a reduced one (child,
	// senior, student) is pending unless ProfileConfirmed: whoever
	// creates the account checked the rider's eligibility.
	Profile          paycode.Profile
	ProfileConfirmed bool
	Name             string // display name, up to 128 bytes of UTF-8; may be empty
	// SecretHash is the hash of the rider's login secret, as the HTTP layer
	// makes it (up to 256 bytes; may be empty: no login). The ledger only
	// stores it.
	SecretHash []byte
	// Currency (ISO 4217); "" means the Store's (Options.Currency).
	Currency string
	// Anonymous: made by anyone (the wallet's sign-up, not the operator's
	// or the payment provider's): forgotten if nothing is done with it
	// (Options.ForgetUnusedAccounts).
	Anonymous bool
}

// Account is a rider's account.
type Account struct {
	ID      uint64 // 1000 and up, never reused
	Profile paycode.Profile
	// ProfilePending: Profile is a reduced fare the rider asked for and
	// nobody has confirmed yet; credentials carry the adult profile
	// meanwhile (CredentialProfile).
	ProfilePending bool
	Name           string
	Balance        int64 // minor units; negative after offline rides beyond the balance
	Currency       string
	// Denied is set while the whole account is on the deny list;
	// DenyReason is one of its reasons (negative_balance first).
	Denied     bool
	DenyReason string
	// LastSerial is the serial of the newest credential issued (0: none).
	LastSerial uint32
	// CreditLine is how far below zero the balance may go before the
	// account is denied (0 for prepaid riders).
	CreditLine int64
	// PaymentLimit is the most one online payment by code may take (0:
	// no limit; SetPaymentLimit).
	PaymentLimit int64
	CreatedAt    time.Time
}

// Tap is one accepted tap as a validator recorded it, after the ingest
// layer checked the device's signature and re-verified the payment code.
//
// The ledger believes the code's credential (Account, Serial, Profile,
// RiderKey: checked against the credentials it issued) and the tap time;
// it rates the tap from its own fare tables. BaseFare, Currency and
// FareVersion are the validator's claims, stored for audit: a claim that
// differs from the server's rating is noted (NoteFareMismatch), never
// charged.
type Tap struct {
	ID       string // "DeviceID/Epoch/Seq" (see TapID)
	DeviceID string
	Seq      uint64
	Epoch    string // the device queue's epoch
	Time     time.Time
	Account  uint64
	Serial   uint32
	// RiderKey is the rider public key of the code's credential (32
	// bytes).
	RiderKey []byte
	// CodeKey is paycode.ID.Key() of the code: account, serial, code time
	// and counter. A code pays once, on a tap or online.
	CodeKey  []byte
	CodeHash string // paycode.ShortHash of the code text, for logs and audit
	// Profile is the rider profile of the code's credential.
	Profile paycode.Profile
	// ClaimedProfile is the profile the record names (farego's validator
	// copies the credential's); a different one is noted, not charged.
	ClaimedProfile paycode.Profile
	BaseFare       int64  // the validator's claimed base fare, minor units
	Currency       string // the validator's claimed currency
	// FareVersion is the version of the fare table the validator used.
	FareVersion uint64
	Route       string
	Vehicle     string
	Record      []byte // the raw record bytes, kept for audit
	// Flag is "" or FlagInvalidCode: a tap the caller already knows must
	// not be charged is stored flagged, for audit.
	Flag string
	// Held: the tap was held aside (see Hold) and is released from there
	// by this commit, in the same transaction.
	Held bool
	// Notes are the caller's audit findings (e.g. NoteRouteMismatch),
	// stored with the ledger's own on a tap that is not flagged.
	Notes []string
	// CredentialNotBefore and CredentialNotAfter are the window of the
	// code's credential (which the caller verified, issuer signature and
	// all): after a restore from a backup, a credential issued since the
	// backup is taken into the ledger from its taps (see Restored). Zero:
	// not known.
	CredentialNotBefore, CredentialNotAfter time.Time
}

// TapID returns the ledger's id of a device's tap: "device/epoch/seq", the
// tap record's own id (record.TapID). A validator's queue file has one
// epoch and numbers its records within it, so a new file (a replaced or
// reset validator) can never reuse an id.
func TapID(device, epoch string, seq uint64) string { return record.TapID(device, epoch, seq) }

// TapResult is what CommitTaps did with one tap.
type TapResult struct {
	ID string
	// Duplicate: the tap id was committed before (by this or an earlier
	// call); nothing changed.
	Duplicate bool
	// Conflict: a duplicate whose record bytes, account, time or code
	// differ from the stored tap's. The stored tap stands and nothing
	// changed; the caller must keep the record aside (Quarantine) and never
	// treat it as settled.
	Conflict bool
	// OtherCode: a conflict whose payment code differs from the stored
	// tap's: another ride under a reused tap id (a validator whose queue
	// file was put back from a backup, say), not the same ride in other
	// bytes.
	OtherCode bool
	// Flag is the tap's flag ("" for a normally charged tap).
	Flag string
	// Notes are audit findings on a charged tap (Note* constants).
	Notes []string
	// Charge is the tap's current charge after re-rating its account's
	// service day (at the end of this commit).
	Charge int64
	// Fare is the server's base fare for the tap and RatedVersion the fare
	// table it came from (0 for a flagged tap).
	Fare         int64
	RatedVersion uint64
}

// Ride is a tap as the rider's history shows it.
type Ride struct {
	TapID       string
	DeviceID    string
	Time        time.Time
	ServiceDay  string // YYYY-MM-DD in the fare table's time zone
	Route       string
	Vehicle     string
	Profile     paycode.Profile
	BaseFare    int64 // the server's base fare
	ClaimedFare int64 // what the validator claimed
	Charge      int64 // current charge
	Transfer    bool  // charged the transfer fare
	Capped      bool  // reduced by the daily cap
	Flag        string
	Notes       []string
	FareVersion uint64 // the validator's fare table (its claim)
	// RatedVersion is the server's fare table that rates the tap (0 for a
	// flagged tap).
	RatedVersion uint64
	CodeHash     string
	CommittedAt  time.Time
}

// Posting is one entry of an account's append-only journal.
type Posting struct {
	Account     uint64
	Seq         uint64 // 1, 2, 3, … per account
	Kind        string // KindTopUp, KindFare, KindFareCorrection, KindPayment
	Amount      int64  // effect on the balance: top-up > 0, fare < 0, payment < 0 (> 0: a refund of it)
	TapID       string // fare and fare_correction
	PaymentID   uint64 // payment (and its refunds)
	Reference   string // topup
	FareVersion uint64 // the fare table that rated a fare posting
	CreatedAt   time.Time
	// Read by Postings: the payment's merchant and order, the refund's id
	// (a payment posting of a refund), and the balance after the posting.
	MerchantID string
	OrderID    string
	RefundID   string
	Balance    int64
	// RefundReason is the reason the shop (or the operator) gave for a
	// refund (a payment posting of a refund; may be empty): the rider
	// sees why the money came back.
	RefundReason string
	// CodeHash is the short hash of the payment code a shop's payment
	// took (paycode.ShortHash): the rider's wallet renews a code on
	// screen that a shop has used.
	CodeHash string
}

// IsRefund reports whether the posting gives back (part of) a payment.
func (p *Posting) IsRefund() bool { return p.Kind == KindPayment && p.Amount > 0 }

// DenyEntry is one deny-list entry.
type DenyEntry struct {
	Account uint64
	Serial  uint32 // 0 = the whole account
	Reason  string
	Since   time.Time
	// Expires is when the entry stops mattering (the credential it names
	// expired); zero for entries that never expire.
	Expires time.Time
}

// DenyList is the whole deny list at one version. The version moves in the
// same transaction as any change of the entries, so a publisher can publish
// only when it moved.
type DenyList struct {
	Version uint64
	Entries []DenyEntry // by account, serial, reason
}

// PaymentRequest is an online payment by a merchant's scanner.
type PaymentRequest struct {
	MerchantID string // up to 64 bytes
	OrderID    string // the merchant's order id, up to 128 bytes; idempotency key with MerchantID
	Account    uint64
	Serial     uint32
	RiderKey   []byte // the rider public key of the code's credential
	CodeKey    []byte // paycode.ID.Key()
	CodeHash   string
	Amount     int64 // > 0, minor units
	Currency   string
	// TokenID is the API token that asks (its id, up to 64 bytes), kept
	// with the payment: a shop's tills each have their own.
	TokenID string
}

// PaymentOrder is a completed online payment.
type PaymentOrder struct {
	ID         uint64
	MerchantID string
	OrderID    string
	Account    uint64
	Serial     uint32
	Amount     int64
	Currency   string
	CodeHash   string
	Status     string // StatusPaid
	CreatedAt  time.Time
	TokenID    string // the API token that made it ("" before schema version 26)
}

// Credential is a record of an issued credential.
type Credential struct {
	Account        uint64
	Serial         uint32
	NotAfter       time.Time
	RiderPublicKey []byte
	IssuedAt       time.Time
}

// DeviceStatus is what a validator last reported about itself.
type DeviceStatus struct {
	Online       bool
	QueueDepth   int
	OldestUnsent time.Duration // age of the oldest unacknowledged tap
	LastSeen     time.Time     // the device's own clock when it sent the status
	// Written is when the device wrote the status, by its clock (the
	// status's own time; LastSeen may be moved to when it was received).
	// Zero: not known.
	Written      time.Time
	Software     string
	Epoch        string
	OutOfService string            // why the validator refuses taps; "" when in service
	Versions     map[string]uint64 // applied downlink versions by kind
	Update       DeviceUpdate      // its software update (zero: nothing to report)
	// Route and Vehicle are what the device says it records in its taps
	// ("": not reported; a status without them keeps those recorded).
	Route, Vehicle string
	// ServerVersion is the version of the newest assignment from the
	// server the device applied (0: none), reported with Route: a route
	// set at the device after it stands until a newer assignment.
	ServerVersion uint64
	// CertNotAfter is when the device says its TLS client certificate
	// ends (zero: not reported; a status without it keeps the one
	// recorded, which registering the device again clears). The device's
	// word, for the operator: nothing is decided on it.
	CertNotAfter time.Time
}

// DeviceUpdate is a validator's report of its software update.
type DeviceUpdate struct {
	Pending      string    // version installed, waiting for its health check
	Failed       string    // version of the last update that failed (refused or rolled back)
	FailedReason string    // why, in a sentence (at most MaxUpdateReason bytes)
	FailedAt     time.Time // when, by the device's clock
}

// MaxUpdateReason bounds DeviceUpdate.FailedReason.
const MaxUpdateReason = 256

// UpdateFailed reports whether the device's last failed update is still a
// problem: a version failed and the device runs an older one (or one that
// is not a release version). Once it runs the failed version or a newer
// one, the failure is history.
func (d Device) UpdateFailed() bool {
	u := d.Status.Update
	if u.Failed == "" {
		return false
	}
	c, ok := wire.CompareVersions(d.Status.Software, u.Failed)
	return !ok || c < 0
}

// Device is a registered validator.
type Device struct {
	ID           string
	PublicKey    []byte // Ed25519
	RegisteredAt time.Time
	Status       DeviceStatus
	StatusAt     time.Time // when Status was last updated (zero: never)
	LastSeq      uint64    // highest tap sequence number noted by NoteDeviceSync
	LastSync     time.Time
	Revoked      time.Time // zero: not revoked
	// ClockOffset is the device's clock minus the server's when its last
	// status arrived (transit time included).
	ClockOffset time.Duration
}

// Stats are ledger-wide figures for dashboards.
type Stats struct {
	Accounts         int64
	NegativeAccounts int64
	TotalBalance     int64
	Taps             int64
	FlaggedTaps      int64
	Postings         int64
	Payments         int64
	Refunds          int64
	Devices          int64
	DenyVersion      uint64
	DenyEntries      int64
}

// QuarantinedRecord is a device record that could not be read as a tap at
// all (a validator bug or tampering). It is kept for investigation so the
// device's queue can move on; it charges nothing.
type QuarantinedRecord struct {
	DeviceID string
	Epoch    string
	Seq      uint64
	Reason   string
	Record   []byte
}

// CredentialProfile is the profile the account's credentials carry: its
// profile, or adult while a reduced one is pending.
func (a Account) CredentialProfile() paycode.Profile {
	if a.ProfilePending {
		return paycode.Adult
	}
	return a.Profile
}

package ledger

import "errors"

// ErrNotFound is returned when an account, device, payment order, fare
// table version or deny entry does not exist.
var ErrNotFound = errors.New("ledger: not found")

// ErrInvalid is returned (wrapped, with the details) for an input that breaks
// a rule: a malformed tap, a non-positive amount, an unknown profile, a DSN the
// ledger cannot use. Nothing has been written.
var ErrInvalid = errors.New("ledger: invalid input")

// ErrInsufficientFunds is returned by Pay when the account's balance is less
// than the amount. Nothing has been written.
var ErrInsufficientFunds = errors.New("ledger: insufficient funds")

// ErrOverLimit is returned by Pay when the amount is more than the limit
// the account set for one payment by code (SetPaymentLimit).
var ErrOverLimit = errors.New("ledger: over the account's payment limit")

// ErrCodeUsed is returned by Pay when the payment code was already used, by a
// tap on a validator or by another online payment. Nothing has been written.
var ErrCodeUsed = errors.New("ledger: payment code already used")

// ErrDenied is returned by Pay when the account or the credential is on the
// deny list. Nothing has been written.
var ErrDenied = errors.New("ledger: account or credential denied")

// ErrOrderConflict is returned by Pay when the merchant's order id was already
// used for a payment with other parameters (account, code, amount, currency).
var ErrOrderConflict = errors.New("ledger: order id already used with other parameters")

// ErrTokenRevoked is returned by Pay, RefundPayment, TopUpOnce and
// SetCreditLine when the API token
// that asks (TokenID) was revoked by the time the payment or refund would
// be written: a request that passed the token check before the revocation
// committed, and would otherwise commit after it. Nothing has been
// written.
var ErrTokenRevoked = errors.New("ledger: API token revoked")

// ErrRefundConflict is returned by RefundPayment when the shop's refund id
// was already used for another order or amount.
var ErrRefundConflict = errors.New("ledger: refund id already used with other parameters")

// ErrTopUpConflict is returned by TopUp when the reference was already used
// for a top-up of another account or amount.
var ErrTopUpConflict = errors.New("ledger: top-up reference already used with other parameters")

// ErrDeviceExists is returned by RegisterDevice when the device id is
// registered with another public key and replace was not asked for.
var ErrDeviceExists = errors.New("ledger: device already registered with another key")

// ErrDeviceRevoked is returned by RegisterDevice when the device is
// revoked and Unrevoke was not asked for: Replace (a re-flashed
// validator) does not lift a revocation (a stolen one).
var ErrDeviceRevoked = errors.New("ledger: device revoked")

// ErrNoFareTable is returned when taps need rating and no fare table has
// been stored (see PutFareTable), and by LatestFareTable on an empty ledger.
var ErrNoFareTable = errors.New("ledger: no fare table stored")

// ErrFareVersion is returned by PutFareTable for a version that is not higher
// than the latest stored one (unless it is the very same table again).
var ErrFareVersion = errors.New("ledger: fare table version must increase")

// ErrSchemaTooNew is returned by Open when the database was migrated by a
// newer version of this package. The database is left untouched.
var ErrSchemaTooNew = errors.New("ledger: database schema is newer than this program")

// ErrSchemaTooOld is returned by Open with Options.NoMigrate when the
// database has migrations this program would apply. The database is left
// untouched.
var ErrSchemaTooOld = errors.New("ledger: database schema is older than this program")

// ErrInvariant is returned (joined, one per finding) by CheckInvariants.
var ErrInvariant = errors.New("ledger: invariant violated")

// ErrUnknownCredential is returned by Pay when the code's credential
// (account, serial and rider key) is not one the ledger issued — for
// example a code of an account that a restored ledger handed to someone
// else. Nothing has been written.
var ErrUnknownCredential = errors.New("ledger: credential not issued by this ledger")

// ErrTooManyCredentials is returned by IssueCredentialSerial when the
// account holds MaxLiveCredentials credentials not yet expired. Nothing
// has been written.
var ErrTooManyCredentials = errors.New("ledger: too many credentials not yet expired")

// ErrSecretChanged is returned by ReplaceSecret when the account's secret is
// no longer the one it was to replace (another replacement came first).
var ErrSecretChanged = errors.New("ledger: the account's secret was changed meanwhile")

// ErrNoLedger is returned by Open with Options.MustExist for a SQLite
// ledger file that does not exist or is empty, and for a database that
// holds no ledger.
var ErrNoLedger = errors.New("ledger: no ledger")

// ErrOverRefund is returned by RefundPayment when the payment's refunds
// would come to more than its amount. Nothing has been written.
var ErrOverRefund = errors.New("ledger: refunds would exceed the payment")

// ErrNotVoidable is returned (wrapped, with the reason) by VoidTap for a tap
// that cannot be voided: flagged, not charged, or not yet rated.
var ErrNotVoidable = errors.New("ledger: tap cannot be voided")

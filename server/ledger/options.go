package ledger

import (
	"fmt"
	"log/slog"
	"time"
)

// Defaults for the zero fields of Options.
const (
	// DefaultCurrency is the currency of new accounts.
	DefaultCurrency = "EUR"
	// DefaultBusyTimeout is how long a SQLite writer waits for the write
	// lock held by another process (another Store on the same file).
	DefaultBusyTimeout = 10 * time.Second
	// DefaultMaxOpenConns bounds the connection pool.
	DefaultMaxOpenConns = 16
	// DefaultReuseWindow is the longest time between two uses of one
	// payment code on two devices that still looks like an innocent rider
	// (the code's maximum age plus the clock skew the validators allow).
	DefaultReuseWindow = 150 * time.Second
	// DefaultForgetUnusedAccounts is how long an account made anonymously
	// (AccountSpec.Anonymous) that nothing was done with is kept (see
	// Options.ForgetUnusedAccounts).
	DefaultForgetUnusedAccounts = 30 * 24 * time.Hour
)

// Limits of the API.
const (
	// MaxCommitTaps is the most taps one CommitTaps call takes.
	MaxCommitTaps = 10_000
	// MaxAmount bounds a single amount (top-up, payment, base fare) in minor units.
	MaxAmount = 1_000_000_000_00
	// MaxRecordSize bounds a tap's raw record bytes.
	MaxRecordSize = 64 << 10
	// MaxListLimit bounds the limit of the list reads (Rides, Postings, Accounts).
	MaxListLimit = 10_000
	// DefaultListLimit is the limit of a list read given limit <= 0 where
	// "all" makes no sense (Accounts).
	DefaultListLimit = 100
	// CodeKeySize is the size of a payment code's identity (paycode.ID.Key).
	CodeKeySize = 18
)

// Options configure a Store. The zero value is usable: every zero field
// means the documented default.
type Options struct {
	// Logger receives the ledger's log lines; nil discards them.
	Logger *slog.Logger
	// Now is the clock for creation times; nil means time.Now. Beyond the
	// times recorded, it tells which credentials have expired (see
	// MaxLiveCredentials).
	Now func() time.Time
	// Currency is the ledger's (ISO 4217): every account's and fare
	// table's. A ledger keeps the currency it was first opened with (a
	// ledger from before: its latest fare table's, else its accounts');
	// Open refuses a ledger in another one. "" takes the ledger's, or
	// DefaultCurrency for a new ledger.
	Currency string
	// MustExist refuses a SQLite ledger file that is not there or is
	// empty, and a database (SQLite or PostgreSQL) that holds no ledger
	// (ErrNoLedger), instead of creating an empty ledger: for every
	// program but the one that initialises a deployment, so that a
	// mistyped path or a restore that forgot the ledger (or whose copy
	// failed) is not served or checked as an empty one. No ledger is
	// made (SQLite may switch another program's file to WAL mode before
	// the refusal).
	MustExist bool
	// NoMigrate refuses a ledger this program would migrate
	// (ErrSchemaTooOld) instead of migrating it: for the commands an
	// operator runs beside a server (verify, token list, account show, …).
	// Migrations only go forward, so one of them run with a newer build
	// before the server is upgraded changed the schema under the older
	// server, unsaid, and that server then refused its own ledger at its
	// next start (an operator's upgrade review). Only the server's start
	// (and restored, the broker) migrate. A database without a ledger is
	// made all the same (init: making a ledger is not migrating one).
	NoMigrate bool
	// KeySet is the fingerprint of the key directory the program serves
	// with (keys.Dir.Fingerprint), for the programs that migrate (run,
	// restored, broker): a ledger bound to another key set is refused
	// (ErrOtherKeys) before any migration, not after. The server checked
	// the binding once the ledger was open, so run with a mistyped --data
	// or --keys, or restored given another deployment's backup, migrated
	// the older release's ledger and then refused it ("the ledger is
	// unchanged", restored said), and the server of the release before
	// then refused its own ledger (an operator's upgrade review). ""
	// checks nothing here (BindKeySet still does after the open).
	KeySet string
	// BusyTimeout is how long a SQLite writer waits for another process's
	// write lock; 0 means DefaultBusyTimeout. Ignored for PostgreSQL.
	BusyTimeout time.Duration
	// MaxOpenConns bounds the connection pool; 0 means DefaultMaxOpenConns.
	// SQLite uses at least 2.
	MaxOpenConns int
	// FareGrace is how long a validator may keep using a fare table after
	// a newer one came into force (and how far its clock may run behind);
	// 0 means DefaultFareGrace. See CommitTaps.
	FareGrace time.Duration
	// ReuseWindow: a payment code used twice on two devices within it,
	// once, does not deny its credential (see CommitTaps); 0 means
	// DefaultReuseWindow.
	ReuseWindow time.Duration
	// ForgetUnusedAccounts: an account made anonymously (the wallet's
	// sign-up, AccountSpec.Anonymous) that nothing was ever done with —
	// never topped up or charged, never issued a credential, no credit
	// line, not on the deny list, no reduced fare confirmed — is
	// forgotten this long after it was made, by the anonymous sign-ups
	// after it (each forgets at most two): a client that makes the 600
	// accounts a minute the API lets anyone make does not make the
	// ledger hold them for ever
	// (some 200 bytes each, 180 MB a day). Its id is never used again; a
	// payment limit it had is forgotten with it. 0 means
	// DefaultForgetUnusedAccounts; negative: never.
	ForgetUnusedAccounts time.Duration
}

func (o Options) withDefaults() (Options, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Currency == "" {
		o.Currency = DefaultCurrency
	}
	if !ValidCurrency(o.Currency) {
		return o, fmt.Errorf("%w: currency %q is not an ISO 4217 code like \"EUR\"", ErrInvalid, o.Currency)
	}
	if o.BusyTimeout == 0 {
		o.BusyTimeout = DefaultBusyTimeout
	}
	if o.BusyTimeout < 0 {
		return o, fmt.Errorf("%w: negative busy timeout", ErrInvalid)
	}
	if o.MaxOpenConns == 0 {
		o.MaxOpenConns = DefaultMaxOpenConns
	}
	if o.FareGrace == 0 {
		o.FareGrace = DefaultFareGrace
	}
	if o.ReuseWindow == 0 {
		o.ReuseWindow = DefaultReuseWindow
	}
	if o.ForgetUnusedAccounts == 0 {
		o.ForgetUnusedAccounts = DefaultForgetUnusedAccounts
	}
	if o.FareGrace < 0 || o.ReuseWindow < 0 {
		return o, fmt.Errorf("%w: negative FareGrace or ReuseWindow", ErrInvalid)
	}
	if o.MaxOpenConns < 0 {
		return o, fmt.Errorf("%w: negative MaxOpenConns", ErrInvalid)
	}
	return o, nil
}

// Package ledger is the settlement server's ledger: accounts, the
// append-only money journal, tap settlement, online payments, the deny list,
// credentials issued, devices and fare tables. It holds the money logic of
// farego and nothing else: no MQTT, no HTTP (those layers call this API).
//
// # Storage
//
// One schema, on two databases through database/sql:
//
//   - SQLite (modernc.org/sqlite, pure Go), the default: [Open] with
//     "sqlite:PATH" or a bare path. The ledger runs it in WAL mode with
//     synchronous=FULL (a committed, acknowledged tap survives a power cut),
//     foreign keys on, a busy timeout, a 32 MiB page cache per connection,
//     and BEGIN IMMEDIATE for every write transaction, so writers serialize
//     cleanly, also across processes sharing the file.
//   - PostgreSQL (github.com/jackc/pgx/v5/stdlib): "postgres://…" or
//     "postgresql://…"; a search_path parameter selects a schema.
//
// The SQL text is the same for both ("$n" placeholders, ON CONFLICT,
// RETURNING; BIGINT, TEXT, BYTEA and BOOLEAN columns). The dialect shims
// are three: row locks ("FOR UPDATE" on PostgreSQL; SQLite holds the write
// lock from BEGIN), snapshot reads (REPEATABLE READ on PostgreSQL), and the
// migration that makes the journal tables append-only with triggers, which
// comes in a .sqlite.sql and a .postgres.sql version. Migrations are embedded,
// recorded in schema_migrations and applied in one transaction at Open; on
// PostgreSQL an advisory lock keeps instances opening at once from racing.
// A database migrated by a newer program is refused ([ErrSchemaTooNew]).
// Times are unix nanoseconds and amounts integers in minor units.
//
// # Money
//
// An account's balance is the sum of its postings. Postings are only ever
// appended (the database refuses UPDATE and DELETE on them), with kinds
// topup, fare, fare_correction and payment; the cached balance on the
// account row changes in the same transaction. [Store.CheckInvariants]
// recomputes everything cached and checks every rule listed on it.
//
// Every write is idempotent on a key the caller already has: taps on their
// id ("device/epoch/seq"), top-ups on their reference, payments on (merchant,
// order id), fare tables on their version. A retried call returns the
// first call's result and changes nothing, so at-least-once delivery plus
// this ledger gives exactly-once charges.
//
// [Store.CommitTaps] stores a batch of taps and re-rates each touched
// account's service day with agent/fare's rating (transfers, daily cap),
// appending postings for the differences: from the day's earliest tap new
// in the batch (or refunded), the earlier taps' charges standing, since
// they are the day's rating already (fare.RateFrom). Because the rating is a pure
// function of the day's taps and corrections are new postings, the final
// balances and charges do not depend on the order the taps arrive in. A
// payment code pays once, online or offline: one code_uses table, unique on
// the code's identity (paycode.ID.Key), serves taps and payments; a second
// use is stored, flagged duplicate_code, charged 0, and the credential is
// deny-listed (code_reused). An account whose balance goes below its credit
// line (0 unless the operator sets one) is deny-listed (negative_balance)
// until a top-up brings it back. The deny-list version moves in the
// transaction that changes an entry.
//
// # Concurrency
//
// A Store is safe for concurrent use, and several Stores (several
// settlement instances) may share one database. Every write is one
// transaction that first locks the accounts it touches, in ascending id
// order (SELECT … FOR UPDATE on PostgreSQL; SQLite's single writer), so two
// instances committing the same taps at once charge them once. Transactions
// that lose a race (deadlock, serialization failure, SQLITE_BUSY, a unique
// key taken concurrently) are rolled back and retried, which is safe
// because every write is idempotent or not yet done.
//
// # Caveats
//
// Of two taps with the same payment code the earliest by tap time keeps
// it, whatever order they arrive in (a later one that held it is flagged
// and refunded); an online payment always keeps its code.
//
// A tap's service day is computed, when it is committed, with the fare
// table in force at its time (the latest stored before it), never earlier
// than the day of the instant before that table came into force
// (serviceDayAt); each ride of a day is rated with the rules of the table
// that rates it (its validator's, within FareGrace). Store fare tables
// before the validators use them.
//
// A tap id committed again with other contents (for example after a
// device's queue was replaced and its sequence numbers restarted) is
// reported as a Conflict and not charged again: the ingest layer must alert.
//
// A batch holds its accounts' row locks until it commits: on PostgreSQL,
// concurrent batches that share accounts wait for each other.
//
// CheckInvariants reads the whole ledger: it is for tests, restores and
// maintenance windows, not for every request.
package ledger

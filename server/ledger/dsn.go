package ledger

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// backend is the database behind a Store. The SQL text is shared; the few
// places where the dialects differ ask the backend (see forUpdate and
// readTxOptions in store.go, and the *.sqlite.sql / *.postgres.sql
// migration files).
type backend int

const (
	backendSQLite backend = iota
	backendPostgres
)

func (b backend) String() string {
	if b == backendPostgres {
		return "postgres"
	}
	return "sqlite"
}

// driverName returns the database/sql driver name.
func (b backend) driverName() string {
	if b == backendPostgres {
		return "pgx"
	}
	return "sqlite"
}

// target is a parsed DSN.
type target struct {
	backend backend
	dsn     string // what the driver gets
	path    string // SQLite file, for logs; "" for PostgreSQL
}

// pgIdleInTransaction is how long a PostgreSQL session of the ledger may
// sit in a transaction waiting for its client before PostgreSQL ends it.
// The ledger never waits between the statements of a transaction (an
// ingest commit is bounded by its CommitTimeout, 30 s by default); a
// session that does was cut off from the server, as behind a partition
// that drops packets: pgx gives up on it when its context ends, but no
// FIN reaches PostgreSQL, and without this its backend held the
// transaction's row locks (riders' accounts, the batch's tap ids) for as
// long as TCP keepalive takes, two hours and more, while every resend of
// the batch and every other batch of those riders waited on them.
const pgIdleInTransaction = time.Minute

// parseDSN reads the Open DSN:
//
//	postgres://… or postgresql://…   PostgreSQL (pgx), passed on unchanged
//	                                 but for idle_in_transaction_session_timeout
//	                                 (pgIdleInTransaction unless it is set)
//	sqlite:PATH[?params]             SQLite file at PATH
//	PATH[?params]                    the same
//
// For SQLite the ledger adds the settings it relies on: WAL journal,
// synchronous=FULL, foreign keys, a busy timeout and BEGIN IMMEDIATE for
// writers; for speed only, statement journals in memory and a checkpoint
// every 10,000 WAL pages. Extra driver parameters (modernc.org/sqlite's) may
// follow "?"; Open checks afterwards that the settings it relies on are in
// force.
func parseDSN(dsn string, busy time.Duration) (target, error) {
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		u, err := url.Parse(dsn)
		if err != nil {
			return target{}, fmt.Errorf("%w: PostgreSQL DSN: %v", ErrInvalid, err)
		}
		if !strings.Contains(dsn, "idle_in_transaction_session_timeout") {
			// Appended to the query as written: encoded again by
			// url.Values, options=-c%20x=y became -c+x=y, which pgx passes
			// on as is and PostgreSQL refuses (unrecognized configuration
			// parameter "+x").
			if u.RawQuery != "" {
				u.RawQuery += "&"
			}
			u.RawQuery += "idle_in_transaction_session_timeout=" + strconv.FormatInt(pgIdleInTransaction.Milliseconds(), 10)
			dsn = u.String()
		}
		return target{backend: backendPostgres, dsn: dsn}, nil
	case strings.Contains(dsn, "://"):
		scheme, _, _ := strings.Cut(dsn, "://")
		return target{}, fmt.Errorf("%w: unsupported database %q (want sqlite:PATH, a path, or postgres://…)", ErrInvalid, scheme)
	}
	path := strings.TrimPrefix(dsn, "sqlite:")
	path, rawQuery, _ := strings.Cut(path, "?")
	if path == "" {
		return target{}, fmt.Errorf("%w: empty SQLite path", ErrInvalid)
	}
	extra, err := url.ParseQuery(rawQuery)
	if err != nil {
		return target{}, fmt.Errorf("%w: SQLite parameters: %v", ErrInvalid, err)
	}
	if strings.Contains(path, ":memory:") || extra.Get("mode") == "memory" {
		return target{}, fmt.Errorf("%w: the ledger needs a SQLite file, not an in-memory database", ErrInvalid)
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout("+strconv.FormatInt(busy.Milliseconds(), 10)+")")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "cache_size(-32768)")
	// Neither changes what a commit guarantees (WAL, synchronous=FULL):
	// statement journals (a multi-row statement's undo, for rolling back
	// that statement alone) stay in memory instead of a temporary file;
	// and the WAL is copied back into the database every 10,000 pages
	// (40 MB) instead of 1,000: a settlement batch writes some 400 pages,
	// mostly index pages that the next batches write again, so most of
	// them are copied back once, not once per batch.
	q.Add("_pragma", "temp_store(MEMORY)")
	q.Add("_pragma", "wal_autocheckpoint(10000)")
	q.Set("_txlock", "immediate")
	for k, vs := range extra {
		if k == "_txlock" {
			continue // writers must take the lock at BEGIN
		}
		for _, v := range vs {
			q.Add(k, v)
		}
	}
	return target{backend: backendSQLite, dsn: path + "?" + q.Encode(), path: path}, nil
}

// SQLitePath returns the file of a SQLite ledger's DSN (sqlite:PATH or a
// bare PATH), and false for a PostgreSQL DSN or one Open refuses.
func SQLitePath(dsn string) (string, bool) {
	tg, err := parseDSN(dsn, 0)
	if err != nil || tg.backend != backendSQLite {
		return "", false
	}
	return tg.path, true
}

// Describe names the ledger a DSN opens for a message, without its
// password: "the SQLite file PATH" or "the PostgreSQL database NAME on
// HOST".
func Describe(dsn string) string {
	if path, ok := SQLitePath(dsn); ok {
		return "the SQLite file " + path
	}
	u, err := url.Parse(dsn)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "the ledger's database"
	}
	return fmt.Sprintf("the PostgreSQL database %q on %s", strings.TrimPrefix(u.Path, "/"), u.Host)
}

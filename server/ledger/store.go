package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/farego/farego/queue/durable"
	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"golang.org/x/sys/unix"
	"modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// Store is the settlement ledger. It is safe for concurrent use, and several
// Stores, in one process or in several, may share one database: every write
// is one transaction that serializes on the accounts it touches.
type Store struct {
	db        *sql.DB
	backend   backend
	mustExist bool   // Options.MustExist: migrate refuses a database without a ledger
	noMigrate bool   // Options.NoMigrate: migrate refuses a ledger it would migrate
	keySet    string // Options.KeySet: migrate refuses a ledger bound to another
	migrated  int    // migrations this Open applied
	log       *slog.Logger
	now       func() time.Time
	currency  string
	// writeSem lets one write transaction of this Store at a time take
	// SQLite's write lock, so writers of one process queue in Go instead of
	// polling the busy handler. nil for PostgreSQL.
	writeSem chan struct{}
	tables   tableCache
	catalog  atomic.Pointer[fareCatalog]
	restore  atomic.Pointer[restoreWindow] // set by Restored: see lostCredential
	path     string                        // the SQLite file; "" for PostgreSQL
	file     os.FileInfo                   // path's file when opened (SQLite): see FileGone
	holdMu   sync.Mutex
	hold     *hold // Serve's or Exclusive's lock, released by Close
	// lostCh is closed when the serving lock is lost (Lost), once: by the
	// hold's goroutine, which then ends. lost is set just before it and
	// read only once it is closed.
	lostCh chan struct{}
	lost   error
	// fareGrace and reuseWindow are Options.FareGrace and ReuseWindow.
	fareGrace, reuseWindow time.Duration
	// forgetUnused is Options.ForgetUnusedAccounts (negative: never).
	forgetUnused time.Duration
	stmts        sync.Map // query → *sql.Stmt, see prepared
	// bulkStmts counts the bulk statements in stmts (see bulkStmt).
	bulkStmts atomic.Int64
	// roundTrips counts the statements write transactions sent (BEGIN and
	// COMMIT included): a client-server database waits a round trip for
	// each. For the benchmarks.
	roundTrips atomic.Int64
	// writes counts the write transactions committed (WriteTransactions).
	writes  atomic.Int64
	summary summaryState // RefreshSummaries' memory (summary.go)
	// fault, when set (by tests only, before use), is called at named points
	// inside write transactions; an error it returns aborts the transaction
	// there, as a crash would.
	fault func(point string) error
}

// maxAttempts bounds the retries of a write transaction that lost a
// serialization race (PostgreSQL deadlock or serialization failure, SQLite
// busy past its timeout). Every write is idempotent or fully rolled back, so
// retrying is safe.
const maxAttempts = 8

// Open opens the ledger database and brings its schema up to date.
//
// dsn selects the backend: "postgres://…" or "postgresql://…" is PostgreSQL
// (pgx; a search_path parameter selects a schema); "sqlite:PATH" or a bare
// PATH is a SQLite file, created if missing. Migrations run in one
// transaction; on PostgreSQL an advisory lock keeps concurrent Opens by
// several instances from racing. opts may be nil.
func Open(ctx context.Context, dsn string, opts *Options) (*Store, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	asked := o.Currency
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	tg, err := parseDSN(dsn, o.BusyTimeout)
	if err != nil {
		return nil, err
	}
	if tg.path != "" {
		info, err := os.Stat(tg.path)
		if o.MustExist && errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w at %s", ErrNoLedger, tg.path)
		}
		if o.MustExist && err == nil && info.Mode().IsRegular() && info.Size() == 0 {
			// A copy that failed or a file made by mistake: SQLite would
			// take it for a new database.
			return nil, fmt.Errorf("%w at %s: the file is empty (0 bytes)", ErrNoLedger, tg.path)
		}
		if err := privateFile(tg.path); err != nil {
			return nil, err
		}
		if err := writableFiles(tg.path); err != nil {
			return nil, err
		}
		// Before SQLite opens the files: closing a descriptor of them
		// once it has drops every POSIX lock this process holds on them,
		// SQLite's shared lock on the file included, and another SQLite
		// client (the sqlite3 shell taking a backup) closing then takes
		// itself for the last connection and deletes the -wal this
		// server goes on committing into (TestOtherProcessReadingKeepsTheWAL).
		if err := syncFiles(tg.path); err != nil {
			return nil, fmt.Errorf("ledger: %w", err)
		}
	}
	db, err := sql.Open(tg.backend.driverName(), tg.dsn)
	if err != nil {
		return nil, fmt.Errorf("ledger: open %s: %w", tg.backend, err)
	}
	if tg.backend == backendSQLite {
		// A write transaction may prepare a statement on a second
		// connection (see prepared).
		o.MaxOpenConns = max(o.MaxOpenConns, 2)
	}
	db.SetMaxOpenConns(o.MaxOpenConns)
	db.SetMaxIdleConns(min(o.MaxOpenConns, 4))
	s := &Store{
		db:           db,
		backend:      tg.backend,
		path:         tg.path,
		lostCh:       make(chan struct{}),
		log:          o.Logger,
		now:          o.Now,
		currency:     o.Currency,
		tables:       tableCache{byVersion: map[uint64]*fareEntry{}},
		fareGrace:    o.FareGrace,
		reuseWindow:  o.ReuseWindow,
		forgetUnused: o.ForgetUnusedAccounts,
		mustExist:    o.MustExist,
		noMigrate:    o.NoMigrate,
		keySet:       o.KeySet,
	}
	if tg.backend == backendSQLite {
		s.writeSem = make(chan struct{}, 1)
	}
	// A new SQLite connection switches the file to WAL, which another
	// process opening it at the same moment can refuse with SQLITE_BUSY
	// without waiting: retry for as long as the busy timeout.
	for start, attempt := time.Now(), 1; ; attempt++ {
		err := s.init(ctx, asked)
		if err == nil {
			break
		}
		if !retryable(err) || time.Since(start) > o.BusyTimeout {
			db.Close()
			return nil, s.openNoRoom(err)
		}
		select {
		case <-ctx.Done():
			db.Close()
			return nil, ctx.Err()
		case <-time.After(time.Duration(min(attempt, 50)) * time.Millisecond):
		}
	}
	if tg.backend == backendSQLite && s.migrated > 0 {
		s.truncateWAL(ctx)
	}
	if tg.path != "" {
		// SQLite makes -wal and -shm with the main file's mode; make sure
		// files an older version made are private too.
		for _, p := range []string{tg.path, tg.path + "-wal", tg.path + "-shm"} {
			if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
				db.Close()
				return nil, fmt.Errorf("ledger: %w", err)
			}
		}
	}
	if tg.path != "" {
		if s.file, err = os.Stat(tg.path); err != nil {
			db.Close()
			return nil, fmt.Errorf("ledger: %w", err)
		}
	}
	attrs := []any{logKeyBackend, tg.backend.String()}
	if tg.path != "" {
		attrs = append(attrs, logKeyPath, tg.path)
	}
	s.log.Info("ledger: opened", attrs...)
	return s, nil
}

// truncateWAL checkpoints a SQLite ledger's -wal into the file and
// truncates it, after migrations. A migration is one transaction, so all
// it writes (an index over every tap, a column filled in on each) goes to
// the -wal first, which SQLite reuses but never shrinks: upgrading a
// ledger of 500,000 taps from before migration 4 left 333 MB of -wal
// beside its 296 MB file for as long as the server ran (an operator's
// upgrade review). A reader of another process can keep it from
// truncating; it is said, and the next start tries again only if it
// migrates: the space is SQLite's to reuse meanwhile.
func (s *Store) truncateWAL(ctx context.Context) {
	var busy, frames, done int
	err := s.db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &frames, &done)
	if err == nil && busy != 0 {
		err = errors.New("another connection is reading it")
	}
	if err != nil {
		s.log.Warn("ledger: the -wal the migrations wrote was not truncated; its space is reused, not given back", logKeyErr, err)
	}
}

// syncFiles makes the SQLite ledger at path durable as this process
// found it: the -wal file, the file, and the directory that names them. A
// server killed while it committed (SIGKILL, the OOM killer, a crash),
// after SQLite wrote the commit's frames to the -wal and before their
// fsync returned, left them in the page cache only; SQLite's recovery at
// the next open takes the commit for made, and this process answers for
// it — a batch the devices send again is found whole and acked, and an
// all-duplicate batch writes nothing that would sync it — so a power cut
// before the next commit took back taps the devices had deleted.
func syncFiles(path string) error {
	for _, p := range []string{path + "-wal", path} {
		f, err := os.Open(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		err = f.Sync()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("fsync %s: %w", p, err)
		}
	}
	return durable.SyncDir(filepath.Dir(path))
}

// privateFile creates the SQLite file with mode 0600 (whatever the umask)
// if it does not exist, so that the ledger and the -wal and -shm files
// SQLite makes beside it with the same mode are readable by the owner only.
func privateFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case errors.Is(err, os.ErrExist):
		return nil
	case err != nil:
		return fmt.Errorf("ledger: create %s: %w", path, err)
	}
	return f.Close()
}

// writableFiles checks that this process may read and write the SQLite
// ledger at path and its -wal and -shm, and make those in its directory:
// SQLite says only "unable to open database file (14)" otherwise, naming
// neither the file nor why, and a ledger file root made (init, run as root
// on a service's data directory) is what a service's user meets.
func writableFiles(path string) error {
	dir := filepath.Dir(path)
	for _, c := range []struct {
		path string
		mode uint32
	}{{path, unix.R_OK | unix.W_OK}, {path + "-wal", unix.R_OK | unix.W_OK}, {path + "-shm", unix.R_OK | unix.W_OK}, {dir, unix.W_OK | unix.X_OK}} {
		if c.path == dir && exists(path+"-wal") && exists(path+"-shm") {
			continue // both there: SQLite makes neither
		}
		err := unix.Access(c.path, c.mode)
		if err == nil || !errors.Is(err, unix.EACCES) {
			continue // missing -wal or -shm, or a cause SQLite names well enough
		}
		owner := ""
		if info, err := os.Stat(c.path); err == nil {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				owner = fmt.Sprintf(", owned by uid %d gid %d, mode %v", st.Uid, st.Gid, info.Mode().Perm())
			}
		}
		what := "cannot read and write " + c.path
		if c.path == dir {
			what = "cannot make the ledger's -wal and -shm files in " + c.path
		}
		return fmt.Errorf("ledger: this user (uid %d) %s%s: run farego-settlement as the user the server runs as, who owns the data directory (with the systemd unit: sudo -u farego-settlement farego-settlement …), or chown the files to that user",
			os.Getuid(), what, owner)
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func (s *Store) init(ctx context.Context, currency string) error {
	if err := s.db.PingContext(ctx); err != nil {
		// A database the DSN names that is not there was PostgreSQL's
		// FATAL alone: init makes the ledger's tables, not the database.
		if pg := (*pgconn.PgError)(nil); errors.As(err, &pg) && pg.Code == "3D000" {
			return fmt.Errorf("ledger: connect to %s: %w: check the database name in --db; a new ledger's database is made first, empty "+
				"(createdb NAME, or CREATE DATABASE NAME), then farego-settlement init --db makes the ledger in it", s.backend, err)
		}
		return fmt.Errorf("ledger: connect to %s: %w", s.backend, err)
	}
	if s.backend == backendSQLite {
		if err := s.checkSQLiteSettings(ctx); err != nil {
			return err
		}
	} else if err := s.checkPostgresSettings(ctx); err != nil {
		return err
	}
	if err := s.migrate(ctx); err != nil {
		return err
	}
	if err := s.loadRestore(ctx); err != nil {
		return err
	}
	return s.settleCurrency(ctx, currency)
}

// checkSQLiteSettings makes sure the connection settings the ledger's
// guarantees rest on are in force (an extra DSN parameter could undo them).
func (s *Store) checkSQLiteSettings(ctx context.Context) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("ledger: sqlite: %w", err)
	}
	defer conn.Close()
	var mode string
	var syncLevel, fk int
	if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("ledger: sqlite: %w", err)
	}
	if err := conn.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&syncLevel); err != nil {
		return fmt.Errorf("ledger: sqlite: %w", err)
	}
	if err := conn.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil {
		return fmt.Errorf("ledger: sqlite: %w", err)
	}
	if mode != "wal" || syncLevel < 2 || fk != 1 {
		return fmt.Errorf("%w: SQLite must run with journal_mode=WAL, synchronous=FULL and foreign_keys=1 (got %s, %d, %d)",
			ErrInvalid, mode, syncLevel, fk)
	}
	return nil
}

// checkPostgresSettings makes sure the ledger's commits are durable when
// they return: synchronous_commit off (a DSN parameter, an options=-c
// setting, ALTER DATABASE or ALTER ROLE ... SET, postgresql.conf) has
// PostgreSQL acknowledge a commit before its WAL is on disk, and the server
// then acks batches that a power cut of the database server takes back —
// batches the validators have already archived and pruned, so their taps
// are never charged. It is a session setting: every connection of the pool
// is opened with the same DSN, role and database, so one tells for all.
// (fsync and full_page_writes are the cluster's: README, Durability.)
func (s *Store) checkPostgresSettings(ctx context.Context) error {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("ledger: postgres: %w", err)
	}
	defer conn.Close()
	var sc string
	if err := conn.QueryRowContext(ctx, "SHOW synchronous_commit").Scan(&sc); err != nil {
		return fmt.Errorf("ledger: postgres: %w", err)
	}
	if sc == "off" {
		return fmt.Errorf("%w: PostgreSQL must run the ledger with synchronous_commit on (got off: a commit is acknowledged before it is on disk, "+
			"and a power cut of the database server loses batches the validators were told were settled and have deleted): "+
			"remove the setting (DSN, ALTER DATABASE/ROLE ... SET, postgresql.conf), or add synchronous_commit=on to the DSN", ErrInvalid)
	}
	// A search_path naming no schema that exists left init to fail at its
	// first table ("no schema has been selected to create in", SQLSTATE
	// 3F000), and the other commands at their first query.
	var schema sql.NullString
	if err := conn.QueryRowContext(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		return fmt.Errorf("ledger: postgres: %w", err)
	}
	if !schema.Valid {
		var path string
		if err := conn.QueryRowContext(ctx, "SHOW search_path").Scan(&path); err != nil {
			return fmt.Errorf("ledger: postgres: %w", err)
		}
		return fmt.Errorf("%w: no schema of the search_path (%s) exists in this database: check search_path in --db, "+
			"or create the schema first (CREATE SCHEMA NAME), then farego-settlement init --db makes the ledger in it", ErrInvalid, path)
	}
	return nil
}

// Close closes the database. Operations in flight fail.
func (s *Store) Close() error {
	s.dropHold()
	s.stmts.Range(func(_, v any) bool {
		v.(*sql.Stmt).Close()
		return true
	})
	return s.db.Close()
}

// Backend returns "sqlite" or "postgres".
func (s *Store) Backend() string { return s.backend.String() }

// forUpdate is the row-lock suffix of a SELECT that is followed by writes
// to the selected row: "FOR UPDATE" on PostgreSQL; nothing on SQLite, where a
// write transaction holds the database's write lock from BEGIN IMMEDIATE.
func (s *Store) forUpdate() string {
	if s.backend == backendPostgres {
		return " FOR UPDATE"
	}
	return ""
}

// readTxOptions are the options of a read-only transaction that must see one
// snapshot: REPEATABLE READ on PostgreSQL; a deferred BEGIN on SQLite (in WAL
// mode a read transaction sees one snapshot).
func (s *Store) readTxOptions() *sql.TxOptions {
	if s.backend == backendPostgres {
		return &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead}
	}
	return &sql.TxOptions{ReadOnly: true}
}

// WriteTransactions returns how many write transactions this Store has
// committed since Open (migrations included): what a client-server
// database or SQLite's write lock and fsync cost per commit, whatever
// the transaction holds.
func (s *Store) WriteTransactions() int64 { return s.writes.Load() }

// hook calls the fault-injection hook, if any.
func (s *Store) hook(point string) error {
	if s.fault == nil {
		return nil
	}
	return s.fault(point)
}

// errRetry asks write to run the transaction again (a unique key another
// transaction inserted concurrently; the next attempt sees it).
var errRetry = errors.New("ledger: retry transaction")

// retryable reports whether err means the transaction was rolled back for
// losing a race and may simply run again.
func retryable(err error) bool {
	if errors.Is(err, errRetry) {
		return true
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code == "40001" || pg.Code == "40P01" // serialization_failure, deadlock_detected
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		c := se.Code() & 0xff
		return c == 5 || c == 6 // SQLITE_BUSY, SQLITE_LOCKED
	}
	return false
}

// write runs fn in a write transaction, then settles the accounts it
// touched (cached balances, negative-balance deny entries, deny-list
// version) and commits. It retries a transaction that lost a race. fn must
// only have effects through the transaction: it may run more than once.
func (s *Store) write(ctx context.Context, op string, fn func(*txn) error) error {
	if err := s.lostErr(); err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		err := s.writeOnce(ctx, fn)
		if err == nil || !retryable(err) {
			return s.diskFull(err)
		}
		if attempt == maxAttempts {
			return fmt.Errorf("ledger: %s: still conflicting after %d attempts: %w", op, attempt, err)
		}
		s.log.Debug("ledger: retrying transaction", logKeyOp, op, logKeyAttempt, attempt, logKeyErr, err)
		backoff := time.Duration(attempt*attempt)*time.Millisecond + rand.N(5*time.Millisecond)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
	}
}

func (s *Store) writeOnce(ctx context.Context, fn func(*txn) error) (err error) {
	if s.writeSem != nil {
		select {
		case s.writeSem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		defer func() { <-s.writeSem }()
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("ledger: begin: %w", err)
	}
	s.roundTrips.Add(2) // BEGIN and COMMIT
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
		// A transaction whose context ended is rolled back by
		// database/sql as it ends, and what is called on it next says
		// only sql.ErrTxDone: say why (the caller's cancel or deadline).
		if errors.Is(err, sql.ErrTxDone) && ctx.Err() != nil {
			err = fmt.Errorf("ledger: transaction rolled back: %w", context.Cause(ctx))
		}
	}()
	t := &txn{s: s, ctx: ctx, tx: tx, now: s.now().UnixNano(), accounts: map[uint64]*acctState{},
		stmts: map[string]*sql.Stmt{}}
	if err = fn(t); err != nil {
		return err
	}
	if err = t.finish(); err != nil {
		return err
	}
	if err = s.hook("commit"); err != nil {
		return err
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("ledger: commit: %w", err)
	}
	s.writes.Add(1)
	// A SQLite file removed under the server (or replaced) takes the
	// commit with it when the process ends: not a write to answer 2xx to.
	return s.FileGone()
}

// read runs fn in a read-only transaction that sees one snapshot.
func (s *Store) read(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, s.readTxOptions())
	if err != nil {
		return fmt.Errorf("ledger: begin read: %w", err)
	}
	defer tx.Rollback()
	return fn(tx)
}

// txn is one write transaction and what it has locked and changed.
type txn struct {
	s   *Store
	ctx context.Context
	tx  *sql.Tx
	now int64 // unix ns, the time recorded for everything the transaction writes
	// accounts holds the accounts locked so far (nil value: does not exist).
	accounts    map[uint64]*acctState
	stmts       map[string]*sql.Stmt // prepared statements bound to tx
	denyChanged bool
	catalog     *fareCatalog // the stored fare tables, read once per transaction
	// fareVersion is the fare_version counter when a statement read it
	// on the way (fareVersionRead): the lock of a batch's accounts
	// (lockWithCredentials), which saves loadCatalog its round trip.
	fareVersion     int64
	fareVersionRead bool
	// stats are the transaction's changes of the kept figures, written by
	// finish in one statement.
	stats map[string]int64
	// held are bulk writes held back to go in one statement (PostgreSQL:
	// see bulkWrite and flush).
	held []heldWrite
}

// The kept figures (table ledger_stats).
const (
	statAccounts = "accounts"
	statBalance  = "balance"
	statTaps     = "taps"
	statFlagged  = "flagged_taps"
	statPostings = "postings"
	statPayments = "payments"
	statRefunds  = "refunds"
	statDevices  = "devices"
)

// statShards is how many rows each kept figure is spread over.
const statShards = 16

// stat adds delta to a kept figure at commit.
func (t *txn) stat(name string, delta int64) {
	if delta == 0 {
		return
	}
	if t.stats == nil {
		t.stats = map[string]int64{}
	}
	t.stats[name] += delta
}

// heldWrite is a bulk write waiting for flush.
type heldWrite struct {
	what  string
	b     *bulk
	exact bool // it must change every one of its rows (see bulkWrite)
	stmt  func(src string) string
}

// bulkWrite writes the rows of b with the statement stmt makes of their
// row source (see bulk.go). exact: the statement must change one row per
// row of b (an INSERT … ON CONFLICT DO NOTHING that finds a row another
// transaction inserted since it was read runs the transaction again).
//
// On SQLite it runs at once. On PostgreSQL it is held back, to go with the
// transaction's other held writes in one statement of data-modifying WITH
// clauses when the transaction next reads what they write (see flush):
// a settlement batch's writes cost one round trip. A held write must not
// depend on another's effects (they all see the snapshot the statement
// starts from) nor change a row another changes.
func (t *txn) bulkWrite(what string, b *bulk, exact bool, stmt func(src string) string) error {
	for _, c := range b.chunks(t.pg()) {
		if t.pg() {
			t.held = append(t.held, heldWrite{what: what, b: c, exact: exact, stmt: stmt})
			continue
		}
		src, args := t.rows(c, 1)
		r, err := t.bulkExec(what, stmt(src), args...)
		if err != nil {
			return err
		}
		if exact {
			if n, err := r.RowsAffected(); err != nil || n != int64(c.rows) {
				return errRetry
			}
		}
	}
	return nil
}

// flush runs the held writes (PostgreSQL) in one statement:
//
//	WITH w0 AS (INSERT … RETURNING 1), w1 AS (UPDATE … RETURNING 1), …
//	SELECT (SELECT count(*) FROM w0), (SELECT count(*) FROM w1), …
//
// and checks the counts of the exact ones.
func (t *txn) flush() error {
	if len(t.held) == 0 {
		return nil
	}
	held := t.held
	t.held = nil
	var sb strings.Builder
	var args []any
	whats := make([]string, len(held))
	sb.WriteString("WITH ")
	for i, h := range held {
		whats[i] = h.what
		src, a := h.b.source(len(args)+1, true)
		args = append(args, a...)
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString("w" + strconv.Itoa(i) + " AS (" + h.stmt(src) + " RETURNING 1)")
	}
	sb.WriteString(" SELECT ")
	counts := make([]int64, len(held))
	dest := make([]any, len(held))
	for i := range held {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString("(SELECT count(*) FROM w" + strconv.Itoa(i) + ")")
		dest[i] = &counts[i]
	}
	if err := t.queryRow(sb.String(), args...).Scan(dest...); err != nil {
		return fmt.Errorf("ledger: %s: %w", strings.Join(whats, ", "), err)
	}
	for i, h := range held {
		if h.exact && counts[i] != int64(h.b.rows) {
			return errRetry
		}
	}
	return nil
}

// flushStats writes the transaction's changes of the kept figures to one
// random shard, in one statement.
func (t *txn) flushStats() error {
	if len(t.stats) == 0 {
		return nil
	}
	names := make([]string, 0, len(t.stats))
	for n := range t.stats {
		names = append(names, n)
	}
	slices.Sort(names)
	shard := rand.Int64N(statShards)
	b := newBulk(tText, tBigint, tBigint)
	for _, n := range names {
		b.add(n, shard, t.stats[n])
	}
	t.stats = nil
	return t.bulkWrite("keep figures", b, false, func(src string) string {
		return `INSERT INTO ledger_stats (name, shard, value) ` + src + `
			ON CONFLICT (name, shard) DO UPDATE SET value = ledger_stats.value + excluded.value`
	})
}

// acctState is a locked account's row as the transaction changes it.
type acctState struct {
	id         uint64
	currency   string
	balance    int64
	postings   int64 // number of postings = seq of the last one
	creditLine int64
	dirty      bool // balance or postings changed: write back in finish
	// negDenied mirrors the row's neg_denied column: whether the account's
	// negative_balance deny entry exists. The row lock keeps it from
	// changing under us, and reading it from the locked row (not from
	// deny_entries) sees what the last writer committed.
	negDenied bool
}

// overdrawn reports whether the balance is below the credit line: the
// account belongs on the deny list.
func (a *acctState) overdrawn() bool { return a.balance < -a.creditLine }

// prepared returns the Store's prepared statement for query, preparing it
// on first use (SQLite only). Preparing once saves SQLite from parsing every
// statement of every transaction again (a third of a commit's time). It
// takes a second connection from the pool, which is safe on SQLite, where a
// Store runs one write transaction at a time; PostgreSQL does without (pgx
// caches prepared statements per connection by itself), so that many
// transactions holding every pooled connection never wait for one more.
func (s *Store) prepared(ctx context.Context, query string) (*sql.Stmt, error) {
	if v, ok := s.stmts.Load(query); ok {
		return v.(*sql.Stmt), nil
	}
	st, err := s.db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if v, loaded := s.stmts.LoadOrStore(query, st); loaded {
		st.Close()
		return v.(*sql.Stmt), nil
	}
	return st, nil
}

// stmt returns the prepared statement for query bound to the transaction.
func (t *txn) stmt(query string) (*sql.Stmt, error) {
	if st, ok := t.stmts[query]; ok {
		return st, nil
	}
	ps, err := t.s.prepared(t.ctx, query)
	if err != nil {
		return nil, err
	}
	st := t.tx.StmtContext(t.ctx, ps)
	t.stmts[query] = st
	return st, nil
}

// exec runs a statement in the transaction; what names it in errors.
func (t *txn) exec(what, query string, args ...any) (sql.Result, error) {
	t.s.roundTrips.Add(1)
	if t.s.backend == backendPostgres {
		r, err := t.tx.ExecContext(t.ctx, query, args...)
		if err != nil {
			return nil, fmt.Errorf("ledger: %s: %w", what, err)
		}
		return r, nil
	}
	st, err := t.stmt(query)
	if err != nil {
		return nil, fmt.Errorf("ledger: %s: %w", what, err)
	}
	r, err := st.ExecContext(t.ctx, args...)
	if err != nil {
		return nil, fmt.Errorf("ledger: %s: %w", what, err)
	}
	return r, nil
}

// rawExec runs a statement without preparing it: schema changes, and
// scripts of several statements.
// xactLock takes, on PostgreSQL, the advisory lock key (of this schema)
// until the transaction ends: the instances on one ledger take turns at
// what it guards (migrations, the summaries' rewrite). SQLite has one
// writer at a time already.
func (t *txn) xactLock(what string, key int) error {
	if t.s.backend != backendPostgres {
		return nil
	}
	return t.rawExec(what, `SELECT pg_advisory_xact_lock($1, hashtext(COALESCE(current_schema(), '')))`, key)
}

func (t *txn) rawExec(what, query string, args ...any) error {
	t.s.roundTrips.Add(1)
	if _, err := t.tx.ExecContext(t.ctx, query, args...); err != nil {
		return fmt.Errorf("ledger: %s: %w", what, err)
	}
	return nil
}

// errRow is a row whose query failed before it ran.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// queryRow runs a query that returns at most one row.
func (t *txn) queryRow(query string, args ...any) rowScanner {
	t.s.roundTrips.Add(1)
	if t.s.backend == backendPostgres {
		return t.tx.QueryRowContext(t.ctx, query, args...)
	}
	st, err := t.stmt(query)
	if err != nil {
		return errRow{err}
	}
	return st.QueryRowContext(t.ctx, args...)
}

// query runs a query in the transaction. The caller must close the rows
// before running anything else in the transaction.
func (t *txn) query(query string, args ...any) (*sql.Rows, error) {
	t.s.roundTrips.Add(1)
	if t.s.backend == backendPostgres {
		return t.tx.QueryContext(t.ctx, query, args...)
	}
	st, err := t.stmt(query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(t.ctx, args...)
}

// execCount runs an INSERT … ON CONFLICT DO NOTHING, UPDATE or DELETE and
// returns the number of rows it changed.
func (t *txn) execCount(what, query string, args ...any) (int64, error) {
	r, err := t.exec(what, query, args...)
	if err != nil {
		return 0, err
	}
	n, err := r.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("ledger: %s: %w", what, err)
	}
	return n, nil
}

// accountLockColumns are what lockAccounts reads of a locked account.
const accountLockColumns = `id, currency, balance, postings, credit_line, neg_denied`

// lockAccount locks the account v.id and reads it (PostgreSQL): run for
// each row of a row source v of ids in ascending order (a lateral
// subquery; one index lookup per id, whatever plan is cached), it locks
// the accounts in id order: two transactions never wait for each other in
// a cycle.
const lockAccount = `SELECT ` + accountLockColumns + ` FROM accounts WHERE accounts.id = v.id FOR UPDATE`

// lockAccounts locks the given accounts with one statement (per chunk of
// ids), in ascending id order so that two transactions never wait for each
// other in a cycle: SELECT … FOR UPDATE on PostgreSQL; SQLite's write lock
// is held from BEGIN IMMEDIATE. Accounts that do not exist are remembered as
// nil. Accounts the transaction holds already are not read again.
func (t *txn) lockAccounts(ids []uint64) error {
	var need []uint64
	for _, id := range ids {
		if _, ok := t.accounts[id]; !ok && id <= math.MaxInt64 {
			need = append(need, id)
		}
	}
	slices.Sort(need)
	need = slices.Compact(need)
	if len(need) == 0 {
		return nil
	}
	for _, c := range int64s(need).chunks(t.pg()) {
		src, args := t.rows(c, 1)
		q := `SELECT ` + accountLockColumns + ` FROM accounts WHERE id IN (` + src + `) ORDER BY id`
		if t.pg() {
			q = `SELECT a.* FROM (` + src + `) AS v (id) CROSS JOIN LATERAL (` + lockAccount + `) AS a`
		}
		rows, err := t.bulkQuery(q, args...)
		if err != nil {
			return fmt.Errorf("ledger: lock accounts: %w", err)
		}
		for rows.Next() {
			a, err := scanLockedAccount(rows)
			if err != nil {
				rows.Close()
				return fmt.Errorf("ledger: lock accounts: %w", err)
			}
			t.accounts[a.id] = a
		}
		if err := rows.Close(); err != nil {
			return err
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("ledger: lock accounts: %w", err)
		}
	}
	for _, id := range need {
		if _, ok := t.accounts[id]; !ok {
			t.accounts[id] = nil
		}
	}
	return nil
}

func scanLockedAccount(r rowScanner) (*acctState, error) {
	a := &acctState{}
	var id int64
	if err := r.Scan(&id, &a.currency, &a.balance, &a.postings, &a.creditLine, &a.negDenied); err != nil {
		return nil, err
	}
	a.id = uint64(id)
	return a, nil
}

// lockAccount locks one account row for the rest of the transaction and
// returns its state, or nil if it does not exist.
func (t *txn) lockAccount(id uint64) (*acctState, error) {
	if a, ok := t.accounts[id]; ok {
		return a, nil
	}
	a, err := scanLockedAccount(t.queryRow(`SELECT `+accountLockColumns+` FROM accounts WHERE id = $1`+t.s.forUpdate(), int64(id)))
	if errors.Is(err, sql.ErrNoRows) {
		t.accounts[id] = nil
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: lock account %d: %w", id, err)
	}
	t.accounts[id] = a
	return a, nil
}

// lockExisting locks an account that must exist: ErrNotFound otherwise.
func (t *txn) lockExisting(id uint64) (*acctState, error) {
	a, err := t.lockAccount(id)
	if err == nil && a == nil {
		err = fmt.Errorf("%w: account %d", ErrNotFound, id)
	}
	return a, err
}

// pg reports whether the transaction is on PostgreSQL.
func (t *txn) pg() bool { return t.s.backend == backendPostgres }

// rows returns b as a row source for the backend, and its arguments (see
// bulk.go), parameters numbered from first.
func (t *txn) rows(b *bulk, first int) (string, []any) { return b.source(first, t.pg()) }

// maxBulkStmts bounds the bulk statements a SQLite Store keeps prepared:
// their text changes with the number of rows, and the batches of a busy
// server come in a few sizes.
const maxBulkStmts = 512

// bulkStmt returns the transaction's prepared statement for a bulk query on
// SQLite while the Store has room for it, or nil: the statement then runs
// unprepared (PostgreSQL always; pgx caches statements itself).
func (t *txn) bulkStmt(query string) *sql.Stmt {
	if t.s.backend != backendSQLite {
		return nil
	}
	if _, ok := t.s.stmts.Load(query); !ok && t.s.bulkStmts.Add(1) > maxBulkStmts {
		t.s.bulkStmts.Add(-1)
		return nil
	}
	st, err := t.stmt(query)
	if err != nil {
		return nil
	}
	return st
}

// bulkQuery and bulkExec run a statement built by bulk.
func (t *txn) bulkQuery(query string, args ...any) (*sql.Rows, error) {
	t.s.roundTrips.Add(1)
	if st := t.bulkStmt(query); st != nil {
		return st.QueryContext(t.ctx, args...)
	}
	return t.tx.QueryContext(t.ctx, query, args...)
}

func (t *txn) bulkExec(what, query string, args ...any) (sql.Result, error) {
	t.s.roundTrips.Add(1)
	var r sql.Result
	var err error
	if st := t.bulkStmt(query); st != nil {
		r, err = st.ExecContext(t.ctx, args...)
	} else {
		r, err = t.tx.ExecContext(t.ctx, query, args...)
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: %s: %w", what, err)
	}
	return r, nil
}

// postingRef says what a posting belongs to: exactly one of the fields is set.
type postingRef struct {
	tapID       string
	paymentID   int64
	topupRef    string
	fareVersion uint64 // the fare table that rated a fare posting
}

// appendPosting appends a posting to a locked account.
func (t *txn) appendPosting(a *acctState, kind string, amount int64, ref postingRef) error {
	seq := a.postings + 1
	_, err := t.exec("append posting",
		`INSERT INTO postings (account_id, seq, kind, amount, tap_id, payment_id, topup_ref, fare_version, created_ns)
		 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		int64(a.id), seq, kind, amount,
		sql.NullString{String: ref.tapID, Valid: ref.tapID != ""},
		sql.NullInt64{Int64: ref.paymentID, Valid: ref.paymentID != 0},
		sql.NullString{String: ref.topupRef, Valid: ref.topupRef != ""},
		int64(ref.fareVersion), t.now)
	if err != nil {
		return err
	}
	a.postings = seq
	a.balance += amount
	a.dirty = true
	t.stat(statPostings, 1)
	t.stat(statBalance, amount)
	return nil
}

// deny adds a deny entry unless it is there already. expires (unix ns, 0:
// never) is when the entry stops mattering.
func (t *txn) deny(account uint64, serial uint32, reason string, expires int64) (bool, error) {
	n, err := t.execCount("add deny entry",
		`INSERT INTO deny_entries (account_id, serial, reason, since_ns, expires_ns) VALUES ($1, $2, $3, $4, $5)
		 ON CONFLICT (account_id, serial, reason) DO NOTHING`,
		int64(account), int64(serial), reason, t.now, expires)
	if n > 0 {
		t.denyChanged = true
	}
	return n > 0, err
}

// undeny removes the deny entries of (account, serial) with reason, or all
// but the ledger-managed negative_balance entry when reason is "".
func (t *txn) undeny(account uint64, serial uint32, reason string) (bool, error) {
	var n int64
	var err error
	if reason == "" {
		n, err = t.execCount("remove deny entries",
			`DELETE FROM deny_entries WHERE account_id = $1 AND serial = $2 AND reason <> $3`,
			int64(account), int64(serial), ReasonNegativeBalance)
	} else {
		n, err = t.execCount("remove deny entry",
			`DELETE FROM deny_entries WHERE account_id = $1 AND serial = $2 AND reason = $3`,
			int64(account), int64(serial), reason)
	}
	if n > 0 {
		t.denyChanged = true
	}
	return n > 0, err
}

// finish writes back the touched accounts' cached balance, posting count
// and negative_balance state (one statement), keeps the negative_balance
// deny entry in step with each balance (below its credit line: denied), and
// moves the deny-list version if any entry changed. write calls it before
// committing; an operation that reads its own result calls it first (a
// second call does nothing more).
func (t *txn) finish() error {
	var ids []uint64
	for id, a := range t.accounts {
		if a != nil && a.dirty {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	upd := newBulk(tBigint, tBigint, tBigint, tBool)
	for _, id := range ids {
		a := t.accounts[id]
		a.dirty = false
		switch over := a.overdrawn(); {
		case over && !a.negDenied:
			if _, err := t.deny(id, 0, ReasonNegativeBalance, 0); err != nil {
				return err
			}
			a.negDenied = true
			t.s.log.Warn("ledger: balance below the credit line, account denied", "account", id, "balance", a.balance,
				"credit_line", a.creditLine)
		case !over && a.negDenied:
			if _, err := t.undeny(id, 0, ReasonNegativeBalance); err != nil {
				return err
			}
			a.negDenied = false
			t.s.log.Info("ledger: balance back within the credit line, deny entry removed", "account", id, "balance", a.balance)
		}
		upd.add(int64(id), a.balance, a.postings, a.negDenied)
	}
	// exact: every account was locked by this transaction.
	err := t.bulkWrite("update accounts", upd, true, func(src string) string {
		return t.updateFrom("accounts", "id", []string{"balance", "postings", "neg_denied"}, src)
	})
	if err != nil {
		return err
	}
	if t.denyChanged {
		t.denyChanged = false
		if err := t.bumpDenyVersion(); err != nil {
			return err
		}
	}
	if err := t.flushStats(); err != nil {
		return err
	}
	return t.flush()
}

// updateFrom is an UPDATE of table's columns set from a row source whose
// columns are key and then set, matched on key:
//
//	WITH v (key, set…) AS (src) UPDATE table SET … FROM v WHERE table.key = v.key
//
// (on PostgreSQL "FROM (src) AS v (key, set…)": a held write goes in a WITH
// clause, where a statement cannot have WITH clauses of its own).
func (t *txn) updateFrom(table, key string, set []string, src string) string {
	cols := key + ", " + strings.Join(set, ", ")
	assign := make([]string, len(set))
	for i, c := range set {
		assign[i] = c + " = v." + c
	}
	if t.pg() {
		// Each row to update is found by an index lookup on its key
		// (see matching), then updated by its row address (ctid): the
		// plain join "WHERE table.key = v.key" is planned as a hash
		// join over a scan of the whole table in a plan cached while
		// the table was small. The rows' accounts are locked, so no
		// other transaction moves a row between the lookup and the
		// update; callers check the number of rows updated (exact).
		return `UPDATE ` + table + ` SET ` + strings.Join(assign, ", ") + `
			FROM (SELECT v.*, k.ctid AS row_ctid FROM (` + src + `) AS v (` + cols + `)
				CROSS JOIN LATERAL (SELECT ctid FROM ` + table + ` WHERE ` + table + `.` + key + ` = v.` + key + ` OFFSET 0) AS k) AS v
			WHERE ` + table + `.ctid = v.row_ctid`
	}
	return `WITH v (` + cols + `) AS (` + src + `) UPDATE ` + table + ` SET ` + strings.Join(assign, ", ") + `
		FROM v WHERE ` + table + `.` + key + ` = v.` + key
}

// bumpDenyVersion moves the deny-list version forward to at least the
// current time in milliseconds and above the highest version a device
// reported applied (followFleetDeny): versions keep increasing across a
// restore from an older backup, so validators that saw a newer list
// before the restore still take the next one.
func (t *txn) bumpDenyVersion() error {
	floor := t.now / int64(time.Millisecond)
	var fleet int64
	switch err := t.queryRow(`SELECT value FROM counters WHERE name = 'deny_fleet_version'`).Scan(&fleet); {
	case errors.Is(err, sql.ErrNoRows): // no device reported one above the ledger's
	case err != nil:
		return fmt.Errorf("ledger: read the fleet's deny-list version: %w", err)
	case fleet >= floor && fleet < math.MaxInt64:
		floor = fleet + 1
	}
	_, err := t.exec("bump deny-list version",
		`UPDATE counters SET value = CASE WHEN value + 1 > $1 THEN value + 1 ELSE $1 END WHERE name = 'deny_version'`,
		floor)
	return err
}

// nextID takes the next value of a counter (account_id, payment_id).
func (t *txn) nextID(counter string) (int64, error) {
	var v int64
	err := t.queryRow(`UPDATE counters SET value = value + 1 WHERE name = $1 RETURNING value`, counter).Scan(&v)
	if err != nil {
		return 0, fmt.Errorf("ledger: next %s: %w", counter, err)
	}
	return v, nil
}

// ErrFileGone is what FileGone's error wraps; every write of the Store
// fails with it too (Unavailable: 503), not only the batches of taps.
var ErrFileGone = errors.New("ledger: ledger file gone")

// FileGone reports, for a SQLite ledger, that its path no longer names
// the file the Store has open (removed, or its directory removed or
// renamed, by an operator's mistake while the server runs): SQLite goes on
// writing to the unlinked file, every commit succeeds, and all of it is
// gone when the process ends. nil while the file is there, and always for
// PostgreSQL.
func (s *Store) FileGone() error {
	if s.file == nil {
		return nil
	}
	info, err := os.Stat(s.path)
	if err == nil && os.SameFile(info, s.file) {
		return nil
	}
	if err == nil {
		err = errors.New("another file is there now")
	}
	return fmt.Errorf("%w: the ledger file %s is not the one this server opened (removed or replaced while running; "+
		"what is committed now is lost when the server stops): %w", ErrFileGone, s.path, err)
}

// Ping checks that the database answers (the health check: no table is
// read) and that a SQLite ledger's file is still there (FileGone).
func (s *Store) Ping(ctx context.Context) error {
	if err := s.FileGone(); err != nil {
		return err
	}
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("ledger: %s not reachable: %w", s.backend, err)
	}
	return nil
}

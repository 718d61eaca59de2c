package ledger

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"
	"time"
)

// migrationFS holds the schema migrations. A migration is NNNN_name.sql,
// the same text for both backends, or a pair NNNN_name.sqlite.sql and
// NNNN_name.postgres.sql where the dialects must differ (triggers).
//
//go:embed migrations/*.sql
var migrationFS embed.FS

type migration struct {
	version int64
	name    string
	sql     string
}

var migrationRE = regexp.MustCompile(`^([0-9]{4})_([a-z0-9_]+?)(\.sqlite|\.postgres)?\.sql$`)

// migrations returns the backend's migrations in version order.
func migrations(b backend) ([]migration, error) {
	entries, err := fs.ReadDir(migrationFS, "migrations")
	if err != nil {
		return nil, err
	}
	byVersion := map[int64]migration{}
	for _, e := range entries {
		m := migrationRE.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("ledger: bad migration file name %q", e.Name())
		}
		if m[3] != "" && m[3] != "."+b.String() {
			continue
		}
		v, _ := strconv.ParseInt(m[1], 10, 64)
		if _, dup := byVersion[v]; dup {
			return nil, fmt.Errorf("ledger: two migrations with version %d", v)
		}
		body, err := migrationFS.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, err
		}
		byVersion[v] = migration{version: v, name: m[2], sql: string(body)}
	}
	var out []migration
	for _, m := range byVersion {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b migration) int { return int(a.version - b.version) })
	for i, m := range out {
		if m.version != int64(i+1) {
			return nil, fmt.Errorf("ledger: migration %d missing for %s", i+1, b)
		}
	}
	return out, nil
}

// migrationLockKey is the first half of the PostgreSQL advisory lock that
// serializes migrations; the second half is a hash of the current schema, so
// ledgers in different schemas migrate independently.
const migrationLockKey = 0x66617265 // "fare"

// migrate applies the pending migrations in one transaction and records
// them in schema_migrations. A database migrated by a newer program (with
// versions this one does not know) is refused with ErrSchemaTooNew.
func (s *Store) migrate(ctx context.Context) error {
	migs, err := migrations(s.backend)
	if err != nil {
		return err
	}
	return s.write(ctx, "migrate", func(t *txn) error {
		ran := 0
		if err := t.xactLock("take migration lock", migrationLockKey); err != nil {
			return err
		}
		if err := t.rawExec("create schema_migrations", `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    BIGINT PRIMARY KEY,
			name       TEXT NOT NULL,
			applied_ns BIGINT NOT NULL)`); err != nil {
			return err
		}
		var current int64
		err := t.tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("ledger: read schema version: %w", err)
		}
		if current == 0 && s.mustExist {
			// Nothing rolled back but the table just made.
			return fmt.Errorf("%w in this %s database: it holds no farego ledger (no migrations applied)", ErrNoLedger, s.backend)
		}
		if latest := migs[len(migs)-1].version; current > latest {
			// Said with what to do: an operator rolling back finds this
			// at every start of every instance (an operator's upgrade
			// review: the bare numbers named neither the migration nor a
			// way back).
			var name string
			var applied int64
			if err := t.tx.QueryRowContext(ctx, `SELECT name, applied_ns FROM schema_migrations WHERE version = $1`,
				current).Scan(&name, &applied); err != nil {
				return fmt.Errorf("ledger: read schema version %d: %w", current, err)
			}
			return fmt.Errorf("%w: database at version %d (%s, applied %s), this program knows up to %d: "+
				"run the farego-settlement that migrated it, or a newer one; migrations only go forward, "+
				"so going back to this version takes the backup made before the upgrade "+
				"(see the README's restore procedure)",
				ErrSchemaTooNew, current, name, time.Unix(0, applied).UTC().Format(time.RFC3339), latest)
		}
		// A database without a ledger (current 0) is made, not migrated:
		// init opens with NoMigrate too, and MustExist refuses it first
		// for the other commands.
		if latest := migs[len(migs)-1].version; current > 0 && current < latest && s.noMigrate {
			// Said with what to do: this is the operator trying a new
			// build's tool before (or without) restarting the server.
			var name string
			if err := t.tx.QueryRowContext(ctx, `SELECT name FROM schema_migrations WHERE version = $1`,
				current).Scan(&name); err != nil {
				return fmt.Errorf("ledger: read schema version %d: %w", current, err)
			}
			return fmt.Errorf("%w: database at version %d (%s), this program's is %d: this command does not "+
				"migrate it; the server of this version does at its start (farego-settlement run: "+
				"take a backup first, see the README's Upgrading), or use the farego-settlement that serves it now",
				ErrSchemaTooOld, current, name, latest)
		}
		if err := s.checkKeySetBeforeMigrating(t, migs, current); err != nil {
			return err
		}
		for _, m := range migs {
			if m.version <= current {
				continue
			}
			if err := t.rawExec(fmt.Sprintf("migration %d (%s)", m.version, m.name), m.sql); err != nil {
				return err
			}
			if err := t.rawExec("record migration",
				`INSERT INTO schema_migrations (version, name, applied_ns) VALUES ($1, $2, $3)`,
				m.version, m.name, t.now); err != nil {
				return err
			}
			s.log.Info("ledger: migrated", logKeyBackend, s.backend.String(), logKeyMigration, m.name, logKeyVersion, m.version)
			ran++
		}
		s.migrated = ran
		if ran > 0 && current > 0 {
			// Taps a release before put on another service day
			// (redayStored), with the migrations: all or nothing.
			return t.redayStored()
		}
		return nil
	})
}

// checkKeySetBeforeMigrating refuses (ErrOtherKeys) to migrate a ledger
// bound to another key directory than Options.KeySet, changing nothing:
// the server refused such a ledger only once it was open, migrated (see
// Options.KeySet). A ledger bound to none (from before the binding) is
// migrated, and bound by the server after the open.
func (s *Store) checkKeySetBeforeMigrating(t *txn, migs []migration, current int64) error {
	if s.keySet == "" || current == 0 || current >= migs[len(migs)-1].version {
		return nil
	}
	// ledger_settings, where the binding is kept, came with a migration:
	// a ledger older than it holds no binding.
	if i := slices.IndexFunc(migs, func(m migration) bool { return m.name == "ledger_currency" }); i < 0 || current < migs[i].version {
		return nil
	}
	if err := t.otherKeys(s.keySet); err != nil {
		return fmt.Errorf("%w; not migrated, the ledger is unchanged", err)
	}
	return nil
}

// SchemaVersion returns the version of the newest migration applied.
func (s *Store) SchemaVersion(ctx context.Context) (int64, error) {
	var v int64
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("ledger: schema version: %w", err)
	}
	return v, nil
}

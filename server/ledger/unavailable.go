package ledger

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sys/unix"
	"modernc.org/sqlite"
)

// diskFull names the SQLite ledger's directory and what it has free in a
// write refused for a full disk: SQLite's own "database or disk is full
// (13)" named neither, and its -wal grows to some 40 MB between
// checkpoints on a disk that has room for the ledger alone (an
// operator's drill). Nothing of the refused write was kept.
func (s *Store) diskFull(err error) error {
	var se *sqlite.Error
	if s.path == "" || !errors.As(err, &se) || se.Code()&0xff != 13 {
		return err
	}
	dir := filepath.Dir(s.path)
	free := "?"
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) == nil {
		free = fmt.Sprintf("%d MiB", st.Bavail*uint64(st.Bsize)>>20)
	}
	return fmt.Errorf("%w (the disk of %s is full, %s free: the ledger and its -wal, which grows to some 40 MB "+
		"between checkpoints, need room; nothing of this write was kept: free space there, and validators send their taps again "+
		"by themselves)", err, dir, free)
}

// Unavailable reports whether err is the database refusing writes for
// now rather than a fault of the request or a bug: a SQLite disk full,
// read-only file or I/O error, PostgreSQL out of disk or resources, read
// only, shutting down or its connection gone; a SQLite ledger file removed
// or replaced under the server (ErrFileGone). The API answers 503 to it.
func Unavailable(err error) bool {
	if errors.Is(err, ErrFileGone) {
		return true
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case 8, 10, 13, 14: // SQLITE_READONLY, SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN
			return true
		}
		return false
	}
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		// insufficient resources (disk full), connection exception,
		// operator intervention (shutdown), read-only transaction
		return strings.HasPrefix(pg.Code, "53") || strings.HasPrefix(pg.Code, "08") || strings.HasPrefix(pg.Code, "57P") ||
			pg.Code == "25006"
	}
	return errors.Is(err, driver.ErrBadConn)
}

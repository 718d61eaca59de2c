package ledger

import (
	"database/sql/driver"
	"errors"
	"fmt"
	"os"
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
	return fmt.Errorf("%w (the disk of %s is full, %s free: the ledger and its -wal, which grows to some 40 MB "+
		"between checkpoints, need room; nothing of this write was kept: free space there, and validators send their taps again "+
		"by themselves)", err, dir, freeSpace(dir))
}

// freeSpace says what dir's disk has free for this user, in MiB ("?"
// when statfs fails).
func freeSpace(dir string) string {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) != nil {
		return "?"
	}
	return fmt.Sprintf("%d MiB", st.Bavail*uint64(st.Bsize)>>20)
}

// openNoRoom says that the SQLite ledger's disk is full when opening it
// failed for that: SQLite cannot make or grow the -shm and -wal beside
// the file and said only "disk I/O error (4874)" or "unable to open
// database file (14)", and a server started again on a full disk (a
// reboot, an operator's restart) named neither the disk nor the cause
// (an operator's drill on a full tmpfs). The disk is tried directly: a
// small file made and written in the ledger's directory.
func (s *Store) openNoRoom(err error) error {
	var se *sqlite.Error
	if s.path == "" || !errors.As(err, &se) {
		return err
	}
	switch se.Code() & 0xff {
	case 10, 13, 14: // SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN
	default:
		return err
	}
	dir := filepath.Dir(s.path)
	if !noRoom(dir) {
		return err
	}
	return fmt.Errorf("%w (the disk of %s is full, %s free: SQLite cannot make or grow the ledger's -shm and -wal there; "+
		"nothing was changed: free space there, some 40 MB for the -wal, and start the server again; the shipped unit "+
		"does every 2 s)", err, dir, freeSpace(dir))
}

// noRoom reports whether dir's disk refuses a new 64 KiB file for want
// of space (ENOSPC); the file is removed.
func noRoom(dir string) bool {
	f, err := os.CreateTemp(dir, ".farego-room-*")
	if err != nil {
		return errors.Is(err, unix.ENOSPC)
	}
	defer os.Remove(f.Name())
	_, err = f.Write(make([]byte, 64<<10))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return errors.Is(err, unix.ENOSPC)
}

// Unavailable reports whether err is the database refusing writes for
// now rather than a fault of the request or a bug: a SQLite disk full,
// read-only file or I/O error, PostgreSQL out of disk or resources, read
// only, shutting down, not reachable or its connection gone; a SQLite ledger file removed
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
		// insufficient resources (disk full, too many clients), connection
		// exception, operator intervention (shutdown), read-only transaction
		return strings.HasPrefix(pg.Code, "53") || strings.HasPrefix(pg.Code, "08") || strings.HasPrefix(pg.Code, "57P") ||
			pg.Code == "25006"
	}
	// PostgreSQL stopped or out of reach: no connection could be made
	// (refused, reset, timed out: a PgError inside, a wrong password say,
	// is decided above), or a pooled one it closed was used. Both answered
	// 500 internal, logged at every request (an operator's drill).
	var ce *pgconn.ConnectError
	return errors.As(err, &ce) || errors.Is(err, pgconn.ErrConnClosed) || errors.Is(err, driver.ErrBadConn)
}

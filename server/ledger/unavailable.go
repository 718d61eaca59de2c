package ledger

import (
	"database/sql/driver"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
)

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

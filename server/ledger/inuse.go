package ledger

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ErrInUse is returned by Serve and Exclusive when the ledger is held the
// other way: Exclusive while a settlement server serves the ledger, Serve
// while a step that needs the ledger alone (Restored) runs.
var ErrInUse = errors.New("ledger: in use")

// servingLockKey is the first half of the PostgreSQL advisory lock servers
// hold shared while they serve a ledger; the second half is a hash of the
// current schema, as migrationLockKey's.
const servingLockKey = 0x66617266 // "farf"

// LockFileSuffix names the file beside a SQLite ledger that servers hold a
// shared lock on (flock) while they serve it. It is not the database file
// itself: closing any descriptor of that file in a process would drop the
// POSIX locks SQLite holds on it.
const LockFileSuffix = "-serving"

// holdRecheck is how often a PostgreSQL hold checks its connection, and
// takes the lock again on a new one if the connection was lost (a
// variable for the tests).
var holdRecheck = 5 * time.Second

// hold is a Store's lock on its ledger (see Serve and Exclusive).
type hold struct {
	release func()
	// kick makes a PostgreSQL hold check its connection now (tests); nil
	// for SQLite's.
	kick chan struct{}
	// shared: another server served the ledger already when this hold
	// was taken (SQLite's; PostgreSQL's instances share by design).
	shared bool
}

// Lost is closed when the Store lost its serving lock to 'farego-settlement
// restored' (its PostgreSQL session ended and restored took the ledger
// before the lock could be taken again): the Store then refuses every
// write, and the server stops (it must start afresh after the restore).
func (s *Store) Lost() <-chan struct{} { return s.lostCh }

// loseHold marks the serving lock lost (see Lost).
func (s *Store) loseHold(err error) {
	s.lost = fmt.Errorf("ledger: the serving lock was lost and another holds the ledger (%w): restart the server once 'farego-settlement restored' is done", err)
	close(s.lostCh)
	s.log.Error(s.lost.Error())
}

// lostErr is the error a write returns once the serving lock is lost.
func (s *Store) lostErr() error {
	select {
	case <-s.lostCh:
		return s.lost
	default:
		return nil
	}
}

// Serve marks the ledger as served by this Store until it is closed: several
// servers may serve one ledger, and Exclusive in any process is refused
// meanwhile. It fails with ErrInUse while Exclusive holds the ledger.
func (s *Store) Serve(ctx context.Context) error { return s.take(ctx, false) }

// Exclusive takes the ledger for a step that must run with no server on it
// (Restored) until the Store is closed. It fails with ErrInUse while a
// server serves the ledger. On PostgreSQL the lock is a session advisory
// lock (a connection pooler in transaction mode would not keep it).
func (s *Store) Exclusive(ctx context.Context) error { return s.take(ctx, true) }

func (s *Store) take(ctx context.Context, exclusive bool) error {
	s.holdMu.Lock()
	defer s.holdMu.Unlock()
	if s.hold != nil {
		return fmt.Errorf("ledger: the ledger is already held by this store")
	}
	var h *hold
	var err error
	if s.backend == backendSQLite {
		h, err = flockHold(s.path+LockFileSuffix, exclusive)
	} else {
		h, err = s.advisoryHold(ctx, exclusive)
	}
	if err != nil {
		return err
	}
	if h.shared {
		// Several servers on one SQLite file work (one machine), but are
		// more often a mistake: a systemd unit and a copy started by hand.
		s.log.Warn("ledger: another settlement server is serving this SQLite ledger already; several on one file work on one machine, "+
			"but if this one was not meant to run, stop it (PostgreSQL is the ledger for several instances)", "lock", s.path+LockFileSuffix)
	}
	s.hold = h
	return nil
}

// dropHold releases the Store's hold, if any (Close).
func (s *Store) dropHold() {
	s.holdMu.Lock()
	defer s.holdMu.Unlock()
	if s.hold != nil {
		s.hold.release()
		s.hold = nil
	}
}

// SQLiteServed reports whether a settlement server may hold the SQLite
// ledger at path (its lock file is locked, or cannot be opened or locked
// to tell: one the server's user made 0600, restored run as another),
// without opening the ledger: opening it plays a write-ahead log beside
// it, and closing it writes that into the file.
func SQLiteServed(path string) bool {
	h, err := flockHold(path+LockFileSuffix, true)
	if err != nil {
		return true
	}
	h.release()
	return false
}

func inUse(exclusive bool) error {
	if exclusive {
		return fmt.Errorf("%w: a settlement server is serving this ledger (stop every instance first)", ErrInUse)
	}
	return fmt.Errorf("%w: 'farego-settlement restored' is running on this ledger (start the server when it is done)", ErrInUse)
}

func flockHold(path string, exclusive bool) (*hold, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, fmt.Errorf("ledger: open the lock file: %w (made by another user, root say: chown it to the ledger file's owner, the user the server runs as)", err)
		}
		return nil, fmt.Errorf("ledger: open the lock file: %w", err)
	}
	if err := sameOwner(f, strings.TrimSuffix(path, LockFileSuffix)); err != nil {
		f.Close()
		return nil, err
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	if err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, inUse(exclusive)
		}
		return nil, fmt.Errorf("ledger: lock %s: %w", path, err)
	}
	return &hold{release: func() { f.Close() }, shared: !exclusive && flocks(f) > 1}, nil
}

// sameOwner gives f, run as root, the owner of the ledger file beside it,
// as SQLite does its -wal and -shm: a lock file root made (a server or
// 'restored' started by hand, as root, on a service's data directory) is
// one the service, its user 0600, cannot open, and it did not start
// ("open the lock file: permission denied"). Others cannot chown, and
// need not: their files are theirs.
func sameOwner(f *os.File, ledger string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	li, err := os.Stat(ledger)
	if err != nil {
		return nil // no ledger file to follow (Open makes it first)
	}
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("ledger: lock file: %w", err)
	}
	want, ok1 := li.Sys().(*syscall.Stat_t)
	got, ok2 := fi.Sys().(*syscall.Stat_t)
	if !ok1 || !ok2 || (want.Uid == got.Uid && want.Gid == got.Gid) {
		return nil
	}
	// Only the lock file itself: the data directory is the service's
	// user's, who could put there a symbolic or hard link to any file
	// (/etc/shadow), which root would then give that user.
	if lfi, err := os.Lstat(f.Name()); err != nil || !lfi.Mode().IsRegular() || !os.SameFile(lfi, fi) || got.Nlink != 1 {
		return nil
	}
	if err := f.Chown(int(want.Uid), int(want.Gid)); err != nil {
		return fmt.Errorf("ledger: give the lock file %s the ledger file's owner: %w", f.Name(), err)
	}
	return nil
}

// flocks counts the flock locks held on f's file, this one's included,
// from /proc/locks (Linux; 0 where it cannot be read). Probing with an
// exclusive lock first would make a server starting at that instant
// beside it fail as if restored held the ledger.
func flocks(f *os.File) int {
	fi, err := f.Stat()
	st, ok := fi.Sys().(*syscall.Stat_t)
	if err != nil || !ok {
		return 0
	}
	locks, err := os.ReadFile("/proc/locks")
	if err != nil {
		return 0
	}
	// "1: FLOCK  ADVISORY  READ  12345 fe:00:9978072 0 EOF": the file as
	// major:minor:inode, the device numbers in hex.
	dev := uint64(st.Dev)
	id := fmt.Sprintf("%02x:%02x:%d", unix.Major(dev), unix.Minor(dev), st.Ino)
	n := 0
	for line := range strings.Lines(string(locks)) {
		if f := strings.Fields(line); len(f) >= 6 && f[1] == "FLOCK" && f[5] == id {
			n++
		}
	}
	return n
}

// advisoryHold takes the advisory lock on a connection of its own, kept
// until release; a connection lost (the database restarted) is replaced
// and the lock taken again on it.
func (s *Store) advisoryHold(ctx context.Context, exclusive bool) (*hold, error) {
	fn := "pg_try_advisory_lock_shared"
	if exclusive {
		fn = "pg_try_advisory_lock"
	}
	query := `SELECT ` + fn + `($1, hashtext(COALESCE(current_schema(), '')))`
	unlock := `SELECT pg_advisory_unlock_shared($1, hashtext(COALESCE(current_schema(), '')))`
	if exclusive {
		unlock = `SELECT pg_advisory_unlock($1, hashtext(COALESCE(current_schema(), '')))`
	}
	lock := func(ctx context.Context) (*sql.Conn, error) {
		conn, err := s.db.Conn(ctx)
		if err != nil {
			return nil, fmt.Errorf("ledger: connect for the serving lock: %w", err)
		}
		var ok bool
		if err := conn.QueryRowContext(ctx, query, servingLockKey).Scan(&ok); err != nil {
			conn.Close()
			return nil, fmt.Errorf("ledger: take the serving lock: %w", err)
		}
		if !ok {
			conn.Close()
			return nil, inUse(exclusive)
		}
		return conn, nil
	}
	conn, err := lock(ctx)
	if err != nil {
		return nil, err
	}
	every := holdRecheck // read once: the goroutine outlives a test's change of it
	kick := make(chan struct{}, 1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			if conn == nil {
				return
			}
			// Released now, not when the pool ends the session (the
			// connection goes back to the pool, the lock with it).
			ctx, cancel := context.WithTimeout(context.Background(), every)
			defer cancel()
			var ok bool
			if err := conn.QueryRowContext(ctx, unlock, servingLockKey).Scan(&ok); err != nil || !ok {
				_ = conn.Raw(func(any) error { return driver.ErrBadConn })
			}
			conn.Close()
		}()
		tick := time.NewTicker(every)
		defer tick.Stop()
		lost, failures := false, 0 // since the lock's connection was lost
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			case <-kick:
			}
			cctx, cancel := context.WithTimeout(context.Background(), every)
			if conn != nil && conn.PingContext(cctx) != nil {
				// Gone with its session: the pool must not keep it.
				_ = conn.Raw(func(any) error { return driver.ErrBadConn })
				conn.Close()
				conn = nil
				s.log.Warn("ledger: the serving lock's connection was lost; taking the lock again")
				lost, failures = true, 0
			}
			if conn == nil {
				c, err := lock(cctx)
				switch {
				case err == nil:
					conn = c
					if lost {
						s.log.Info("ledger: serving lock taken again", "failures", failures)
					}
					lost, failures = false, 0
				case errors.Is(err, ErrInUse) && !exclusive:
					// restored took the ledger in the meantime: this
					// Store must not write beside it.
					s.loseHold(err)
					cancel()
					return
				default:
					// Once an outage, not every recheck: the database
					// may be away for minutes.
					failures++
					if failures == 1 {
						s.log.Warn("ledger: could not take the serving lock again; retrying", "err", err, "every", every.String())
					} else {
						s.log.Debug("ledger: could not take the serving lock again", "failures", failures, "err", err)
					}
				}
			}
			cancel()
		}
	}()
	return &hold{release: func() { close(stop); wg.Wait() }, kick: kick}, nil
}

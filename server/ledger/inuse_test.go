package ledger

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestRestoredRefusedWhileServed: 'farego-settlement restored' must run
// with no server on the ledger (a server started before it keeps serving
// without the restore window, and hands out ids the restore moves past);
// it used to run beside one without a word. Servers hold the ledger
// shared, so several serve one ledger; Exclusive is refused while any
// does, and a server does not start while Exclusive holds it. Closing
// releases either.
func TestRestoredRefusedWhileServed(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		open := func() *Store { return openClosable(t, db) }
		a, b, c := open(), open(), open()
		if err := a.Serve(ctx); err != nil {
			t.Fatalf("first server: %v", err)
		}
		if err := b.Serve(ctx); err != nil {
			t.Fatalf("a second server beside it: %v", err)
		}
		if err := c.Exclusive(ctx); !errors.Is(err, ErrInUse) {
			t.Fatalf("Exclusive while two serve: %v; want ErrInUse", err)
		}
		a.Close()
		if err := c.Exclusive(ctx); !errors.Is(err, ErrInUse) {
			t.Fatalf("Exclusive while one serves: %v; want ErrInUse", err)
		}
		b.Close()
		if err := c.Exclusive(ctx); err != nil {
			t.Fatalf("Exclusive once no server runs: %v", err)
		}
		d := open()
		if err := d.Serve(ctx); !errors.Is(err, ErrInUse) {
			t.Fatalf("a server while Exclusive holds the ledger: %v; want ErrInUse", err)
		}
		c.Close()
		if err := d.Serve(ctx); err != nil {
			t.Fatalf("a server once Exclusive released: %v", err)
		}
	})
}

// A server's PostgreSQL session ends under it (the database restarted, a
// connection killed): its hold takes the lock again on a new connection.
// Checked by the holder's backend: a new one, not the one killed (whose
// lock outlives it for a moment, so "Exclusive is refused" alone could be
// the old lock).
func TestServingLockTakenAgain(t *testing.T) {
	db := newPostgresDB(t)
	// Restored after the stores are closed (cleanups run last first).
	t.Cleanup(func(d time.Duration) func() { return func() { holdRecheck = d } }(holdRecheck))
	holdRecheck = 50 * time.Millisecond
	srv, other := openClosable(t, db), openClosable(t, db)
	if err := srv.Serve(context.Background()); err != nil {
		t.Fatal(err)
	}
	killed := killServingSession(t, other)
	deadline := time.Now().Add(10 * time.Second)
	for servingHolder(t, other) == killed || servingHolder(t, other) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the serving lock was not taken again after its session ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := other.Exclusive(context.Background()); !errors.Is(err, ErrInUse) {
		t.Errorf("Exclusive after the lock was taken again: %v; want ErrInUse", err)
	}
	select {
	case <-srv.Lost():
		t.Error("the server's store says its lock is lost")
	default:
	}
}

// The server's session ends and restored takes the ledger before the
// server's hold could take its lock again: the server's store refuses
// every write from then on and says so (Lost), and the server stops. It
// went on serving, unlocked, beside restored (attack review).
func TestServingLockLostToRestored(t *testing.T) {
	db := newPostgresDB(t)
	t.Cleanup(func(d time.Duration) func() { return func() { holdRecheck = d } }(holdRecheck))
	holdRecheck = time.Hour // checked only when kicked
	ctx := context.Background()
	srv, restorer := openClosable(t, db), openClosable(t, db)
	if err := srv.Serve(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := srv.CreateAccount(ctx, AccountSpec{}); err != nil {
		t.Fatal(err)
	}
	killServingSession(t, restorer)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := restorer.Exclusive(ctx)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrInUse) || time.Now().After(deadline) {
			t.Fatalf("restored could not take the ledger after the server's session ended: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	srv.hold.kick <- struct{}{}
	select {
	case <-srv.Lost():
	case <-time.After(10 * time.Second):
		t.Fatal("the server's store did not notice restored holds the ledger")
	}
	if _, err := srv.CreateAccount(ctx, AccountSpec{}); err == nil || !errors.Is(err, ErrInUse) {
		t.Errorf("a write after the lock was lost: %v; want refused", err)
	}
	if _, _, err := restorer.Restored(ctx, 0, "test"); err != nil {
		t.Errorf("restored beside the stopped server: %v", err)
	}
}

// killServingSession ends the session holding the serving lock, from
// another store, and returns its backend's pid.
func killServingSession(t *testing.T, from *Store) int {
	t.Helper()
	pid := servingHolder(t, from)
	var ok bool
	if err := from.db.QueryRowContext(context.Background(), `SELECT pg_terminate_backend($1)`, pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("terminating the serving session %d: %t, %v", pid, ok, err)
	}
	return pid
}

// servingHolder returns the pid of the backend holding the serving lock of this
// schema, or 0.
func servingHolder(t *testing.T, from *Store) int {
	t.Helper()
	var pid int
	err := from.db.QueryRowContext(context.Background(), `SELECT COALESCE(MIN(pid), 0) FROM pg_locks
		WHERE locktype = 'advisory' AND classid = $1 AND objid = hashtext(current_schema())::oid AND granted`, servingLockKey).Scan(&pid)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// openClosable opens a Store the test may close before its end (db.open's
// cleanup checks the invariants on it).
func openClosable(t *testing.T, db *testDB) *Store {
	t.Helper()
	s, err := Open(context.Background(), db.dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestSecondSQLiteServerWarned: a second server on one SQLite ledger starts
// (several on one file work on one machine) and says so in its log; the
// first says nothing. An operator whose systemd unit and a copy started by
// hand both served the file had no word of it.
func TestSecondSQLiteServerWarned(t *testing.T) {
	db := newDB(t, "sqlite")
	ctx := context.Background()
	open := func(log *bytes.Buffer) *Store {
		s, err := Open(ctx, db.dsn, &Options{Logger: slog.New(slog.NewTextHandler(log, nil))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	var first, second bytes.Buffer
	a, b := open(&first), open(&second)
	if err := a.Serve(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Serve(ctx); err != nil {
		t.Fatalf("a second server beside it: %v", err)
	}
	const warning = "another settlement server is serving this SQLite ledger"
	if strings.Contains(first.String(), warning) {
		t.Errorf("the first server warned of another:\n%s", first.String())
	}
	if !strings.Contains(second.String(), warning) {
		t.Errorf("the second server said nothing of the first:\n%s", second.String())
	}
	// Once the first is gone, a server alone says nothing.
	a.Close()
	b.Close()
	var third bytes.Buffer
	if err := open(&third).Serve(ctx); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(third.String(), warning) {
		t.Errorf("a server alone warned of another:\n%s", third.String())
	}
}

// TestServingLockOutageLoggedOnce: the database out of reach for a while
// (every connection cut, new ones refused). The server warned "could not
// take the serving lock again" at every recheck, every 5 s for as long as
// the outage lasted, and said nothing when the lock was taken again. It
// warns once and logs the recovery.
func TestServingLockOutageLoggedOnce(t *testing.T) {
	db := newPostgresDB(t)
	t.Cleanup(func(d time.Duration) func() { return func() { holdRecheck = d } }(holdRecheck))
	holdRecheck = 50 * time.Millisecond
	ctx := context.Background()
	u, err := url.Parse(db.dsn)
	if err != nil {
		t.Fatal(err)
	}
	p := startCutProxy(t, u.Host)
	u.Host = p.addr
	var logs lockedBuffer
	srv, err := Open(ctx, u.String(), &Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	if err := srv.Serve(ctx); err != nil {
		t.Fatal(err)
	}
	p.cut(true)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "could not take the serving lock again") {
		if time.Now().After(deadline) {
			t.Fatalf("the lost lock was not noticed:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(10 * holdRecheck) // more rechecks fail
	p.cut(false)
	for !strings.Contains(logs.String(), "serving lock taken again") {
		if time.Now().After(deadline) {
			t.Fatalf("the lock was not taken again, or not logged:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := strings.Count(logs.String(), "could not take the serving lock again"); n != 1 {
		t.Errorf("the failure logged %d times, want once an outage:\n%s", n, logs.String())
	}
	if !regexp.MustCompile(`serving lock taken again" failures=([2-9]|\d\d)`).MatchString(logs.String()) {
		t.Errorf("the recovery does not count the failed attempts:\n%s", logs.String())
	}
}

// cutProxy forwards TCP connections to a database; cut(true) closes them
// all and refuses new ones until cut(false).
type cutProxy struct {
	addr string

	mu    sync.Mutex
	down  bool
	conns []net.Conn
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{addr: l.Addr().String()}
	t.Cleanup(func() { l.Close(); p.cut(true) })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			down := p.down
			p.mu.Unlock()
			if down {
				c.Close()
				continue
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	return p
}

func (p *cutProxy) cut(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

// lockedBuffer is a log destination safe for concurrent writes.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestLockFileOwnerFollowsLedger: a server (or 'restored') run as root on
// a service's data directory made the lock file root's, 0600, and the
// service, its user, no longer started ("open the lock file: permission
// denied"), while SQLite gives its own -wal and -shm the ledger file's
// owner. Run as root, the lock file takes the ledger file's owner, also
// one root made before.
func TestLockFileOwnerFollowsLedger(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: only root makes files another user owns")
	}
	db := newSQLiteDB(t)
	path := strings.TrimPrefix(db.dsn, "sqlite:")
	openClosable(t, db).Close()   // the ledger file, made by init
	const uid, gid = 65534, 65534 // the service's user
	if err := os.Chown(path, uid, gid); err != nil {
		t.Fatal(err)
	}
	owner := func() (uint32, uint32) {
		t.Helper()
		fi, err := os.Stat(path + LockFileSuffix)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		return st.Uid, st.Gid
	}
	for _, how := range []string{"made by this server", "root's already"} {
		if how == "root's already" {
			if err := os.Chown(path+LockFileSuffix, 0, 0); err != nil {
				t.Fatal(err)
			}
		} else if err := os.Remove(path + LockFileSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		s := openClosable(t, db)
		if err := s.Serve(context.Background()); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if u, g := owner(); u != uid || g != gid {
			t.Errorf("%s: the lock file is %d:%d, the ledger file %d:%d: the service cannot open it", how, u, g, uid, gid)
		}
	}
	// restored's check, as root, on a data directory with no lock file yet.
	if err := os.Remove(path + LockFileSuffix); err != nil {
		t.Fatal(err)
	}
	if SQLiteServed(path) {
		t.Fatal("SQLiteServed with no server")
	}
	if u, g := owner(); u != uid || g != gid {
		t.Errorf("after SQLiteServed: the lock file is %d:%d, want %d:%d", u, g, uid, gid)
	}
}

// TestLockFileOwnerNotGivenThroughALink: root following the ledger file's
// owner gives the lock file only, never a file a link in its place leads
// to: the data directory is the service's user's, who could put a link to
// /etc/shadow there and have root, running a server or restored on it,
// give it that user.
func TestLockFileOwnerNotGivenThroughALink(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: only root makes files another user owns")
	}
	for _, link := range []string{"symbolic", "hard"} {
		t.Run(link, func(t *testing.T) {
			db := newSQLiteDB(t)
			path := strings.TrimPrefix(db.dsn, "sqlite:")
			openClosable(t, db).Close()
			if err := os.Chown(path, 65534, 65534); err != nil { // the service's user's
				t.Fatal(err)
			}
			victim := filepath.Join(t.TempDir(), "shadow")
			if err := os.WriteFile(victim, []byte("root's\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(path + LockFileSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			mk := os.Symlink
			if link == "hard" {
				mk = os.Link
			}
			if err := mk(victim, path+LockFileSuffix); err != nil {
				t.Fatal(err)
			}
			s := openClosable(t, db)
			if err := s.Serve(context.Background()); err != nil {
				t.Fatal(err)
			}
			s.Close()
			SQLiteServed(path)
			fi, err := os.Stat(victim)
			if err != nil {
				t.Fatal(err)
			}
			if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 {
				t.Errorf("the file a %s link in the lock file's place leads to was given to %d:%d", link, st.Uid, st.Gid)
			}
		})
	}
}

package powercut

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	_ "modernc.org/sqlite"
)

func TestMain(m *testing.M) {
	Main()
	os.Exit(m.Run())
}

// helpers: each fails the test on error.

func write(t *testing.T, path string, data []byte, sync bool) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if sync {
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
}

func syncDir(t *testing.T, dir string) {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
}

func cut(t *testing.T, d *Disk, tear bool) CutReport {
	t.Helper()
	r, err := d.Cut(tear)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// content returns a file's bytes, or nil if it does not exist.
func content(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	if b == nil {
		b = []byte{}
	}
	return b
}

// durableFile makes a file with data whose contents and name are durable.
func durableFile(t *testing.T, d *Disk, name string, data []byte) string {
	t.Helper()
	p := d.Path(name)
	write(t, p, data, true)
	syncDir(t, filepath.Dir(p))
	return p
}

func TestUnsyncedWriteIsLost(t *testing.T) {
	d := Mount(t, nil)
	p := durableFile(t, d, "f", []byte("old contents"))
	write(t, p, []byte("NEW"), false)
	if got := content(t, p); string(got) != "NEW contents" {
		t.Fatalf("before the cut: %q", got)
	}
	r := cut(t, d, false)
	if got := content(t, p); string(got) != "old contents" {
		t.Errorf("after the cut: %q, want the synced %q", got, "old contents")
	}
	if r.FilesRolledBack != 1 || r.PagesDiscarded != 1 {
		t.Errorf("report %+v: want 1 file, 1 page rolled back", r)
	}
}

func TestSyncedWriteIsKept(t *testing.T) {
	d := Mount(t, nil)
	p := durableFile(t, d, "f", []byte("old contents"))
	write(t, p, []byte("NEW"), true)
	r := cut(t, d, true)
	if got := content(t, p); string(got) != "NEW contents" {
		t.Errorf("after the cut: %q", got)
	}
	if r.FilesRolledBack != 0 || r.Torn {
		t.Errorf("report %+v: nothing was volatile", r)
	}
}

func TestNewFileIsLostWithoutDirectorySync(t *testing.T) {
	d := Mount(t, nil)
	write(t, d.Path("lost"), []byte("fsynced, but its name is not"), true)
	write(t, d.Path("kept"), []byte("fsynced, and its directory"), true)
	syncDir(t, d.Dir())
	write(t, d.Path("late"), []byte("created after the directory fsync"), true)
	r := cut(t, d, false)
	if got := content(t, d.Path("kept")); string(got) != "fsynced, and its directory" {
		t.Errorf("kept: %q", got)
	}
	// "lost" was created before the directory fsync, so it is there.
	if got := content(t, d.Path("lost")); string(got) != "fsynced, but its name is not" {
		t.Errorf("lost (named before the directory fsync): %q", got)
	}
	if got := content(t, d.Path("late")); got != nil {
		t.Errorf("late: %q, want no file: its directory was not fsynced after it was made", got)
	}
	if r.EntriesDiscarded != 1 || r.FilesRemoved != 1 {
		t.Errorf("report %+v: want 1 entry discarded, 1 file removed", r)
	}
}

func TestNewDirectoryNeedsItsParentSynced(t *testing.T) {
	d := Mount(t, nil)
	sub := d.Path("a", "b")
	if err := os.MkdirAll(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(sub, "f"), []byte("data"), true)
	syncDir(t, sub) // f is named in b, but b is not named in a, nor a in the root
	cut(t, d, false)
	if _, err := os.Stat(d.Path("a")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a survived without a root fsync: %v", err)
	}

	if err := os.MkdirAll(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(sub, "f"), []byte("data"), true)
	for _, dir := range []string{sub, d.Path("a"), d.Dir()} {
		syncDir(t, dir)
	}
	cut(t, d, false)
	if got := content(t, filepath.Join(sub, "f")); string(got) != "data" {
		t.Errorf("a/b/f after syncing every level: %q", got)
	}
}

func TestRenameIsLostWithoutDirectorySync(t *testing.T) {
	for _, synced := range []bool{false, true} {
		d := Mount(t, nil)
		p := durableFile(t, d, "config", []byte("version 1"))
		tmp := d.Path("config.tmp")
		write(t, tmp, []byte("version 2"), true)
		if err := os.Rename(tmp, p); err != nil {
			t.Fatal(err)
		}
		if synced {
			syncDir(t, d.Dir())
		}
		cut(t, d, false)
		want := "version 1"
		if synced {
			want = "version 2"
		}
		if got := content(t, p); string(got) != want {
			t.Errorf("directory synced %t: config is %q, want %q", synced, got, want)
		}
		if got := content(t, tmp); got != nil {
			t.Errorf("directory synced %t: config.tmp is back: %q", synced, got)
		}
	}
}

func TestUnlinkIsLostWithoutDirectorySync(t *testing.T) {
	for _, synced := range []bool{false, true} {
		d := Mount(t, nil)
		p := durableFile(t, d, "f", []byte("still here"))
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		if synced {
			syncDir(t, d.Dir())
		}
		cut(t, d, false)
		got := content(t, p)
		if synced && got != nil {
			t.Errorf("unlinked and directory synced, but the file is back: %q", got)
		}
		if !synced && string(got) != "still here" {
			t.Errorf("unlinked without a directory sync: %q, want the file back", got)
		}
	}
}

func TestTornPage(t *testing.T) {
	d := Mount(t, nil)
	old := bytes.Repeat([]byte{'a'}, 2*pageSize)
	p := durableFile(t, d, "f", old)
	write(t, p, bytes.Repeat([]byte{'b'}, pageSize), false)
	r := cut(t, d, true)
	got := content(t, p)
	if len(got) != len(old) {
		t.Fatalf("size %d after the cut, want %d", len(got), len(old))
	}
	k := bytes.IndexByte(got, 'a')
	if !r.Torn || r.TornPath != "/f" || k != r.TornBytes || k <= 0 || k >= pageSize {
		t.Fatalf("report %+v; first old byte at %d: want a page torn inside", r, k)
	}
	if !bytes.Equal(got[:k], bytes.Repeat([]byte{'b'}, k)) || !bytes.Equal(got[k:], old[k:]) {
		t.Errorf("the torn page is not new bytes then old ones")
	}
}

func TestSizeChangesAreVolatile(t *testing.T) {
	d := Mount(t, nil)
	long := bytes.Repeat([]byte("0123456789"), 1000)
	p := durableFile(t, d, "shrunk", long)
	if err := os.Truncate(p, 100); err != nil {
		t.Fatal(err)
	}
	q := durableFile(t, d, "grown", []byte("short"))
	f, err := os.OpenFile(q, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(bytes.Repeat([]byte("x"), 3*pageSize))
	f.Close()
	r := cut(t, d, false)
	if got := content(t, p); !bytes.Equal(got, long) {
		t.Errorf("shrunk: %d bytes after the cut, want the synced %d", len(got), len(long))
	}
	if got := content(t, q); string(got) != "short" {
		t.Errorf("grown: %d bytes after the cut, want %q", len(got), "short")
	}
	if r.BytesCutOff != 3*pageSize {
		t.Errorf("report %+v: want %d bytes cut off", r, 3*pageSize)
	}
}

// TestModeNeedsAnFsync: a chmod is inode metadata, durable once the file
// is fsynced (fdatasync does not write it); a rename made durable by the
// directory's fsync does not carry it.
func TestModeNeedsAnFsync(t *testing.T) {
	d := Mount(t, nil)
	p := durableFile(t, d, "bin", []byte("binary"))
	q := durableFile(t, d, "synced", []byte("binary"))
	for _, f := range []string{p, q} {
		if err := os.Chmod(f, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(q)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Rename(p, d.Path("renamed")); err != nil {
		t.Fatal(err)
	}
	syncDir(t, d.Dir())
	r := cut(t, d, false)
	if fi, err := os.Stat(d.Path("renamed")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("chmod without fsync, renamed durably: %v, %v; want mode 0600 as synced", fi.Mode(), err)
	}
	if fi, err := os.Stat(q); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("chmod then fsync: %v, %v; want 0755", fi.Mode(), err)
	}
	if r.ModesRolledBack != 1 {
		t.Errorf("report %+v: want 1 mode rolled back", r)
	}
}

// TestFull: a full disk refuses growth and new files with ENOSPC and
// takes writes inside a file; freed, it grows again.
func TestFull(t *testing.T) {
	d := Mount(t, nil)
	p := durableFile(t, d, "f", []byte("durable"))
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := d.Full(true); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("D"), 0); err != nil {
		t.Errorf("a write inside the file on a full disk: %v", err)
	}
	if err := f.Sync(); err != nil {
		t.Errorf("fsync on a full disk: %v", err)
	}
	if _, err := f.WriteAt([]byte("more"), 7); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("a write growing the file: %v, want ENOSPC", err)
	}
	if err := f.Truncate(1 << 20); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("a truncation growing the file: %v, want ENOSPC", err)
	}
	if err := os.WriteFile(d.Path("new"), nil, 0o600); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("create on a full disk: %v, want ENOSPC", err)
	}
	if err := d.Full(false); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("more"), 7); err != nil {
		t.Errorf("a write growing the file after space was freed: %v", err)
	}
	if got := content(t, p); string(got) != "Durablemore" {
		t.Errorf("content %q", got)
	}
}

func TestFreeze(t *testing.T) {
	d := Mount(t, nil)
	p := durableFile(t, d, "f", []byte("durable"))
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Freeze(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("x"), 0); !errors.Is(err, syscall.EIO) {
		t.Errorf("write after Freeze: %v, want EIO", err)
	}
	if err := f.Sync(); !errors.Is(err, syscall.EIO) {
		t.Errorf("fsync after Freeze: %v, want EIO", err)
	}
	if err := os.WriteFile(d.Path("new"), nil, 0o600); !errors.Is(err, syscall.EIO) {
		t.Errorf("create after Freeze: %v, want EIO", err)
	}
	buf := make([]byte, 7)
	if _, err := f.ReadAt(buf, 0); err != nil || string(buf) != "durable" {
		t.Errorf("read after Freeze: %q, %v", buf, err)
	}
	if _, err := d.Cut(false); err == nil {
		t.Errorf("Cut with a file still open succeeded; want it refused")
	}
	f.Close()
	cut(t, d, false)
	write(t, p, []byte("powered again"), true)
	if got := content(t, p); string(got) != "powered again" {
		t.Errorf("after the power came back: %q", got)
	}
}

// TestFreezeAfterSyncs: the syncs allowed make their data durable; the
// next one fails with EIO, makes nothing durable and turns the power off
// (Stats says so); n < 0 ends the count, as a Cut does.
func TestFreezeAfterSyncs(t *testing.T) {
	d := Mount(t, nil)
	p := durableFile(t, d, "f", []byte("durable"))
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.FreezeAfterSyncs(1); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("first  "), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Errorf("the sync allowed: %v", err)
	}
	if _, err := f.WriteAt([]byte("second "), 0); err != nil {
		t.Fatal(err)
	}
	if st, err := d.Stats(); err != nil || st.Frozen {
		t.Errorf("Stats before the sync not allowed: %+v, %v; want the power on", st, err)
	}
	if err := f.Sync(); !errors.Is(err, syscall.EIO) {
		t.Errorf("the sync not allowed: %v, want EIO", err)
	}
	if st, err := d.Stats(); err != nil || !st.Frozen {
		t.Errorf("Stats after the sync not allowed: %+v, %v; want the power off", st, err)
	}
	if _, err := f.WriteAt([]byte("x"), 0); !errors.Is(err, syscall.EIO) {
		t.Errorf("write once the power is off: %v, want EIO", err)
	}
	f.Close()
	cut(t, d, false)
	if got := content(t, p); string(got) != "first  " {
		t.Errorf("after the cut: %q, want what the allowed sync made durable", got)
	}
	if err := d.FreezeAfterSyncs(0); err != nil {
		t.Fatal(err)
	}
	if err := d.FreezeAfterSyncs(-1); err != nil {
		t.Fatal(err)
	}
	write(t, p, []byte("powered again"), true)
	cut(t, d, false)
	if got := content(t, p); string(got) != "powered again" {
		t.Errorf("after FreezeAfterSyncs(-1): %q", got)
	}
}

// TestMmapSeesWrites is what bbolt needs: a read-only shared mapping of a
// file stays coherent with pwrite to the same file.
func TestMmapSeesWrites(t *testing.T) {
	d := Mount(t, nil)
	p := d.Path("mapped")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(4 * pageSize); err != nil {
		t.Fatal(err)
	}
	m, err := syscall.Mmap(int(f.Fd()), 0, 4*pageSize, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(m)
	for i := range 4 {
		msg := []byte{'p', byte('0' + i)}
		if _, err := f.WriteAt(msg, int64(i*pageSize+100)); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			t.Fatal(err)
		}
		if got := m[i*pageSize+100 : i*pageSize+102]; !bytes.Equal(got, msg) {
			t.Errorf("page %d through the map: %q, want %q", i, got, msg)
		}
	}
}

// TestSQLiteWAL runs SQLite as the ledger does (WAL, synchronous=FULL,
// its -shm file mapped read-write) and cuts the power: every committed row
// is there afterwards, and the database is sound.
func TestSQLiteWAL(t *testing.T) {
	d := Mount(t, nil)
	ctx := context.Background()
	dsn := "file:" + d.Path("db.sqlite") + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(5000)"
	open := func() *sql.DB {
		db, err := sql.Open("sqlite", dsn)
		if err != nil {
			t.Fatal(err)
		}
		return db
	}
	db := open()
	if _, err := db.ExecContext(ctx, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"); err != nil {
		t.Fatal(err)
	}
	committed := 0
	for round := range 3 {
		for range 20 {
			if _, err := db.ExecContext(ctx, "INSERT INTO t (v) VALUES (?)", "row"); err != nil {
				t.Fatal(err)
			}
			committed++
		}
		// Leave a transaction open with writes in it, as a crash would.
		conn, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE; INSERT INTO t (v) VALUES ('uncommitted')"); err != nil {
			t.Fatal(err)
		}
		if err := d.Freeze(); err != nil {
			t.Fatal(err)
		}
		conn.Close()
		db.Close()
		r := cut(t, d, round%2 == 1)
		if r.FilesRolledBack == 0 && r.EntriesDiscarded == 0 {
			t.Errorf("round %d: the cut discarded nothing: %+v", round, r)
		}
		db = open()
		var n int
		var check string
		if err := db.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if err := db.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&check); err != nil {
			t.Fatal(err)
		}
		if n != committed || check != "ok" {
			t.Errorf("round %d: %d rows (want %d committed), integrity %q", round, n, committed, check)
		}
	}
	db.Close()
	st, err := d.Stats()
	if err != nil {
		t.Fatal(err)
	}
	files, _ := os.ReadDir(d.Dir())
	var names []string
	for _, f := range files {
		names = append(names, f.Name())
	}
	t.Logf("SQLite on the disk: %d writes, %d file syncs, %d directory syncs, %d cuts; files %v",
		st.Writes, st.FileSyncs, st.DirSyncs, st.Cuts, names)
	if !slices.Contains(names, "db.sqlite") {
		t.Errorf("db.sqlite missing: %v", names)
	}
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/server/ledger"
)

// TestMigrationSurvivesPowerCuts: the server's start migrates a ledger of
// an older release (testdata/ledger's schema-22 one) on a disk whose power
// is cut before each of the migration's syncs in turn (the migration's
// transaction, the -wal checkpointed and truncated after it, the private
// modes of -wal and -shm; every other cut tearing the last page written).
// After each cut the server's start migrates what survived (again, or on
// from where it was), and verify says what the older release said, figure
// for figure, with the account's payment and refund.
//
// FAREGO_UPGRADE_LEDGER=FILE runs the same cuts on another older SQLite
// ledger (a sizeable one, made by an older release's farego-sim --keep),
// FAREGO_UPGRADE_VERIFY the line that release's verify printed for it.
func TestMigrationSurvivesPowerCuts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	data := filepath.Join(t.TempDir(), "data")
	if c, _, e := settle(t, ctx, "init", "--data", data); c != 0 {
		t.Fatal(e)
	}
	_, src := oldLedger(t, "v22-bc3e1fe.db.gz")
	wantVerify, fixture := v22Verify, true
	if f := os.Getenv("FAREGO_UPGRADE_LEDGER"); f != "" {
		src, wantVerify, fixture = f, os.Getenv("FAREGO_UPGRADE_VERIFY")+"\n", false
	}
	old, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	disk := powercut.Mount(t, nil)
	path := disk.Path("ledger.db")
	dsn := "sqlite:" + path
	// put lays the older ledger on the disk, durably, as the upgrade
	// finds it.
	put := func() {
		t.Helper()
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(old); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		d, err := os.Open(disk.Dir())
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Sync(); err != nil {
			t.Fatal(err)
		}
		d.Close()
	}
	// after checks what a cut left: the server's open migrates it (again
	// or on), verify says what the older release said, the account's
	// figures are the same.
	after := func(what string) {
		t.Helper()
		st, err := ledger.Open(ctx, dsn, &ledger.Options{MustExist: true})
		if err != nil {
			t.Fatalf("%s: the server's open of what survived: %v", what, err)
		}
		v, err := st.SchemaVersion(ctx)
		st.Close()
		if err != nil || v <= 22 {
			t.Fatalf("%s: the server's open left version %d, %v", what, v, err)
		}
		c, out, e := settle(t, ctx, "verify", "--data", data, "--db", dsn)
		if c != 0 || out != wantVerify {
			t.Fatalf("%s: verify: exit %d, %q %q\nwant what the release before said: %q", what, c, out, e, wantVerify)
		}
		if !fixture {
			return
		}
		c, out, e = settle(t, ctx, "account", "show", "--data", data, "--db", dsn, "1012")
		if c != 0 || !strings.Contains(out, "balance       42.00 EUR") || !bytes.Contains([]byte(out), []byte("12.50 EUR  4.50 EUR  8.00 EUR")) {
			t.Fatalf("%s: account show 1012: exit %d, %q %q; want 42.00 EUR, the payment of 12.50 with 4.50 refunded", what, c, out, e)
		}
	}
	cuts, torn := 0, 0
	for n := int64(0); ; n++ {
		if n > 400 {
			t.Fatal("the migration still syncs after 400 syncs")
		}
		put()
		if err := disk.FreezeAfterSyncs(n); err != nil {
			t.Fatal(err)
		}
		st, err := ledger.Open(ctx, dsn, &ledger.Options{MustExist: true}) // as run opens it
		if err == nil {
			st.Close()
		}
		stats, serr := disk.Stats()
		if serr != nil {
			t.Fatal(serr)
		}
		if !stats.Frozen {
			if err != nil {
				t.Fatalf("migration with the power on: %v", err)
			}
			if err := disk.FreezeAfterSyncs(-1); err != nil {
				t.Fatal(err)
			}
			// And once it is done: the power goes as the server serves.
			if _, err := disk.Cut(true); err != nil {
				t.Fatal(err)
			}
			cuts++
			torn++
			after("cut once the migration was done")
			t.Logf("%d power cuts during the migration of an older ledger of %d bytes, one before each of its syncs and one after (%d tearing a page)", cuts, len(old), torn)
			return
		}
		tear := n%2 == 1
		if _, err := disk.Cut(tear); err != nil {
			t.Fatalf("cut before sync %d: %v", n, err)
		}
		cuts++
		if tear {
			torn++
		}
		after(fmt.Sprintf("cut before sync %d of the migration (tear %v)", n, tear))
	}
}

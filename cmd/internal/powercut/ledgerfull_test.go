package powercut_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/queue/durable"
	"github.com/farego/farego/server/ledger"
)

// TestLedgerDiskFullSaysWhere: the settlement server's disk fills up. A
// write the SQLite ledger refuses names the ledger's directory and what
// it has free (SQLite's "database or disk is full (13)" named neither),
// is a ledger unavailable (the API's 503), and keeps nothing; once space
// is freed the same write goes through once and verify is clean.
func TestLedgerDiskFullSaysWhere(t *testing.T) {
	d := powercut.Mount(t, nil)
	ctx := context.Background()
	dir := d.Path("srv")
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	s, err := ledger.Open(ctx, "sqlite:"+filepath.Join(dir, "ledger.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, err := s.CreateAccount(ctx, ledger.AccountSpec{Profile: paycode.Adult})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Full(true); err != nil {
		t.Fatal(err)
	}
	// Top-ups go on into the files' free pages until one must grow.
	var full error
	done := 0
	for i := range 20000 {
		ref := fmt.Sprintf("full-%d", i)
		if _, err := s.TopUp(ctx, a.ID, 100, ref); err != nil {
			full = err
			break
		}
		done++
	}
	if full == nil {
		t.Fatal("20,000 top-ups on a full disk and the ledger never had to grow")
	}
	if msg := full.Error(); !strings.Contains(msg, "the disk of "+dir+" is full") || !strings.Contains(msg, "MiB free") {
		t.Errorf("a write refused for a full disk: %q; want it to name %s and what it has free", msg, dir)
	}
	if !ledger.Unavailable(full) {
		t.Errorf("a write refused for a full disk is not Unavailable: %v", full)
	}
	if err := d.Full(false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TopUp(ctx, a.ID, 100, fmt.Sprintf("full-%d", done)); err != nil {
		t.Fatalf("the refused top-up once space was freed: %v", err)
	}
	got, err := s.Account(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(100 * (done + 1)); got.Balance != want {
		t.Errorf("balance %d after %d top-ups of 100, one refused on the full disk and made again; want %d", got.Balance, done+1, want)
	}
	if err := s.CheckInvariants(ctx); err != nil {
		t.Errorf("verify after the disk was full: %v", err)
	}
}

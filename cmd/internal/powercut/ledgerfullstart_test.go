package powercut_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/queue/durable"
	"github.com/farego/farego/server/ledger"
)

// TestLedgerOpenOnFullDiskSaysWhere: the settlement server is started
// again (a reboot, an operator's restart) while its disk is full. SQLite
// cannot make the ledger's -shm and -wal and said only "disk I/O error
// (4874)" (an operator's drill on a full tmpfs): the refusal names the
// ledger's directory and that it is full. Once space is freed the ledger
// opens with everything it held and verify is clean.
func TestLedgerOpenOnFullDiskSaysWhere(t *testing.T) {
	d := powercut.Mount(t, nil)
	ctx := context.Background()
	dir := d.Path("srv")
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	dsn := "sqlite:" + filepath.Join(dir, "ledger.db")
	s, err := ledger.Open(ctx, dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.CreateAccount(ctx, ledger.AccountSpec{Profile: paycode.Adult})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.TopUp(ctx, a.ID, 500, "before"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Full(true); err != nil {
		t.Fatal(err)
	}
	s, err = ledger.Open(ctx, dsn, &ledger.Options{MustExist: true})
	if err == nil {
		s.Close()
		t.Fatal("the ledger opened on a full disk that has no room for its -shm and -wal")
	}
	if msg := err.Error(); !strings.Contains(msg, "the disk of "+dir+" is full") || !strings.Contains(msg, "free space there") {
		t.Errorf("opening the ledger on a full disk: %q; want it to say the disk of %s is full and to free space there", msg, dir)
	}
	if err := d.Full(false); err != nil {
		t.Fatal(err)
	}
	s, err = ledger.Open(ctx, dsn, &ledger.Options{MustExist: true})
	if err != nil {
		t.Fatalf("opening the ledger once space was freed: %v", err)
	}
	defer s.Close()
	got, err := s.Account(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Balance != 500 {
		t.Errorf("balance %d after the start refused on a full disk; want 500", got.Balance)
	}
	if err := s.CheckInvariants(ctx); err != nil {
		t.Errorf("verify after the start refused on a full disk: %v", err)
	}
}

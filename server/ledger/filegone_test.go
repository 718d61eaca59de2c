package ledger

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestFileGoneRefusesWrites: a SQLite ledger file removed under a running
// server. SQLite goes on committing to the unlinked file, so every write
// succeeded — a rider's top-up, a shop's payment, a refund, a void, all
// answered 201/200 by the API — and all of it was gone when the server
// stopped. Only the batches of taps were left unacked (server/store.go's
// committedToFile); the API's writes were not. Every write now fails as
// unavailable (503 with Retry-After) once the file is not the one opened.
func TestFileGoneRefusesWrites(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "ledger.db")
	s, err := Open(ctx, "sqlite:"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	acct := newAccount(t, s, 1000)
	if _, err := s.TopUp(ctx, acct, 100, "before"); err != nil {
		t.Fatalf("top-up with the file there: %v", err)
	}
	for _, f := range []string{path, path + "-wal", path + "-shm"} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	_, err = s.TopUp(ctx, acct, 100, "after-removal")
	if err == nil {
		t.Fatal("top-up committed to the removed ledger file (lost when the server stops); want an error")
	}
	if !Unavailable(err) {
		t.Errorf("top-up on a removed ledger file: %v; want Unavailable (503, try again later)", err)
	}
	// Removed and replaced by another file (a restore copied over it while
	// the server runs): the same.
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TopUp(ctx, acct, 100, "after-replacement"); err == nil || !Unavailable(err) {
		t.Errorf("top-up with another file at the ledger's path: %v; want Unavailable", err)
	}
}

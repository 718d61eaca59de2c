package ledger

import (
	"context"
	"crypto/sha256"
	"testing"
	"time"
)

// TestEndSessionsOfTheTokenFile: ending the operator token file's
// sessions ("init", token revoke init) ends those of the release before
// ("init") and those that keep the token's digest ("init:…"), on both
// backends, and leaves every other token's.
func TestEndSessionsOfTheTokenFile(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, newDB(t, db.backend))
		now := time.Now()
		ids := []string{"init", "init:0123456789abcdef", "init:fedcba9876543210", "abcd1234", "initx"}
		for _, id := range ids {
			h := sha256.Sum256([]byte(id))
			if err := s.CreateSession(ctx, ConsoleSession{IDHash: h[:], TokenID: id, Role: RoleOperator, Created: now,
				Expires: now.Add(time.Hour)}); err != nil {
				t.Fatal(err)
			}
		}
		n, err := s.EndSessionsOf(ctx, "init")
		if err != nil || n != 3 {
			t.Fatalf("EndSessionsOf(init): %d, %v; want 3", n, err)
		}
		for _, id := range ids {
			h := sha256.Sum256([]byte(id))
			cs, err := s.Session(ctx, h[:])
			if err != nil {
				t.Fatal(err)
			}
			if ended, want := !cs.Ended.IsZero(), id == "init" || len(id) > 5 && id[:5] == "init:"; ended != want {
				t.Errorf("session of %q ended %v, want %v", id, ended, want)
			}
		}
	})
}

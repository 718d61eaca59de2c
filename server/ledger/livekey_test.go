package ledger

import (
	"context"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
)

// TestLiveCredentialOfKey: the credential a rider key was issued, found
// again while it is live (not expired, not deny-listed): the API sends it
// again to a wallet whose answer was lost, instead of issuing one more.
// Another key's, a deny-listed one and an expired one are not found.
func TestLiveCredentialOfKey(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		clock := time.Now()
		s := db.open(t, &Options{Now: func() time.Time { return clock }})
		hash := []byte("secret hash")
		a, err := s.CreateAccount(ctx, AccountSpec{Profile: paycode.Adult, SecretHash: hash})
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.CreateAccount(ctx, AccountSpec{Profile: paycode.Adult, SecretHash: hash})
		if err != nil {
			t.Fatal(err)
		}
		end := clock.Add(time.Hour).Truncate(time.Second)
		serial, err := s.IssueRiderCredentialSerial(ctx, a.ID, hash, end, riderKey(a.ID))
		if err != nil {
			t.Fatal(err)
		}
		live := func(acct uint64, key []byte) (uint32, time.Time, bool) {
			t.Helper()
			got, na, ok, err := s.LiveCredentialOfKey(ctx, acct, key)
			if err != nil {
				t.Fatal(err)
			}
			return got, na, ok
		}
		if got, na, ok := live(a.ID, riderKey(a.ID)); !ok || got != serial || !na.Equal(end) {
			t.Errorf("the live credential of the key: %d, %v, %v; want %d, %v", got, na, ok, serial, end)
		}
		if _, _, ok := live(a.ID, riderKey(b.ID)); ok {
			t.Error("found a credential of a key never issued to the account")
		}
		if _, _, ok := live(b.ID, riderKey(a.ID)); ok {
			t.Error("found another account's credential")
		}
		clock = end
		if _, _, ok := live(a.ID, riderKey(a.ID)); ok {
			t.Error("found an expired credential")
		}
		clock = end.Add(-30 * time.Minute)
		if err := s.Deny(ctx, a.ID, serial, "lost"); err != nil {
			t.Fatal(err)
		}
		if _, _, ok := live(a.ID, riderKey(a.ID)); ok {
			t.Error("found a deny-listed credential")
		}
	})
}

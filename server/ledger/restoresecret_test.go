package ledger

import (
	"context"
	"crypto/ed25519"
	"errors"
	"testing"
	"time"
)

// TestSecretReplacedAfterRestoreDeniesLostPasses: a pass issued between
// the backup and the restore is in no ledger, yet in a phone (a lost one,
// say) and accepted by every validator. The rider replaces the secret
// after the restore (the README's restore step: a replacement since the
// backup is lost with it), which denies the passes the ledger holds; the
// lost pass, taken into the ledger from its next tap, was left paying —
// on every bus, and at shops from then on (a thief's purchases charged
// to the rider until the pass ran out). Taken in, it is deny-listed
// secret_replaced like the passes the replacement found: its tap, which a
// validator accepted before the update, is charged; a shop refuses it.
// A pass issued after the replacement (the rider's new phone) and a lost
// one of an account whose secret was not replaced since the restore are
// not denied.
func TestSecretReplacedAfterRestoreDeniesLostPasses(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		victim, other := newAccount(t, s, 5000), newAccount(t, s, 5000)
		issue(t, s, victim) // in the backup
		issue(t, s, other)
		a, err := s.Account(ctx, victim)
		if err != nil {
			t.Fatal(err)
		}
		next := a.LastSerial + 1 // the same for both accounts
		// Since the backup (lost with it): a pass of each account.
		issuedAt := time.Now().Truncate(time.Second)
		lostPub, _, _ := ed25519.GenerateKey(nil)
		lost := func(account uint64, seq uint64, minutes int) Tap {
			tp := mkTap("bus-1", seq, account, at(minutes), "")
			tp.Serial, tp.RiderKey, tp.CodeKey = next, lostPub, codeKey(account, next, at(minutes))
			tp.CredentialNotBefore, tp.CredentialNotAfter = issuedAt.Add(-5*time.Minute), issuedAt.Add(24*time.Hour)
			return tp
		}
		if _, _, err := s.Restored(ctx, 0, "test"); err != nil {
			t.Fatal(err)
		}
		// The replacement comes after the restore, and in a later second
		// than the lost pass's issue, as a rider's after a restore does
		// (the servers are stopped for it): a pass of the replacement's
		// own second is kept (TestPassOfTheReplacementSecondKept).
		time.Sleep(time.Until(issuedAt.Add(time.Second + 10*time.Millisecond)))
		if _, err := s.ReplaceSecret(ctx, victim, nil, []byte("new hash")); err != nil {
			t.Fatal(err)
		}
		// The lost phone's pass on a bus not yet updated: charged (the
		// ride was taken), and deny-listed from then on.
		if r := commit(t, s, lost(victim, 1, 0)); r[0].Flag != "" || r[0].Charge != 250 {
			t.Fatalf("the lost pass's tap: %+v; want charged 250", r[0])
		}
		if !hasDeny(denyList(t, s), victim, next, ReasonSecretReplaced) {
			t.Errorf("the lost pass, issued before the secret was replaced, is not on the deny list")
		}
		pay := func(account uint64, order string) error {
			_, _, err := s.Pay(ctx, PaymentRequest{MerchantID: "kiosk", OrderID: order, Account: account, Serial: next,
				RiderKey: lostPub, CodeKey: codeKey(account, next, time.Now()), CodeHash: "h", Amount: 1500, Currency: "EUR"})
			return err
		}
		if err := pay(victim, "o-1"); !errors.Is(err, ErrDenied) {
			t.Errorf("a shop's payment with the lost pass: %v; want %v", err, ErrDenied)
		}
		if b := balance(t, s, victim); b != 5000-250 {
			t.Errorf("the rider's balance %d; want %d", b, 5000-250)
		}
		// Another account's lost pass, its secret not replaced: taken in
		// and paying.
		if r := commit(t, s, lost(other, 2, 0)); r[0].Flag != "" || r[0].Charge != 250 {
			t.Fatalf("another account's lost pass: %+v; want charged 250", r[0])
		}
		if hasDeny(denyList(t, s), other, next, ReasonSecretReplaced) {
			t.Errorf("a lost pass of an account whose secret was not replaced is denied")
		}
		if err := pay(other, "o-2"); err != nil {
			t.Errorf("a shop's payment with another account's lost pass: %v", err)
		}
		// The rider's new pass, issued after the replacement, pays.
		serial, err := s.IssueCredentialSerial(ctx, victim, time.Now().Add(24*time.Hour), riderKey(victim))
		if err != nil {
			t.Fatal(err)
		}
		if hasDeny(denyList(t, s), victim, serial, ReasonSecretReplaced) {
			t.Errorf("the pass issued after the replacement is denied")
		}
	})
}

// TestPassOfTheReplacementSecondKept: the wallet replaces the secret and
// at once fetches the new phone's pass, in the same second: the pass's
// NotBefore, in whole seconds, read as issued before the replacement. A
// restore from a backup (or to a point in time) that holds the
// replacement but not that pass lost the pass, and its first tap denied
// it secret_replaced: the rider's new phone refused on every bus once the
// deny list came. It is taken in and pays.
func TestPassOfTheReplacementSecondKept(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		rider := newAccount(t, s, 5000)
		issue(t, s, rider)
		a, err := s.Account(ctx, rider)
		if err != nil {
			t.Fatal(err)
		}
		next := a.LastSerial + 1
		if _, err := s.ReplaceSecret(ctx, rider, nil, []byte("new hash")); err != nil {
			t.Fatal(err)
		}
		var replaced int64
		if err := s.db.QueryRowContext(ctx, `SELECT secret_replaced_ns FROM accounts WHERE id = $1`, int64(rider)).Scan(&replaced); err != nil {
			t.Fatal(err)
		}
		if replaced%int64(time.Second) == 0 {
			t.Skip("the replacement fell on a whole second") // about once in 10⁹ runs
		}
		// The new phone's pass, issued after the replacement in its
		// second (the API's NotBefore: its time truncated, less 5 min),
		// lost by the restore.
		issuedAt := time.Unix(0, replaced).Truncate(time.Second)
		if _, _, err := s.Restored(ctx, 0, "test"); err != nil {
			t.Fatal(err)
		}
		newPub, _, _ := ed25519.GenerateKey(nil)
		tp := mkTap("bus-1", 1, rider, at(0), "")
		tp.Serial, tp.RiderKey, tp.CodeKey = next, newPub, codeKey(rider, next, at(0))
		tp.CredentialNotBefore, tp.CredentialNotAfter = issuedAt.Add(-credentialIssueLead), issuedAt.Add(24*time.Hour)
		if r := commit(t, s, tp); r[0].Flag != "" || r[0].Charge != 250 {
			t.Fatalf("the new phone's pass's tap: %+v; want charged 250", r[0])
		}
		if hasDeny(denyList(t, s), rider, next, ReasonSecretReplaced) {
			t.Errorf("the new phone's pass, issued in the second of the replacement after it, is denied %s", ReasonSecretReplaced)
		}
	})
}

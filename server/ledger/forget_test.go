package ledger

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// Anyone may make accounts (POST /v1/accounts, 600 a minute in all), and
// an account was kept for ever: some 200 bytes each, 180 MB a day for a
// client that makes them all day. An account made anonymously that
// nothing was done with is forgotten ForgetUnusedAccounts after it was
// made, by the anonymous sign-ups after it; one with money moved, a
// credential, a credit line or a deny entry, or made by the operator or
// the payment provider, is kept, and no id is used again.
func TestUnusedAnonymousAccountsForgotten(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		now := day0
		s := db.open(t, &Options{Now: func() time.Time { return now }})
		anon := func() uint64 {
			t.Helper()
			a, err := s.CreateAccount(ctx, AccountSpec{Anonymous: true, SecretHash: []byte("h")})
			if err != nil {
				t.Fatal(err)
			}
			return a.ID
		}
		var flood []uint64
		for range 5 {
			flood = append(flood, anon())
		}
		topped := anon()
		if _, err := s.TopUp(ctx, topped, 100, "ref-1"); err != nil {
			t.Fatal(err)
		}
		credited := anon()
		if _, err := s.SetCreditLine(ctx, credited, 500, ""); err != nil {
			t.Fatal(err)
		}
		issued := anon()
		if _, err := s.IssueCredentialSerial(ctx, issued, now.Add(24*time.Hour), riderKey(issued)); err != nil {
			t.Fatal(err)
		}
		denied := anon()
		if err := s.Deny(ctx, denied, 0, "operator"); err != nil {
			t.Fatal(err)
		}
		limited := anon() // a payment limit on no money: forgotten with it
		if _, err := s.SetPaymentLimit(ctx, limited, 300); err != nil {
			t.Fatal(err)
		}
		staff, err := s.CreateAccount(ctx, AccountSpec{SecretHash: []byte("h")})
		if err != nil {
			t.Fatal(err)
		}
		exists := func(id uint64) bool {
			t.Helper()
			_, err := s.Account(ctx, id)
			if err != nil && !errors.Is(err, ErrNotFound) {
				t.Fatal(err)
			}
			return err == nil
		}
		count := func() int64 {
			t.Helper()
			st, err := s.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return st.Accounts
		}

		// Within the window nothing is forgotten.
		now = day0.Add(DefaultForgetUnusedAccounts - time.Minute)
		last := anon()
		if n := count(); n != 12 {
			t.Fatalf("accounts within the window: %d, want 12", n)
		}
		// After it, each anonymous sign-up forgets at most two.
		now = day0.Add(DefaultForgetUnusedAccounts + time.Minute)
		last2 := anon()
		if n := count(); n != 11 {
			t.Errorf("accounts after one sign-up past the window: %d, want 13-2 = 11", n)
		}
		for range 5 {
			anon()
		}
		for _, id := range append(flood, limited) {
			if exists(id) {
				t.Errorf("unused anonymous account %d kept", id)
			}
		}
		for _, id := range []uint64{topped, credited, issued, denied, staff.ID, last, last2} {
			if !exists(id) {
				t.Errorf("account %d forgotten", id)
			}
		}
		if n := count(); n != 7+5 {
			t.Errorf("accounts: %d, want 12", n)
		}
		// An id is never used again; a top-up of a forgotten account
		// moves nothing.
		if id := anon(); id <= last2 {
			t.Errorf("new account %d, after %d", id, last2)
		}
		_, err = s.TopUp(ctx, flood[0], 100, "ref-2")
		wantErr(t, err, ErrNotFound)
		if b := balance(t, s, topped); b != 100 {
			t.Errorf("topped-up account's balance %d", b)
		}
	})
}

// A ledger that keeps every account (ForgetUnusedAccounts < 0) forgets
// none.
func TestForgetUnusedAccountsOff(t *testing.T) {
	db := newSQLiteDB(t)
	ctx := context.Background()
	now := day0
	s := db.open(t, &Options{Now: func() time.Time { return now }, ForgetUnusedAccounts: -1})
	a, err := s.CreateAccount(ctx, AccountSpec{Anonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(365 * 24 * time.Hour)
	if _, err := s.CreateAccount(ctx, AccountSpec{Anonymous: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Account(ctx, a.ID); err != nil {
		t.Errorf("account forgotten with ForgetUnusedAccounts -1: %v", err)
	}
}

// A top-up racing the sign-up that forgets its account: either the top-up
// is there (the account kept, with its money) or it was refused with
// ErrNotFound (nothing written); never another error, never money on an
// account that is gone.
func TestForgetRacesTopUp(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		var mu sync.Mutex
		now := day0
		s := db.open(t, &Options{Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }})
		kept, refused := 0, 0
		for i := range 20 {
			a, err := s.CreateAccount(ctx, AccountSpec{Anonymous: true})
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			now = now.Add(DefaultForgetUnusedAccounts + time.Minute)
			mu.Unlock()
			var wg sync.WaitGroup
			var topErr, signErr error
			wg.Add(2)
			go func() {
				defer wg.Done()
				_, topErr = s.TopUp(ctx, a.ID, 100, fmt.Sprintf("race-%d", i))
			}()
			go func() {
				defer wg.Done()
				_, signErr = s.CreateAccount(ctx, AccountSpec{Anonymous: true})
			}()
			wg.Wait()
			if signErr != nil {
				t.Fatalf("round %d: sign-up: %v", i, signErr)
			}
			_, getErr := s.Account(ctx, a.ID)
			switch {
			case topErr == nil && getErr == nil:
				kept++
				if b := balance(t, s, a.ID); b != 100 {
					t.Errorf("round %d: balance %d after its top-up", i, b)
				}
			case errors.Is(topErr, ErrNotFound) && errors.Is(getErr, ErrNotFound):
				refused++
			default:
				t.Fatalf("round %d: top-up %v, account afterwards %v", i, topErr, getErr)
			}
		}
		t.Logf("%s: 20 races: %d top-ups kept the account, %d were refused for a forgotten one", db.backend, kept, refused)
	})
}

// The sign-up's lookup of accounts to forget reads the partial index
// accounts_unused alone: among 20,000 accounts in use (made by staff or
// issued a credential) and a few unused ones, no scan of the accounts. On
// PostgreSQL, custom and generic plans.
func TestForgetReadsTheUnusedIndex(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s, err := Open(ctx, db.dsn, nil) // not db.open: the seeded accounts are not a valid ledger
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		series := "generate_series(CAST(1 AS BIGINT), 20000) AS g(n)"
		if s.backend != backendPostgres {
			series = "(WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 20000) SELECT n FROM g) AS g"
		}
		for _, q := range []string{
			// Half made by staff, half anonymous and issued a credential,
			// one in a hundred anonymous and unused.
			`INSERT INTO accounts (id, profile, name, secret_hash, currency, created_ns, anonymous, last_serial)
				SELECT 5000000 + n, 0, '', ` + map[bool]string{true: "decode('', 'hex')", false: "x''"}[s.backend == backendPostgres] + `, 'EUR', n,
				n % 2 = 0, CASE WHEN n % 100 = 0 THEN 0 ELSE 1 END FROM ` + series,
			// A deny list of some thousands (it is read by account).
			`INSERT INTO deny_entries (account_id, serial, reason, since_ns) SELECT 5000000 + n, 1, 'code_reuse', n FROM ` + series + ` WHERE n % 4 = 1`,
			`ANALYZE`,
		} {
			if _, err := s.db.ExecContext(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		for mode, p := range queryPlans(t, s, forgetUnusedQuery, int64(30000)) {
			scan := regexp.MustCompile(`(?m)^SCAN (a|d)$|Seq Scan on (accounts|deny_entries)`)
			if !strings.Contains(p, "accounts_unused") || scan.MatchString(p) {
				t.Errorf("the lookup of unused accounts (%s plan) does not read accounts_unused alone:\n%s", mode, p)
			}
		}
	})
}

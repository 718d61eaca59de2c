package ledger

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
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

// The operator denies an unused anonymous account while a sign-up is
// about to forget it (PostgreSQL, READ COMMITTED): the sign-up's lookup
// read the deny list before the entry was committed, then waited for the
// account's lock, which the deny held; the deny changes no column of the
// account, so the lock came without a second look, and the delete was
// refused by the deny entry's foreign key: the rider's sign-up failed
// (a 500), every time an operator's deny met one. The deny is checked
// again as the account is deleted: the denied account is kept, the
// sign-up made.
func TestForgetRacesDeny(t *testing.T) {
	db := newPostgresDB(t)
	ctx := context.Background()
	var mu sync.Mutex
	now := day0
	s := db.open(t, &Options{Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }})
	a, err := s.CreateAccount(ctx, AccountSpec{Anonymous: true})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	now = now.Add(DefaultForgetUnusedAccounts + time.Minute)
	mu.Unlock()
	// The deny stops at its commit, its entry written and the account
	// locked, until the sign-up waits for that lock.
	var armed atomic.Bool
	armed.Store(true)
	reached, release := make(chan struct{}), make(chan struct{})
	s.fault = func(p string) error {
		if p == "commit" && armed.CompareAndSwap(true, false) {
			close(reached)
			<-release
		}
		return nil
	}
	denyErr := make(chan error, 1)
	go func() { denyErr <- s.Deny(ctx, a.ID, 0, "operator") }()
	<-reached
	var denier int
	if err := s.db.QueryRowContext(ctx, `SELECT pid FROM pg_locks WHERE locktype = 'relation'
		AND relation = CAST('deny_entries' AS regclass) AND mode = 'RowExclusiveLock' AND granted`).Scan(&denier); err != nil {
		close(release)
		t.Fatalf("the deny's backend: %v", err)
	}
	signErr := make(chan error, 1)
	go func() {
		_, err := s.CreateAccount(ctx, AccountSpec{Anonymous: true})
		signErr <- err
	}()
	waiting := false
	for range 2000 {
		var n int
		if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid))`,
			denier).Scan(&n); err != nil {
			close(release)
			t.Fatal(err)
		}
		if n > 0 {
			waiting = true
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	if err := <-denyErr; err != nil {
		t.Fatalf("deny: %v", err)
	}
	if !waiting {
		t.Fatal("the sign-up never waited for the denied account's lock")
	}
	if err := <-signErr; err != nil {
		t.Errorf("sign-up beside the deny of the account it would forget: %v", err)
	}
	got, err := s.Account(ctx, a.ID)
	if err != nil {
		t.Fatalf("denied account: %v", err)
	}
	if !got.Denied {
		t.Errorf("account %d not denied after the deny", a.ID)
	}
}

// A reduced fare the operator (or the payment provider) confirmed on an
// anonymous account is something done with it: the rider showed a
// student card at the office. Forgotten 30 days after the sign-up when no
// pass had been fetched yet, the confirmation went with it (the rider's
// top-up at a kiosk then 404, and the office visit again); one asked for
// and not confirmed is forgotten as before.
func TestConfirmedProfileKeepsAccount(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		now := day0
		s := db.open(t, &Options{Now: func() time.Time { return now }})
		mk := func() uint64 {
			t.Helper()
			a, err := s.CreateAccount(ctx, AccountSpec{Anonymous: true, Profile: paycode.Student})
			if err != nil {
				t.Fatal(err)
			}
			return a.ID
		}
		asked, confirmed := mk(), mk()
		if _, err := s.SetProfile(ctx, confirmed, paycode.Student, true); err != nil {
			t.Fatal(err)
		}
		now = now.Add(DefaultForgetUnusedAccounts + time.Minute)
		for range 2 {
			mk()
		}
		if _, err := s.Account(ctx, asked); !errors.Is(err, ErrNotFound) {
			t.Errorf("account %d with a reduced fare asked for only: %v, want it forgotten", asked, err)
		}
		a, err := s.Account(ctx, confirmed)
		if err != nil {
			t.Fatalf("account %d with a confirmed reduced fare: %v", confirmed, err)
		}
		if a.Profile != paycode.Student || a.ProfilePending {
			t.Errorf("account %d: profile %v pending %v", confirmed, a.Profile, a.ProfilePending)
		}
	})
}

package api

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
)

// Anonymous sign-ups (POST /v1/accounts, no token) at a steady rate for
// 40 days, through the API on loopback onto a SQLite ledger: the accounts
// nothing was done with were kept for ever (40 days: 40 × 30 rows; at the
// API's 600 a minute, 864,000 rows a day, some 200 bytes each). They are
// forgotten ForgetUnusedAccounts after they were made, so the ledger holds
// at most that window's sign-ups; a rider's account that was topped up,
// and the payment provider's, are kept, and a forgotten account's secret
// and top-up are refused.
func TestAnonymousSignUpFloodBounded(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	now := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	const window = 7 * 24 * time.Hour
	store, err := ledger.Open(context.Background(), filepath.Join(dir, "ledger.db"), &ledger.Options{Now: clock, ForgetUnusedAccounts: window})
	if err != nil {
		t.Fatal(err)
	}
	kd, err := keys.Init(filepath.Join(dir, "keys"), keys.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := os.ReadFile(filepath.Join(dir, "keys", keys.TokenFile))
	srv := httptest.NewServer(New(Config{Ledger: store, Keys: kd, Now: clock, AccountsPerMinute: -1}))
	f := &fixture{t: t, srv: srv, store: store, keys: kd, token: strings.TrimSpace(string(tok)), notes: &notes{}}
	t.Cleanup(func() {
		srv.Close()
		if err := store.CheckInvariants(context.Background()); err != nil {
			t.Errorf("ledger invariants: %v", err)
		}
		store.Close()
	})
	signUp := func() (uint64, string) {
		out := f.do("POST", "/v1/accounts", "", `{"name":"`+strings.Repeat("x", 128)+`"}`, 201)
		return uint64(out["account"].(map[string]any)["id"].(float64)), out["secret"].(string)
	}
	// A rider who tops up, one who never does, one the payment provider
	// made.
	rider, riderSecret := signUp()
	f.do("POST", path("/v1/accounts/%d/topups", rider), f.token, `{"amount":500,"reference":"psp-1"}`, 200)
	idle, idleSecret := signUp()
	staff := uint64(f.do("POST", "/v1/accounts", f.token, `{}`, 201)["account"].(map[string]any)["id"].(float64))

	const days, perDay = 40, 30
	var most int64
	for range days {
		for range perDay {
			mu.Lock()
			now = now.Add(24 * time.Hour / perDay)
			mu.Unlock()
			signUp()
		}
		st, err := store.Stats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		most = max(most, st.Accounts)
	}
	// The window's sign-ups, and the three above.
	bound := int64(window/(24*time.Hour))*perDay + perDay + 3
	t.Logf("%d anonymous sign-ups over %d days: the ledger held at most %d accounts (bound %d)", days*perDay, days, most, bound)
	if most > bound {
		t.Errorf("the ledger held %d accounts after %d anonymous sign-ups over %d days; at most %d", most, days*perDay, days, bound)
	}
	f.do("GET", path("/v1/accounts/%d", rider), riderSecret, "", 200)
	f.do("GET", path("/v1/accounts/%d", staff), f.token, "", 200)
	f.do("GET", path("/v1/accounts/%d", idle), idleSecret, "", 403) // as a wrong secret
	f.do("POST", path("/v1/accounts/%d/topups", idle), f.token, `{"amount":500,"reference":"psp-2"}`, 404)
}

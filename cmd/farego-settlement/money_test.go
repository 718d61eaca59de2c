package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/ledger/ledgertest"
)

// moneyRig is a ledger made by init, seeded with riders, rides and a
// shop's payment, served by a running settlement server.
type moneyRig struct {
	ctx      context.Context
	data, db string
	a, b     uint64 // accounts
	c        uint64 // an account below zero after a ride (denied negative_balance)
	tapA     string // account a's ride, charged 2.50
	tapB1    string // account b's first ride, charged
	tapB2    string // b's transfer, charged nothing
	http     string // the running server's API
}

func (r *moneyRig) open(t *testing.T) *ledger.Store {
	t.Helper()
	st, err := ledger.Open(r.ctx, r.db, &ledger.Options{MustExist: true})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// state is what a refused act must leave as it was: the kept figures
// (postings, refunds, flagged taps, the deny list…), the balances, and the
// audit trail's newest entry.
func (r *moneyRig) state(t *testing.T) string {
	t.Helper()
	st := r.open(t)
	defer st.Close()
	stats, err := st.Stats(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	audit, err := st.AuditLog(r.ctx, 0, 1)
	if err != nil || len(audit) != 1 {
		t.Fatalf("audit log: %v %v", audit, err)
	}
	out := fmt.Sprintf("%+v audit %d", stats, audit[0].ID)
	for _, id := range []uint64{r.a, r.b, r.c} {
		a, err := st.Account(r.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		out += fmt.Sprintf(" account %d %d", id, a.Balance)
	}
	return out
}

// settleOK runs the command, wants it to succeed with want on stdout,
// and the ledger's invariants to hold after it.
func (r *moneyRig) settleOK(t *testing.T, want string, args ...string) string {
	t.Helper()
	c, out, e := settle(t, r.ctx, args...)
	if c != 0 || !strings.Contains(out, want) {
		t.Fatalf("%s: exit %d, stdout %q, stderr %q; want exit 0 and %q", strings.Join(args, " "), c, out, e, want)
	}
	r.verify(t)
	return out
}

func (r *moneyRig) verify(t *testing.T) {
	t.Helper()
	if c, out, e := settle(t, r.ctx, "verify", "--data", r.data, "--db", r.db, "--progress", "0"); c != 0 || !strings.HasPrefix(out, "ledger ok") {
		t.Fatalf("verify: %d %q %q", c, out, e)
	}
}

// refused runs a command that must be refused (exit code, want in its
// error) and change nothing at all.
func (r *moneyRig) refused(t *testing.T, code int, want string, args ...string) {
	t.Helper()
	before := r.state(t)
	c, out, e := settle(t, r.ctx, args...)
	if c != code || !strings.Contains(e, want) {
		t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit %d and %q", strings.Join(args, " "), c, out, e, code, want)
	}
	if after := r.state(t); after != before {
		t.Errorf("%s changed the ledger:\nbefore %s\nafter  %s", strings.Join(args, " "), before, after)
	}
	r.verify(t)
}

// balanceOnServer is account id's balance as the running server's API
// answers it.
func (r *moneyRig) balanceOnServer(t *testing.T, id uint64) int64 {
	t.Helper()
	tok, err := os.ReadFile(filepath.Join(r.data, "keys", "operator.token"))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(r.ctx, http.MethodGet, fmt.Sprintf("http://%s/v1/accounts/%d", r.http, id), nil)
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a struct {
		Balance int64 `json:"balance"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET account %d: %d %v", id, resp.StatusCode, err)
	}
	return a.Balance
}

// newMoneyRig inits a ledger (SQLite in the data directory, or a
// PostgreSQL schema of its own), seeds it and starts a server on it.
func newMoneyRig(t *testing.T, backend string) *moneyRig {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	r := &moneyRig{ctx: ctx, data: filepath.Join(t.TempDir(), "data")}
	r.db = "sqlite:" + filepath.Join(r.data, "ledger.db")
	if backend == "postgres" {
		r.db = ledgertest.PostgresSchema(t)
	}
	if c, _, e := settle(t, ctx, "init", "--data", r.data, "--db", r.db, "--fares", filepath.Join("..", "..", "testdata", "fare", "table.json")); c != 0 {
		t.Fatalf("init: %s", e)
	}
	st := r.open(t)
	// Yesterday at noon UTC: the middle of a Berlin service day (from
	// 04:00), whenever the test runs.
	noon := time.Now().UTC().Truncate(24 * time.Hour).Add(-12 * time.Hour)
	rider := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	tap := func(account uint64, serial uint32, seq uint64, at time.Time) ledger.Tap {
		return ledger.Tap{ID: ledger.TapID("bus-1", "e1", seq), DeviceID: "bus-1", Epoch: "e1", Seq: seq, Time: at, Account: account,
			Serial: serial, RiderKey: rider, CodeKey: paycode.ID{Account: account, Serial: serial, Time: uint32(at.Unix())}.Key(),
			CodeHash: fmt.Sprintf("%012d", seq), Profile: paycode.Adult, ClaimedProfile: paycode.Adult, BaseFare: 250, Currency: "EUR",
			FareVersion: 1, Route: "42", Record: []byte("record")}
	}
	var taps []ledger.Tap
	var serials []uint32
	for i, ref := range []string{"psp-a", "psp-b"} {
		a, err := st.CreateAccount(ctx, ledger.AccountSpec{Profile: paycode.Adult})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.TopUp(ctx, a.ID, 1000, ref); err != nil {
			t.Fatal(err)
		}
		serial, err := st.IssueCredentialSerial(ctx, a.ID, time.Now().Add(24*time.Hour), rider)
		if err != nil {
			t.Fatal(err)
		}
		serials = append(serials, serial)
		if i == 0 {
			r.a = a.ID
			taps = append(taps, tap(a.ID, serial, 1, noon.Add(time.Hour)))
		} else {
			r.b = a.ID
			taps = append(taps, tap(a.ID, serial, 2, noon), tap(a.ID, serial, 3, noon.Add(10*time.Minute))) // the second a transfer
		}
	}
	r.tapA, r.tapB1, r.tapB2 = taps[0].ID, taps[1].ID, taps[2].ID
	c, err := st.CreateAccount(ctx, ledger.AccountSpec{Profile: paycode.Adult})
	if err != nil {
		t.Fatal(err)
	}
	r.c = c.ID
	serial, err := st.IssueCredentialSerial(ctx, c.ID, time.Now().Add(24*time.Hour), rider)
	if err != nil {
		t.Fatal(err)
	}
	taps = append(taps, tap(c.ID, serial, 4, noon))
	if _, err := st.CommitTaps(ctx, taps); err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(-time.Minute)
	if _, _, err := st.Pay(ctx, ledger.PaymentRequest{MerchantID: "kiosk-1", OrderID: "o-1", Account: r.a, Serial: serials[0], RiderKey: rider,
		CodeKey: paycode.ID{Account: r.a, Serial: serials[0], Time: uint32(at.Unix())}.Key(), CodeHash: "abcdefabcdef", Amount: 400,
		Currency: "EUR"}); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[uint64]int64{r.a: 1000 - 250 - 400, r.b: 1000 - 250, r.c: -250} {
		if a, err := st.Account(ctx, id); err != nil || a.Balance != want {
			t.Fatalf("seeded account %d: %+v %v; want balance %d", id, a, err, want)
		}
	}
	st.Close()
	// The server, running on the ledger while the commands change it.
	runCtx, stop := context.WithCancel(ctx)
	ready := filepath.Join(t.TempDir(), "ready.json")
	done := make(chan int, 1)
	go func() {
		c, _, e := settle(t, runCtx, "run", "--data", r.data, "--db", r.db, "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0",
			"--ready-file", ready, "--log-level", "error")
		if c != 0 {
			t.Log(e)
		}
		done <- c
	}()
	t.Cleanup(func() { stop(); <-done })
	for {
		if b, err := os.ReadFile(ready); err == nil {
			var addrs struct{ HTTP string }
			if err := json.Unmarshal(b, &addrs); err != nil {
				t.Fatal(err)
			}
			r.http = addrs.HTTP
			break
		}
		select {
		case c := <-done:
			done <- c
			t.Fatalf("the server exited %d", c)
		case <-ctx.Done():
			t.Fatal("the server did not start")
		case <-time.After(50 * time.Millisecond):
		}
	}
	return r
}

// TestOperatorMoneyCommands: the operator's top-up, void and refund on
// the command line, against the ledger a running server serves (SQLite
// and PostgreSQL): each done once and audited as cli:USER@HOST in its own
// transaction, the ledger verified after each, a retry changing nothing,
// and every bad input refused with a clear error and the ledger unchanged.
// The server's API reads the balances the commands left.
func TestOperatorMoneyCommands(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			// A long user name: cli:USER@HOST past 64 bytes (VoidTap
			// refused such an actor, which the audit trail keeps).
			user := "night-operator-" + strings.Repeat("x", 50)
			t.Setenv("SUDO_USER", user)
			host, _ := os.Hostname()
			actor := "cli:" + user + "@" + host
			r := newMoneyRig(t, backend)
			a, b := fmt.Sprint(r.a), fmt.Sprint(r.b)
			data := []string{"--data", r.data, "--db", r.db}
			cmd := func(args ...string) []string { return append(args, data...) }

			out := r.settleOK(t, "balance       3.50 EUR", cmd("account", "show", a)...)
			for _, want := range []string{r.tapA, "in good standing", "valid", "o-1    4.00 EUR  0.00 EUR  4.00 EUR", `reference "psp-a"`} {
				if !strings.Contains(out, want) {
					t.Errorf("account show: want %q in\n%s", want, out)
				}
			}

			// Top-up: once, whatever the retries.
			r.settleOK(t, "account "+a+" topped up 5.00 EUR (reference \"ticket-7\"): balance 8.50 EUR",
				cmd("account", "topup", a, "5.00", "--reference", "ticket-7", "--reason", "-5.00 charged twice, delayed bus")...)
			before := r.state(t)
			r.settleOK(t, "nothing added; balance 8.50 EUR", cmd("account", "topup", a, "5,00 EUR", "--reference", "ticket-7", "--reason", "retry")...)
			if after := r.state(t); strings.Split(after, " audit ")[0] != strings.Split(before, " audit ")[0] {
				t.Errorf("a retried top-up changed money:\n%s\n%s", before, after)
			}
			r.refused(t, 1, "no account 999999", cmd("account", "topup", "999999", "5.00", "--reference", "ticket-8", "--reason", "x")...)
			r.refused(t, 2, "account \"abc\"", cmd("account", "topup", "abc", "5.00", "--reference", "ticket-8", "--reason", "x")...)
			r.refused(t, 2, "must be more than zero", cmd("account", "topup", a, "0.00", "--reference", "ticket-8", "--reason", "x")...)
			r.refused(t, 2, "a negative amount", cmd("account", "topup", a, "-5", "--reference", "ticket-8", "--reason", "x")...)
			r.refused(t, 2, "more than one amount may be", cmd("account", "topup", a, "2000000000.00", "--reference", "ticket-8", "--reason", "x")...)
			// Over 12 whole digits too (it was "is not an amount in EUR").
			r.refused(t, 2, "more than one amount may be", cmd("account", "topup", a, "99999999999999.00", "--reference", "ticket-8", "--reason", "x")...)
			r.refused(t, 2, "at most 2 decimals", cmd("account", "topup", a, "1.005", "--reference", "ticket-8", "--reason", "x")...)
			r.refused(t, 2, "write 500.00 for 500.00 EUR, or 5.00 for 5.00 EUR", cmd("account", "topup", a, "500", "--reference", "ticket-8", "--reason", "x")...)
			r.refused(t, 2, "is not an amount in EUR", cmd("account", "topup", a, "five", "--reference", "ticket-8", "--reason", "x")...)
			r.refused(t, 2, "the ledger keeps EUR", cmd("account", "topup", a, "5.00 USD", "--reference", "ticket-8", "--reason", "x")...)
			r.refused(t, 2, "--reference is required", cmd("account", "topup", a, "5.00", "--reason", "x")...)
			r.refused(t, 2, "--reason is required", cmd("account", "topup", a, "5.00", "--reference", "ticket-8")...)
			r.refused(t, 1, "was used for another top-up", cmd("account", "topup", a, "6.00", "--reference", "ticket-7", "--reason", "x")...)
			r.refused(t, 1, "was used for another top-up", cmd("account", "topup", b, "5.00", "--reference", "psp-a", "--reason", "x")...)
			// A rider below zero is denied until a top-up brings the
			// balance back: the ledger's rule, through the command too.
			c := fmt.Sprint(r.c)
			r.settleOK(t, "DENIED: negative_balance", cmd("account", "show", c)...)
			r.settleOK(t, "still denied (negative_balance)", cmd("account", "topup", c, "1.00", "--reference", "ticket-c1", "--reason", "not enough")...)
			if out := r.settleOK(t, "balance 1.25 EUR", cmd("account", "topup", c, "2.75", "--reference", "ticket-c2", "--reason", "back above zero")...); strings.Contains(out, "denied") {
				t.Errorf("top-up above zero: %q", out)
			}
			r.settleOK(t, "in good standing", cmd("account", "show", c)...)

			// Void: the fare back, once.
			r.settleOK(t, "tap "+r.tapA+" voided: 2.50 EUR back to account "+a+" net", cmd("tap", "void", r.tapA, "--reason", "was not on that bus")...)
			r.refused(t, 0, "", cmd("tap", "void", r.tapA, "--reason", "again")...) // exit 0, "was void already", nothing changed
			if _, out, _ := settle(t, r.ctx, cmd("tap", "void", r.tapA, "--reason", "again")...); !strings.Contains(out, "was void already: nothing changed") {
				t.Errorf("void again: %q", out)
			}
			r.refused(t, 1, "no tap \"bus-9/e1/1\"", cmd("tap", "void", "bus-9/e1/1", "--reason", "x")...)
			r.refused(t, 1, "was charged nothing", cmd("tap", "void", r.tapB2, "--reason", "x")...)
			r.refused(t, 2, "--reason is required", cmd("tap", "void", r.tapB1)...)
			// b's first ride started the transfer its second rode free:
			// voided, the second pays, and nothing comes back net.
			if out := r.settleOK(t, "0.00 EUR back to account "+b+" net", cmd("tap", "void", r.tapB1, "--reason", "wrong bus")...); !strings.Contains(out, "nothing came back net") {
				t.Errorf("void of a ride a transfer followed: %q", out)
			}
			if out := r.settleOK(t, "balance       7.50 EUR", cmd("account", "show", b)...); !regexp.MustCompile(regexp.QuoteMeta(r.tapB2) + `\s.*2\.50 EUR\s+2\.50 EUR`).MatchString(out) {
				t.Errorf("after the void, b's second ride should pay its fare:\n%s", out)
			}

			// Refund: part, the same again (nothing), too much, the rest.
			r.settleOK(t, "refunded 1.00 EUR of merchant kiosk-1's order o-1 (payment", cmd("payment", "refund", "--merchant", "kiosk-1", "o-1", "1.00", "--reason", "cold coffee")...)
			r.refused(t, 0, "", cmd("payment", "refund", "--merchant", "kiosk-1", "o-1", "1.00", "--reason", "cold coffee")...)
			r.refused(t, 1, "3.00 EUR left to refund", cmd("payment", "refund", "--merchant", "kiosk-1", "o-1", "3.01", "--reason", "x")...)
			r.refused(t, 1, "has no payment with order \"o-2\"", cmd("payment", "refund", "--merchant", "kiosk-1", "o-2", "1.00", "--reason", "x")...)
			r.refused(t, 1, "has no payment", cmd("payment", "refund", "--merchant", "kiosk-2", "o-1", "--reason", "x")...)
			r.refused(t, 2, "--merchant is required", cmd("payment", "refund", "o-1", "1.00", "--reason", "x")...)
			r.refused(t, 2, "a negative amount", cmd("payment", "refund", "--merchant", "kiosk-1", "o-1", "-1", "--reason", "x")...)
			r.refused(t, 1, "was used for another order or amount",
				cmd("payment", "refund", "--merchant", "kiosk-1", "o-1", "2.00", "--refund-id", defaultRefundID("kiosk-1", "o-1", 100), "--reason", "x")...)
			r.settleOK(t, "refunded 3.00 EUR of merchant kiosk-1's order o-1", cmd("payment", "refund", "--merchant", "kiosk-1", "o-1", "--reason", "the rest")...)
			r.refused(t, 1, "nothing is left to refund", cmd("payment", "refund", "--merchant", "kiosk-1", "o-1", "--reason", "x")...)

			// 10.00 − 2.50 − 4.00 + 5.00 + 2.50 + 1.00 + 3.00
			const want = 1500
			if got := r.balanceOnServer(t, r.a); got != want {
				t.Errorf("the running server answers account %s's balance %d, want %d", a, got, want)
			}
			out = r.settleOK(t, "balance       15.00 EUR", cmd("account", "show", a)...)
			if !regexp.MustCompile(regexp.QuoteMeta(r.tapA)+`\s.*voided`).MatchString(out) ||
				!regexp.MustCompile(`kiosk-1\s+o-1\s+4\.00 EUR\s+4\.00 EUR\s+0\.00 EUR`).MatchString(out) {
				t.Errorf("account show after the acts:\n%s", out)
			}

			// Audited, each in its own transaction, as who ran it.
			st := r.open(t)
			defer st.Close()
			entries, err := st.AuditLog(r.ctx, 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]int{}
			for _, e := range entries {
				if e.Actor != actor {
					continue
				}
				got[e.Action]++
				if e.Action == "topup" && e.Target != a && e.Target != fmt.Sprint(r.c) {
					t.Errorf("top-up audited on %q, want %s or %d", e.Target, a, r.c)
				}
			}
			// topup: the top-up and its replay (as the API audits one);
			// a void and refunds again are not (nothing changed).
			if got["topup"] != 4 || got["void_tap"] != 2 || got["refund"] != 2 {
				t.Errorf("audit entries by %s: %v; want topup 4 (one a replay), void_tap 2, refund 2", actor, got)
			}
		})
	}
}

// TestRefundTheRestAfterTheSameAmount: half of an order refunded, then
// "the rest" (no amount): its refund id was derived from the amount
// alone, the first refund's, and the ledger answered it as that refund's
// retry: "was made already: nothing changed", exit 0, and the rider never
// had the rest back. The rest is its own refund; run twice, still one.
func TestRefundTheRestAfterTheSameAmount(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			r := newMoneyRig(t, backend)
			cmd := func(args ...string) []string { return append(args, "--data", r.data, "--db", r.db) }
			// o-1 is a 4.00 EUR payment of account a.
			r.settleOK(t, "refunded 2.00 EUR of merchant kiosk-1's order o-1", cmd("payment", "refund", "--merchant", "kiosk-1", "o-1", "2.00", "--reason", "half")...)
			r.settleOK(t, "refunded 2.00 EUR of merchant kiosk-1's order o-1", cmd("payment", "refund", "--merchant", "kiosk-1", "o-1", "--reason", "the rest")...)
			r.refused(t, 1, "nothing is left to refund", cmd("payment", "refund", "--merchant", "kiosk-1", "o-1", "--reason", "the rest again")...)
			out := r.settleOK(t, "", cmd("account", "show", fmt.Sprint(r.a))...)
			if !regexp.MustCompile(`kiosk-1\s+o-1\s+4\.00 EUR\s+4\.00 EUR\s+0\.00 EUR`).MatchString(out) {
				t.Errorf("after half and the rest, o-1 should be refunded whole:\n%s", out)
			}
		})
	}
}

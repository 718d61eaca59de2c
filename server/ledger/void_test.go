package ledger

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// sumDay adds up a day's summaries over its routes.
func sumDay(t *testing.T, s *Store, day string) DaySummary {
	t.Helper()
	ctx := context.Background()
	if _, err := s.RefreshSummaries(ctx); err != nil {
		t.Fatal(err)
	}
	rev, err := s.Revenue(ctx, day, day)
	if err != nil {
		t.Fatal(err)
	}
	var d DaySummary
	for _, r := range rev {
		d.Add(r)
	}
	return d
}

// voidLedger is ledgerWithTable with a clock on the tests' day (the
// console sums days near its clock); it returns the clock.
func voidLedger(t *testing.T, db *testDB) (*Store, *clock) {
	c := &clock{t: at(600)}
	s := db.open(t, &Options{Now: c.now})
	putTableAt(t, s, tableV1, tablesSince)
	return s, c
}

// An operator voids a wrongly charged tap: its fare comes back as a
// fare_correction, the later taps of its day are re-rated as if it had
// never been charged (a transfer becomes the full fare), a second void
// changes nothing, a late tap of the day keeps it void, revenue drops it,
// the audit trail says who and why, and verify stays clean.
func TestVoidTap(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s, c := voidLedger(t, db)
		acct := newAccount(t, s, 5000)
		res := commit(t, s,
			mkTap("bus-1", 1, acct, at(0), ""),   // 250
			mkTap("bus-2", 1, acct, at(30), ""),  // transfer: 0
			mkTap("bus-1", 2, acct, at(120), ""), // 250
		)
		if res[0].Charge != 250 || res[1].Charge != 0 || res[2].Charge != 250 {
			t.Fatalf("charges %+v", res)
		}
		if d := sumDay(t, s, "2026-03-10"); d.Charged != 500 {
			t.Fatalf("revenue before the void %+v", d)
		}
		v, err := s.VoidTap(ctx, tid("bus-1", 1), "charged twice by a faulty reader", "operator:alice")
		if err != nil {
			t.Fatal(err)
		}
		// bus-2's transfer loses its full fare: it now pays 250 itself.
		if v.Already || v.Returned != 0 || v.Account != acct || v.Day != "2026-03-10" {
			t.Errorf("void %+v (the fare back, the transfer charged: net 0)", v)
		}
		ch := charges(t, s, acct)
		if ch[tid("bus-1", 1)] != 0 || ch[tid("bus-2", 1)] != 250 || ch[tid("bus-1", 2)] != 250 {
			t.Errorf("charges after the void %v", ch)
		}
		if b := balance(t, s, acct); b != 5000-500 {
			t.Errorf("balance %d", b)
		}
		ps, err := s.Postings(ctx, acct, 0)
		if err != nil {
			t.Fatal(err)
		}
		var back bool
		for _, p := range ps {
			if p.TapID == tid("bus-1", 1) && p.Kind == KindFareCorrection && p.Amount == 250 {
				back = true
			}
		}
		if !back {
			t.Errorf("no fare_correction +250 for the voided tap: %+v", ps)
		}
		rides, err := s.Rides(ctx, acct, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rides {
			if r.TapID == tid("bus-1", 1) && (r.Flag != FlagVoided || r.Charge != 0) {
				t.Errorf("voided ride %+v", r)
			}
		}
		// Again: nothing changes, and it says so.
		n := len(ps)
		v, err = s.VoidTap(ctx, tid("bus-1", 1), "again", "operator:alice")
		if err != nil || !v.Already || v.Returned != 0 {
			t.Errorf("second void %+v, %v", v, err)
		}
		if ps, _ := s.Postings(ctx, acct, 0); len(ps) != n {
			t.Errorf("second void wrote %d postings", len(ps)-n)
		}
		// A late tap of the same day, before the voided one, re-rates the
		// day from it: the voided tap stays void, bus-2 becomes a transfer
		// of the late tap.
		c.set(at(900))
		late := commit(t, s, mkTap("bus-3", 1, acct, at(-10), ""))
		if late[0].Charge != 250 {
			t.Errorf("late tap %+v", late[0])
		}
		ch = charges(t, s, acct)
		if ch[tid("bus-1", 1)] != 0 || ch[tid("bus-2", 1)] != 0 || ch[tid("bus-1", 2)] != 250 {
			t.Errorf("charges after a late tap %v", ch)
		}
		if b := balance(t, s, acct); b != 5000-500 {
			t.Errorf("balance %d", b)
		}
		if d := sumDay(t, s, "2026-03-10"); d.Charged != 500 || d.Flagged != 1 || d.Taps != 4 {
			t.Errorf("revenue after the void %+v", d)
		}
		if err := s.CheckInvariants(ctx); err != nil {
			t.Errorf("CheckInvariants: %v", err)
		}
		// The audit trail: who, which tap, why, what came back.
		log, err := s.AuditLog(ctx, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		var found bool
		for _, e := range log {
			if e.Action == "void_tap" && e.Target == tid("bus-1", 1) && e.Actor == "operator:alice" &&
				strings.Contains(e.Detail, "faulty reader") && strings.Contains(e.Detail, "returned 0") {
				found = true
			}
		}
		if !found {
			t.Errorf("no audit entry for the void: %+v", log)
		}
	})
}

// Voiding a tap under the daily cap: the capped taps after it pay what the
// cap leaves, and the fare comes back net.
func TestVoidTapCap(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s, _ := voidLedger(t, db)
		acct := newAccount(t, s, 5000)
		commit(t, s,
			mkTap("bus-1", 1, acct, at(0), ""),   // 250
			mkTap("bus-1", 2, acct, at(120), ""), // 250
			mkTap("bus-1", 3, acct, at(240), ""), // capped to 200
			mkTap("bus-1", 4, acct, at(360), ""), // capped to 0
		)
		if b := balance(t, s, acct); b != 5000-700 {
			t.Fatalf("balance %d", b)
		}
		v, err := s.VoidTap(ctx, tid("bus-1", 2), "rider was not on this bus", "operator")
		if err != nil {
			t.Fatal(err)
		}
		// Tap 2's 250 comes back, but tap 3 now pays 250 and tap 4 200:
		// 250 + 250 + 200 = 700, the cap again, so nothing comes back net.
		c := charges(t, s, acct)
		if c[tid("bus-1", 2)] != 0 || c[tid("bus-1", 3)] != 250 || c[tid("bus-1", 4)] != 200 {
			t.Errorf("charges %v", c)
		}
		if v.Returned != 0 || balance(t, s, acct) != 5000-700 {
			t.Errorf("void %+v, balance %d", v, balance(t, s, acct))
		}
		// Void the last charged tap too: the day now costs 500.
		v, err = s.VoidTap(ctx, tid("bus-1", 4), "test", "operator")
		if err != nil || v.Returned != 200 || balance(t, s, acct) != 5000-500 {
			t.Errorf("second void %+v, %v, balance %d", v, err, balance(t, s, acct))
		}
		// The voided taps count as corrected with the corrections that
		// gave their fares back (they were counted in Corrections alone).
		if d := sumDay(t, s, "2026-03-10"); d.Charged != 500 || d.Flagged != 2 || d.Corrected != 3 {
			t.Errorf("revenue %+v; want 500 charged, 2 flagged, 3 corrected (taps 2, 3 and 4)", d)
		}
	})
}

// VoidTap refuses what it cannot void, writing nothing.
func TestVoidTapRefused(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 5000)
		commit(t, s,
			mkTap("bus-1", 1, acct, at(0), ""),
			mkTap("bus-2", 1, acct, at(30), ""),   // transfer: charged 0
			mkTap("bus-3", 1, 999999, at(30), ""), // unknown account: flagged
		)
		if _, err := s.VoidTap(ctx, tid("bus-9", 1), "x", "operator"); !errors.Is(err, ErrNotFound) {
			t.Errorf("unknown tap: %v", err)
		}
		if _, err := s.VoidTap(ctx, tid("bus-2", 1), "x", "operator"); !errors.Is(err, ErrNotVoidable) {
			t.Errorf("uncharged tap: %v", err)
		}
		if _, err := s.VoidTap(ctx, tid("bus-3", 1), "x", "operator"); !errors.Is(err, ErrNotVoidable) {
			t.Errorf("flagged tap: %v", err)
		}
		if _, err := s.VoidTap(ctx, tid("bus-1", 1), "", "operator"); !errors.Is(err, ErrInvalid) {
			t.Errorf("no reason: %v", err)
		}
		if b := balance(t, s, acct); b != 5000-250 {
			t.Errorf("balance %d", b)
		}
	})
}

// A voided tap whose payment code is taken over by an earlier tap of the
// same code (arriving late) stays uncharged: the duplicate_code refund
// path refunds nothing more (its charge is 0 already). Its flag becomes
// duplicate_code (the code's reuse count and its duplicate taps must
// agree: verify), so a second void is refused as flagged; the audit trail
// keeps the void.
func TestVoidTapCodeTakenOver(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s, _ := voidLedger(t, db)
		acct := newAccount(t, s, 5000)
		held := mkTap("bus-1", 1, acct, at(60), "")
		commit(t, s, held)
		if _, err := s.VoidTap(ctx, held.ID, "wrong route", "operator"); err != nil {
			t.Fatal(err)
		}
		early := mkTap("bus-2", 1, acct, at(0), "")
		early.CodeKey, early.CodeHash = held.CodeKey, held.CodeHash
		res := commit(t, s, early)
		if res[0].Charge != 250 || res[0].Flag != "" {
			t.Errorf("earlier tap of the code %+v", res[0])
		}
		if c := charges(t, s, acct); c[held.ID] != 0 {
			t.Errorf("voided tap charged %d after its code was taken over", c[held.ID])
		}
		if b := balance(t, s, acct); b != 5000-250 {
			t.Errorf("balance %d", b)
		}
		if _, err := s.VoidTap(ctx, held.ID, "again", "operator"); !errors.Is(err, ErrNotVoidable) {
			t.Errorf("void again: %v", err)
		}
	})
}

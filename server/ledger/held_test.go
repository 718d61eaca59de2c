package ledger

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestHeldPages: every held record is read, a page at a time, in key
// order (HeldTapsAfter), and those held since a moment in time order
// (HeldTapsReceivedSince), however many come before them.
func TestHeldPages(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		clock := time.Now()
		s := db.open(t, &Options{Now: func() time.Time { return clock }})
		hold := func(device string, from, n int) {
			var recs []HeldTap
			for i := range n {
				recs = append(recs, HeldTap{DeviceID: device, Epoch: "e", Seq: uint64(from + i), Reason: "unknown_issuer_key",
					Record: []byte{byte(i)}})
			}
			if err := s.Hold(ctx, recs); err != nil {
				t.Fatal(err)
			}
		}
		hold("bus-b", 1, 5)
		clock = clock.Add(time.Minute)
		since := clock
		hold("bus-a", 1, 4)
		clock = clock.Add(time.Minute)
		hold("bus-c", 1, 3)
		// pages reads every page of n records, each after the last one
		// of the page before, and names the records read.
		pages := func(n int, read func(after HeldTap, n int) ([]HeldTap, error)) []string {
			var got []string
			var after HeldTap
			for range 20 {
				page, err := read(after, n)
				if err != nil {
					t.Fatal(err)
				}
				for _, h := range page {
					got = append(got, fmt.Sprint(h.DeviceID, "/", h.Seq))
				}
				if len(page) < n {
					break
				}
				after = page[len(page)-1]
			}
			return got
		}
		all := pages(2, func(after HeldTap, n int) ([]HeldTap, error) { return s.HeldTapsAfter(ctx, after, n) })
		want := "[bus-a/1 bus-a/2 bus-a/3 bus-a/4 bus-b/1 bus-b/2 bus-b/3 bus-b/4 bus-b/5 bus-c/1 bus-c/2 bus-c/3]"
		if fmt.Sprint(all) != want {
			t.Errorf("held in pages of 2: %v, want %s", all, want)
		}
		recent := pages(3, func(after HeldTap, n int) ([]HeldTap, error) {
			return s.HeldTapsReceivedSince(ctx, "unknown_issuer_key", since, after, n)
		})
		if want := "[bus-a/1 bus-a/2 bus-a/3 bus-a/4 bus-c/1 bus-c/2 bus-c/3]"; fmt.Sprint(recent) != want {
			t.Errorf("held since a minute in: %v, want %s", recent, want)
		}
		if page, err := s.HeldTapsReceivedSince(ctx, "other", since, HeldTap{}, 3); err != nil || len(page) != 0 {
			t.Errorf("another reason: %v, %v", page, err)
		}
	})
}

// TestHeldConflictStaysHeld: a held record committed as a conflict (its
// tap id settled meanwhile with other contents) stays held until it is
// quarantined, which releases it in the same transaction; a record
// committed as a tap, or as a duplicate of itself, leaves the held list
// with the commit. Released with the commit, a conflict was lost if the
// process died before the quarantine.
func TestHeldConflictStaysHeld(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 1000)
		settled := mkTap("bus-1", 1, acct, at(10), "")
		conflict := mkTap("bus-1", 1, acct, at(20), "") // the same id, another time
		conflict.Record = []byte("other record")
		fresh := mkTap("bus-1", 2, acct, at(30), "")
		var recs []HeldTap
		for _, tp := range []Tap{conflict, fresh} {
			recs = append(recs, HeldTap{DeviceID: tp.DeviceID, Epoch: tp.Epoch, Seq: tp.Seq, Reason: "unknown_issuer_key", Record: tp.Record})
		}
		if err := s.Hold(ctx, recs); err != nil {
			t.Fatal(err)
		}
		commit(t, s, settled) // another record of the id, settled while they wait
		conflict.Held, fresh.Held = true, true
		res, err := s.CommitTaps(ctx, []Tap{conflict, fresh})
		if err != nil {
			t.Fatal(err)
		}
		if !res[0].Conflict || res[1].Duplicate || res[1].Conflict {
			t.Fatalf("results %+v, want a conflict and a new tap", res)
		}
		if n, err := s.HeldCount(ctx); err != nil || n != 1 {
			t.Fatalf("held after the commit: %d, %v; want the conflict alone", n, err)
		}
		charged := balance(t, s, acct)
		// The process dies here and the recheck commits the page again:
		// still a conflict, still held.
		if res, err := s.CommitTaps(ctx, []Tap{conflict}); err != nil || !res[0].Conflict {
			t.Fatalf("again: %+v, %v", res, err)
		}
		if n, _ := s.HeldCount(ctx); n != 1 {
			t.Fatalf("held after the second commit: %d, want 1", n)
		}
		if err := s.Quarantine(ctx, []QuarantinedRecord{{DeviceID: conflict.DeviceID, Epoch: conflict.Epoch, Seq: conflict.Seq,
			Reason: "tap_id_conflict", Record: conflict.Record}}); err != nil {
			t.Fatal(err)
		}
		if n, _ := s.HeldCount(ctx); n != 0 {
			t.Errorf("held after the quarantine: %d, want 0", n)
		}
		if n, _ := s.QuarantineCount(ctx); n != 1 {
			t.Errorf("quarantined: %d, want 1", n)
		}
		if got := balance(t, s, acct); got != charged || got == 1000 {
			t.Errorf("balance %d, want %d: the rides charged once, the conflict not", got, charged)
		}
		if err := s.CheckInvariants(ctx); err != nil {
			t.Error(err)
		}
	})
}

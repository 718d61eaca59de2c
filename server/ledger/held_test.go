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

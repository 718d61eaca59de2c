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
		var all []string
		for after, pages := (HeldTap{}), 0; pages < 20; pages++ {
			page, err := s.HeldTapsAfter(ctx, after, 2)
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range page {
				all = append(all, fmt.Sprint(h.DeviceID, "/", h.Seq))
			}
			if len(page) < 2 {
				break
			}
			after = page[len(page)-1]
		}
		want := "[bus-a/1 bus-a/2 bus-a/3 bus-a/4 bus-b/1 bus-b/2 bus-b/3 bus-b/4 bus-b/5 bus-c/1 bus-c/2 bus-c/3]"
		if fmt.Sprint(all) != want {
			t.Errorf("held in pages of 2: %v, want %s", all, want)
		}
		var recent []string
		for after, pages := (HeldTap{}), 0; pages < 20; pages++ {
			page, err := s.HeldTapsReceivedSince(ctx, "unknown_issuer_key", since, after, 3)
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range page {
				recent = append(recent, fmt.Sprint(h.DeviceID, "/", h.Seq))
			}
			if len(page) < 3 {
				break
			}
			after = page[len(page)-1]
		}
		if want := "[bus-a/1 bus-a/2 bus-a/3 bus-a/4 bus-c/1 bus-c/2 bus-c/3]"; fmt.Sprint(recent) != want {
			t.Errorf("held since a minute in: %v, want %s", recent, want)
		}
		if page, err := s.HeldTapsReceivedSince(ctx, "other", since, HeldTap{}, 3); err != nil || len(page) != 0 {
			t.Errorf("another reason: %v, %v", page, err)
		}
	})
}

package ledger

import (
	"context"
	"fmt"
	"math"
	"testing"
)

// TestAsidePagesPastAHugeSeq: a damaged device's quarantined record may
// carry a sequence number above 2^63-1 (kept as its 64 bits, a negative
// BIGINT). When such a record ends a page, the next page starts from it:
// AsideBefore refused it ("seq out of range"), and every record older
// than it could no longer be listed by the console.
func TestAsidePagesPastAHugeSeq(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		huge := uint64(math.MaxInt64) + 5
		// One call: one received time. Newest first by key, the huge seq
		// (negative as stored) is last of bus-q's records.
		recs := []QuarantinedRecord{{DeviceID: "bus-q", Epoch: "e", Seq: huge, Reason: "bad_record", Record: []byte("x")}}
		for i := range 3 {
			recs = append(recs, QuarantinedRecord{DeviceID: "bus-q", Epoch: "e", Seq: uint64(i + 1), Reason: "bad_record", Record: []byte("x")})
		}
		recs = append(recs, QuarantinedRecord{DeviceID: "a-bus", Epoch: "e", Seq: 1, Reason: "bad_record", Record: []byte("x")})
		if err := s.Quarantine(ctx, recs); err != nil {
			t.Fatal(err)
		}
		for _, reason := range []string{"", "bad_record"} {
			var listed []string
			var last AsideRecord
			for range 10 {
				page, err := s.AsideBefore(ctx, false, reason, last, 1)
				if err != nil {
					t.Fatalf("reason %q: the page after %s/%d: %v", reason, last.DeviceID, last.Seq, err)
				}
				if len(page) == 0 {
					break
				}
				listed = append(listed, fmt.Sprint(page[0].DeviceID, "/", page[0].Seq))
				last = page[0]
			}
			if want := fmt.Sprint("[bus-q/3 bus-q/2 bus-q/1 bus-q/", huge, " a-bus/1]"); fmt.Sprint(listed) != want {
				t.Errorf("reason %q: pages of one list %v, want %s", reason, listed, want)
			}
		}
	})
}

package ledger

import (
	"context"
	"testing"
)

// A tap whose code failed re-verification is stored flagged and charged
// nothing, and its code stays unclaimed; a record that is not a tap at all
// is quarantined, idempotently.
func TestInvalidCodeAndQuarantine(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s := ledgerWithTable(t, db)
		acct := newAccount(t, s, 1000)
		bad := mkTap("bus-1", 1, acct, at(0), "42")
		bad.Flag = FlagInvalidCode
		res := commit(t, s, bad)
		if res[0].Flag != FlagInvalidCode || res[0].Charge != 0 {
			t.Fatalf("invalid-code tap: %+v", res[0])
		}
		if got := balance(t, s, acct); got != 1000 {
			t.Errorf("balance after an invalid-code tap = %d, want 1000", got)
		}
		// The same code, genuinely valid on another device, is charged: the
		// invalid tap did not claim it.
		good := mkTap("bus-2", 1, acct, at(0), "42")
		good.CodeKey = bad.CodeKey
		if res := commit(t, s, good); res[0].Flag != "" || res[0].Charge == 0 {
			t.Errorf("valid tap of the same code: %+v", res[0])
		}
		other := mkTap("bus-1", 2, acct, at(1), "42")
		other.Flag = "duplicate_code"
		_, err := s.CommitTaps(context.Background(), []Tap{other})
		wantErr(t, err, ErrInvalid)

		q := QuarantinedRecord{DeviceID: "bus-1", Epoch: "e1", Seq: 3, Reason: "malformed_record: truncated", Record: []byte{1, 2, 3}}
		for range 2 {
			if err := s.Quarantine(context.Background(), []QuarantinedRecord{q}); err != nil {
				t.Fatal(err)
			}
		}
		if n, err := s.QuarantineCount(context.Background()); err != nil || n != 1 {
			t.Errorf("QuarantineCount = %d, %v, want 1", n, err)
		}
		wantErr(t, s.Quarantine(context.Background(), []QuarantinedRecord{{DeviceID: "a/b", Reason: "x"}}), ErrInvalid)
		// A seq above what a tap id holds (a damaged device's) is kept too,
		// once: refused, its batch was never acked and the device's queue
		// stopped for good.
		huge := QuarantinedRecord{DeviceID: "bus-1", Epoch: "e1", Seq: 1<<63 + 5, Reason: "seq out of range", Record: []byte{4}}
		for range 2 {
			if err := s.Quarantine(context.Background(), []QuarantinedRecord{huge}); err != nil {
				t.Fatalf("quarantine of seq 2^63+5: %v", err)
			}
		}
		if n, err := s.QuarantineCount(context.Background()); err != nil || n != 2 {
			t.Errorf("QuarantineCount = %d, %v, want 2", n, err)
		}
	})
}

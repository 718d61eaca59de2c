package ledger

import (
	"testing"
	"time"
)

// TestReuseRuleBounds: the reuse rule forgives what a quick transfer looks
// like and nothing else. One code shown at two doors of one bus is two
// people on one fare: the credential is denied. Quick transfers on two
// buses are forgiven at most MaxForgivenReuses times an account and
// service day, counted across commits and within one; the next is denied.
func TestReuseRuleBounds(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s := ledgerWithTable(t, db)
		pair := func(acct uint64, seq uint64, when time.Time, gap time.Duration, vehicle string) (Tap, Tap) {
			a := mkTap("door-front", seq, acct, when, "")
			b := mkTap("door-rear", seq, acct, when.Add(gap), "")
			b.CodeKey, b.Vehicle = a.CodeKey, vehicle
			return a, b
		}
		denied := func(acct uint64) bool { return hasDeny(denyList(t, s), acct, 1, ReasonCodeReused) }

		doors := newAccount(t, s, 5000)
		a, b := pair(doors, 1, at(0), time.Minute, "bus-7") // one bus, two doors
		commit(t, s, a, b)
		if !denied(doors) {
			t.Errorf("one code at two doors of one bus was forgiven")
		}
		rider := newAccount(t, s, 5000)
		for i := range MaxForgivenReuses {
			a, b := pair(rider, uint64(10+i), at(60*(i+1)), time.Minute, "bus-8")
			if i == 0 {
				commit(t, s, a)
				commit(t, s, b)
			} else {
				commit(t, s, a, b)
			}
			if denied(rider) {
				t.Fatalf("quick transfer %d denied", i+1)
			}
		}
		x, y := pair(rider, 20, at(600), time.Minute, "bus-9")
		third := commit(t, s, x, y)
		if !denied(rider) || third[1].Flag != FlagDuplicateCode || len(third[1].Notes) != 0 {
			t.Errorf("reuse %d of the day forgiven: %+v", MaxForgivenReuses+1, third)
		}
		// Another service day starts the count again.
		other := newAccount(t, s, 5000)
		for i := range MaxForgivenReuses {
			a, b := pair(other, uint64(30+i), at(60*(i+1)), time.Minute, "bus-8")
			commit(t, s, a, b)
		}
		a, b = pair(other, 40, at(60*24+60), time.Minute, "bus-8")
		commit(t, s, a, b)
		if denied(other) {
			t.Errorf("a quick transfer on the next service day was counted with the day before")
		}
	})
}

package ledger

import (
	"context"
	"slices"
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

// TestSameDeviceReuseNotTheRiders: one device sends a code it was shown
// twice, as two records of its own. A validator refuses a code it took
// (code_used), so that is the device's word alone — a stolen validator
// got every rider who tapped it deny-listed, pass and account, that way
// (an attack review), and a validator whose queue file was put back from
// a backup did the same to honest riders. The second record is charged
// nothing and noted same_device_reuse; the rider is not denied. The same
// code at another device still denies the pass.
func TestSameDeviceReuseNotTheRiders(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s := ledgerWithTable(t, db)
		victim := newAccount(t, s, 2000)
		// The wallet renews at half-life: a second live pass.
		if _, err := s.IssueCredentialSerial(context.Background(), victim, time.Now().Add(24*time.Hour), riderKey(victim)); err != nil {
			t.Fatal(err)
		}
		shown := mkTap("evil-bus", 1, victim, at(0), "")
		again := mkTap("evil-bus", 2, victim, at(0).Add(time.Second), "")
		again.CodeKey = shown.CodeKey
		commit(t, s, shown)
		r := commit(t, s, again)
		if r[0].Flag != FlagDuplicateCode || r[0].Charge != 0 || !slices.Contains(r[0].Notes, NoteSameDeviceReuse) {
			t.Errorf("the device's second record of the code: %+v; want duplicate_code, nothing charged, noted %s", r[0], NoteSameDeviceReuse)
		}
		if dl := denyList(t, s); hasDeny(dl, victim, 1, ReasonCodeReused) || hasDeny(dl, victim, 0, ReasonCodeReusedAccount) {
			t.Errorf("one device's word deny-listed the rider: %+v", dl.Entries)
		}
		if b := balance(t, s, victim); b != 2000-250 {
			t.Errorf("balance %d; want one fare", b)
		}
		// Both in one batch, and then at another device: that one denies.
		other := newAccount(t, s, 2000)
		a, b := mkTap("evil-bus", 10, other, at(30), ""), mkTap("evil-bus", 11, other, at(31), "")
		b.CodeKey = a.CodeKey
		commit(t, s, a, b)
		if hasDeny(denyList(t, s), other, 1, ReasonCodeReused) {
			t.Error("one device's two records in one batch deny-listed the rider")
		}
		c := mkTap("bus-2", 1, other, at(40), "")
		c.CodeKey = a.CodeKey
		commit(t, s, c)
		if !hasDeny(denyList(t, s), other, 1, ReasonCodeReused) {
			t.Error("the code shown at a second device too: not denied")
		}
	})
}

// TestSameDeviceReuseNotCounted: the device's second record of a code is
// not counted as the rider's reuse either: the rider's quick transfer on
// another bus with the same code, which the rule forgives, is forgiven
// after it too (it was denied: the device's record had made it the
// second reuse).
func TestSameDeviceReuseNotCounted(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s := ledgerWithTable(t, db)
		victim := newAccount(t, s, 5000)
		a := mkTap("evil-bus", 1, victim, at(0), "")
		dup := mkTap("evil-bus", 2, victim, at(0).Add(time.Second), "")
		dup.CodeKey = a.CodeKey
		b := mkTap("bus-8-door", 1, victim, at(0).Add(time.Minute), "")
		b.CodeKey, b.Vehicle = a.CodeKey, "bus-8"
		commit(t, s, a)
		commit(t, s, dup)
		r := commit(t, s, b)
		if hasDeny(denyList(t, s), victim, 1, ReasonCodeReused) || !slices.Contains(r[0].Notes, NoteCodeReuseWindow) {
			t.Errorf("the rider's quick transfer after the device's duplicate: %+v, denied %v; want forgiven",
				r[0], hasDeny(denyList(t, s), victim, 1, ReasonCodeReused))
		}
	})
}

// TestOtherDeviceReuseCountsOnce: a stolen validator shown a code that
// another validator took sends it twice, as two records of its own (in
// one batch, or one a batch). Each device counts once a code: its second
// record is its word alone (same_device_reuse), so the rider is not denied
// (the first is the rule's: a quick transfer on another bus, forgiven).
// It was: each record counted, the second reuse denied the pass and, with
// a second pass held, the account (an attack review). Records of a
// second other device still count.
func TestOtherDeviceReuseCountsOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s := ledgerWithTable(t, db)
		denied := func(acct uint64) bool {
			dl := denyList(t, s)
			return hasDeny(dl, acct, 1, ReasonCodeReused) || hasDeny(dl, acct, 0, ReasonCodeReusedAccount)
		}
		for _, oneBatch := range []bool{false, true} {
			victim := newAccount(t, s, 5000)
			if _, err := s.IssueCredentialSerial(context.Background(), victim, time.Now().Add(24*time.Hour), riderKey(victim)); err != nil {
				t.Fatal(err)
			}
			seq := uint64(1)
			if oneBatch {
				seq = 10
			}
			honest := mkTap("bus-1", seq, victim, at(0), "")
			honest.Vehicle = "v1"
			commit(t, s, honest)
			x, y := mkTap("evil-bus", seq, victim, at(0).Add(20*time.Second), ""), mkTap("evil-bus", seq+1, victim, at(0).Add(30*time.Second), "")
			x.CodeKey, y.CodeKey, x.Vehicle, y.Vehicle = honest.CodeKey, honest.CodeKey, "v9", "v9"
			var r []TapResult
			if oneBatch {
				r = commit(t, s, x, y)
			} else {
				r = append(commit(t, s, x), commit(t, s, y)...)
			}
			if denied(victim) {
				t.Fatalf("one batch %v: a second device's two records of a code deny-listed the rider: %+v", oneBatch, denyList(t, s).Entries)
			}
			if !slices.Contains(r[0].Notes, NoteCodeReuseWindow) || r[1].Flag != FlagDuplicateCode || !slices.Contains(r[1].Notes, NoteSameDeviceReuse) {
				t.Errorf("one batch %v: the device's records %+v; want the first forgiven, the second its word (%s)", oneBatch, r, NoteSameDeviceReuse)
			}
			if b := balance(t, s, victim); b != 5000-250 {
				t.Errorf("one batch %v: balance %d; want one fare", oneBatch, b)
			}
			// A third device's record of the code is the second reuse.
			z := mkTap("bus-3", seq, victim, at(0).Add(40*time.Second), "")
			z.CodeKey, z.Vehicle = honest.CodeKey, "v3"
			commit(t, s, z)
			if !denied(victim) {
				t.Errorf("one batch %v: the code at a third device: not denied", oneBatch)
			}
		}
	})
}

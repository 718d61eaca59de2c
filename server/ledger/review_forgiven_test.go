package ledger

import (
	"testing"
	"time"
)

// TestReJudgedForgivenReuseNotCountedTwice: a code whose one reuse was
// forgiven before (code_reuse_window) is judged again when a same-device
// record of it arrives; in the same commit a second quick transfer on
// another code, the day's second forgiven reuse, must stay forgiven (as it
// is when the two arrive in separate commits). The re-judged code was
// counted twice: once stored (its note) and once in the commit's count.
func TestReJudgedForgivenReuseNotCountedTwice(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		run := func(together, lateFirst bool) bool {
			s := ledgerWithTable(t, newDB(t, db.backend))
			acct := newAccount(t, s, 5000)
			// Code X: kept by dev-A on bus-1, shown again 20 s later on
			// dev-B, bus-2: forgiven (the day's first).
			a1 := mkTap("dev-A", 1, acct, at(0), "")
			b1 := mkTap("dev-B", 1, acct, at(0).Add(20*time.Second), "")
			a1.Vehicle, b1.Vehicle = "bus-1", "bus-2"
			b1.CodeKey, b1.CodeHash = a1.CodeKey, a1.CodeHash
			// dev-A's second record of X: its word alone.
			a2 := mkTap("dev-A", 2, acct, at(0).Add(40*time.Second), "")
			a2.Vehicle, a2.CodeKey, a2.CodeHash = "bus-1", a1.CodeKey, a1.CodeHash
			if lateFirst {
				// Or dev-B's second record arrived first (forgiven),
				// its first one comes with Y's reuse: the stored one
				// becomes dev-B's word, the new one the forgiven reuse.
				a2 = mkTap("dev-B", 2, acct, at(0).Add(10*time.Second), "")
				a2.Vehicle, a2.CodeKey, a2.CodeHash = "bus-2", a1.CodeKey, a1.CodeHash
			}
			commit(t, s, a1, b1)
			// Code Y, later: kept by dev-C on bus-3, shown again on dev-D,
			// bus-4: the day's second forgiven reuse.
			c := mkTap("dev-C", 1, acct, at(30), "")
			d := mkTap("dev-D", 1, acct, at(30).Add(20*time.Second), "")
			c.Vehicle, d.Vehicle = "bus-3", "bus-4"
			d.CodeKey, d.CodeHash = c.CodeKey, c.CodeHash
			commit(t, s, c)
			if together {
				commit(t, s, a2, d)
			} else {
				commit(t, s, a2)
				commit(t, s, d)
			}
			if err := s.CheckInvariants(t.Context()); err != nil {
				t.Fatal(err)
			}
			return hasDeny(denyList(t, s), acct, 1, ReasonCodeReused)
		}
		for _, lateFirst := range []bool{false, true} {
			if run(false, lateFirst) {
				t.Fatalf("late first %v, separate commits: credential denied, want the second quick transfer forgiven", lateFirst)
			}
			if run(true, lateFirst) {
				t.Errorf("late first %v, one commit: credential denied for the day's second forgiven reuse (the re-judged code's forgiven reuse counted twice)", lateFirst)
			}
		}
	})
}

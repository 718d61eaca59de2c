package ledger

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// holdAccounts locks accounts from another transaction; release commits it.
func holdAccounts(t *testing.T, s *Store, ids ...uint64) (release func()) {
	t.Helper()
	tx, err := s.db.BeginTx(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if _, err := tx.Exec(`SELECT id FROM accounts WHERE id = $1 FOR UPDATE`, int64(id)); err != nil {
			t.Fatal(err)
		}
	}
	done := false
	t.Cleanup(func() {
		if !done {
			tx.Rollback()
		}
	})
	return func() {
		if !done {
			done = true
			if err := tx.Commit(); err != nil {
				t.Error(err)
			}
		}
	}
}

// The server dies (the second transaction fails) between the two parts;
// the device resends the whole batch: each tap once, results and
// balances as one uncontended commit gives them.
func TestSplitCrashBetweenParts(t *testing.T) {
	db := newPostgresDB(t)
	s := ledgerWithTable(t, db)
	ref := ledgerWithTable(t, newPostgresDB(t))
	held, free := newAccount(t, s, 10_000), newAccount(t, s, 10_000)
	rh, rf := newAccount(t, ref, 10_000), newAccount(t, ref, 10_000)
	if rh != held || rf != free {
		t.Fatalf("account ids differ: %d %d vs %d %d", held, free, rh, rf)
	}
	var batch []Tap
	for i := range 6 {
		a := free
		if i%2 == 0 {
			a = held
		}
		batch = append(batch, mkTap("bus-1", uint64(i+1), a, at(30*i), ""))
	}
	batch = append(batch, batch[0]) // duplicate within the batch
	want := commit(t, ref, batch...)

	release := holdAccounts(t, s, held)
	var commits atomic.Int32
	s.fault = func(point string) error {
		if point != "commit" {
			return nil
		}
		if commits.Add(1) == 1 {
			go func() { time.Sleep(50 * time.Millisecond); release() }()
			return nil
		}
		return errors.New("crash")
	}
	if _, err := s.CommitTaps(context.Background(), batch); err == nil {
		t.Fatal("CommitTaps succeeded through the injected crash")
	}
	if commits.Load() != 2 {
		t.Fatalf("%d commits, want the split into two", commits.Load())
	}
	s.fault = nil
	got := commit(t, s, batch...)
	for i := range got {
		if got[i].Charge != want[i].Charge || got[i].Flag != want[i].Flag || got[i].ID != want[i].ID {
			t.Errorf("resent result %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	sameBalances(t, s, ref, held, free)
}

// A mixed batch split around a held rider gives the results one
// uncontended commit gives: duplicates within the batch, unknown
// accounts, flagged taps, a code used twice, transfers and the cap.
func TestSplitMatchesOneCommit(t *testing.T) {
	s := ledgerWithTable(t, newPostgresDB(t))
	ref := ledgerWithTable(t, newPostgresDB(t))
	var accts [3]uint64
	for i := range accts {
		accts[i] = newAccount(t, s, 10_000)
		if r := newAccount(t, ref, 10_000); r != accts[i] {
			t.Fatal("ids differ")
		}
	}
	held := accts[0]
	var batch []Tap
	seq := uint64(0)
	add := func(a uint64, min int, route string) *Tap {
		seq++
		batch = append(batch, mkTap("bus-2", seq, a, at(min), route))
		return &batch[len(batch)-1]
	}
	for _, a := range accts {
		for _, m := range []int{0, 20, 100, 200, 300, 400} { // transfer, cap
			add(a, m, "X1")
		}
	}
	add(999_999, 5, "")         // unknown account
	f := add(accts[1], 500, "") // flagged
	f.Flag = FlagInvalidCode
	c := add(held, 600, "") // the code of an earlier tap
	c.CodeKey, c.CodeHash = batch[0].CodeKey, batch[0].CodeHash
	c2 := add(accts[1], 600, "")
	c2.CodeKey, c2.CodeHash = batch[6].CodeKey, batch[6].CodeHash
	batch = append(batch, batch[2], batch[8]) // duplicates within the batch
	want := commit(t, ref, batch...)

	release := holdAccounts(t, s, held)
	go func() { time.Sleep(300 * time.Millisecond); release() }()
	var commits atomic.Int32
	s.fault = func(p string) error {
		if p == "commit" {
			commits.Add(1)
		}
		return nil
	}
	got := commit(t, s, batch...)
	if commits.Load() != 2 {
		t.Fatalf("%d commits, want the split", commits.Load())
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.ID != w.ID || g.Charge != w.Charge || g.Flag != w.Flag || g.Duplicate != w.Duplicate || g.Conflict != w.Conflict ||
			g.Fare != w.Fare || len(g.Notes) != len(w.Notes) {
			t.Errorf("result %d: %+v, want %+v", i, g, w)
		}
	}
	sameBalances(t, s, ref, accts[:]...)
}

// Instances commit a scenario's batches (each sent twice, as devices
// resend) while another transaction holds random accounts for a moment,
// and some commits are cancelled midway: the ledger ends as the model
// says, invariants hold (checked at cleanup).
func TestSplitStress(t *testing.T) {
	db := newPostgresDB(t)
	s1 := db.open(t, scenarioOptions)
	s2 := db.open(t, scenarioOptions)
	sc := genScenario(t, rand.New(rand.NewPCG(21, 22)), 8, 2, 10)
	sc.setUp(t, s1)
	var commits, calls atomic.Int64
	for _, s := range []*Store{s1, s2} {
		s.fault = func(p string) error {
			if p == "commit" {
				commits.Add(1)
			}
			return nil
		}
	}
	var accts []uint64
	for _, tp := range sc.taps {
		accts = append(accts, tp.Account)
	}
	stop := make(chan struct{})
	var holders sync.WaitGroup
	holders.Go(func() {
		r := rand.New(rand.NewPCG(5, 6))
		for {
			select {
			case <-stop:
				return
			default:
			}
			tx, err := s1.db.BeginTx(context.Background(), nil)
			if err != nil {
				t.Error(err)
				return
			}
			ids := []int64{int64(accts[r.IntN(len(accts))]), int64(accts[r.IntN(len(accts))])}
			slices.Sort(ids)
			for _, id := range ids {
				if _, err := tx.Exec(`SELECT id FROM accounts WHERE id = $1 FOR UPDATE`, id); err != nil {
					t.Error(err)
				}
			}
			time.Sleep(time.Duration(r.IntN(30)) * time.Millisecond)
			tx.Rollback()
		}
	})
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for w := range 4 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 7))
			for i, b := range sc.batches(r, 12) {
				s := []*Store{s1, s2}[(w+i)%2]
				ctx, cancel := context.WithCancel(context.Background())
				if r.IntN(3) == 0 {
					time.AfterFunc(time.Duration(r.IntN(40))*time.Millisecond, cancel)
				}
				_, err := s.CommitTaps(ctx, b)
				cancel()
				calls.Add(2)
				if err != nil && !errors.Is(err, context.Canceled) {
					errs <- err
				}
				if _, err := s.CommitTaps(context.Background(), b); err != nil { // the resend
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	holders.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("CommitTaps: %v", err)
	}
	t.Logf("%d CommitTaps calls, %d commits", calls.Load(), commits.Load())
	sc.verify(t, s1)
	sc.verify(t, s2)
}

// Two records with one tap id (a validator's queue restored from a
// backup reuses seqs; two batches of one device in one call): the first
// in the batch is the tap, the other a conflict, whichever rider's
// account another transaction holds.
func TestSplitSameIDTwoRiders(t *testing.T) {
	s := ledgerWithTable(t, newPostgresDB(t))
	ref := ledgerWithTable(t, newPostgresDB(t))
	a, b := newAccount(t, s, 10_000), newAccount(t, s, 10_000)
	newAccount(t, ref, 10_000)
	newAccount(t, ref, 10_000)
	batch := []Tap{mkTap("bus-4", 1, a, at(0), ""), mkTap("bus-4", 1, b, at(1), "")}
	want := commit(t, ref, batch...)
	release := holdAccounts(t, s, a)
	go func() { time.Sleep(300 * time.Millisecond); release() }()
	got := commit(t, s, batch...)
	for i := range got {
		if got[i].Charge != want[i].Charge || got[i].Conflict != want[i].Conflict || got[i].Duplicate != want[i].Duplicate {
			t.Errorf("result %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	sameBalances(t, s, ref, a, b)
}

// sameBalances checks that the accounts' balances in s are those in ref,
// the reference ledger the same taps went to in one uncontended commit
// (the accounts made in the same order in both).
func sameBalances(t *testing.T, s, ref *Store, accounts ...uint64) {
	t.Helper()
	for _, a := range accounts {
		if b, w := balance(t, s, a), balance(t, ref, a); b != w {
			t.Errorf("account %d balance %d, want %d as one uncontended commit gives", a, b, w)
		}
	}
}

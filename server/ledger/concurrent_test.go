package ledger

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Two settlement instances (two Stores on one database) receive the same
// taps at the same time, from several goroutines each, in different orders
// and batchings: every tap is charged once and the result is the model's.
func TestConcurrentInstances(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s1 := db.open(t, scenarioOptions)
		s2 := db.open(t, scenarioOptions)
		sc := genScenario(t, rand.New(rand.NewPCG(11, 12)), 8, 2, 8)
		sc.setUp(t, s1)
		const workers = 6
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(w), 99))
				for i, b := range sc.batches(r, 12) {
					s := s1
					if (w+i)%2 == 1 {
						s = s2
					}
					if _, err := s.CommitTaps(context.Background(), b); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("CommitTaps: %v", err)
		}
		sc.verify(t, s1)
		sc.verify(t, s2)
	})
}

// Concurrent payments through two instances: a retried order is paid once;
// one code pays once.
func TestConcurrentPayments(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s1 := db.open(t, nil)
		s2 := db.open(t, nil)
		acct := newAccount(t, s1, 10_000)
		req := PaymentRequest{MerchantID: "shop", OrderID: "o-1", Account: acct, Serial: 1, RiderKey: riderKey(acct),
			CodeKey: codeKey(acct, 1, at(0)), Amount: 700, Currency: "EUR"}
		other := req
		other.CodeKey = codeKey(acct, 1, at(1))
		const n = 8
		orders := make([]PaymentOrder, n)
		replayed := make([]bool, n)
		errs := make([]error, 2*n)
		var wg sync.WaitGroup
		for i := range n {
			s := []*Store{s1, s2}[i%2]
			wg.Go(func() { orders[i], replayed[i], errs[i] = s.Pay(ctx, req) })
			wg.Go(func() {
				r := other
				r.OrderID = "other-" + string(rune('a'+i))
				_, _, errs[n+i] = s.Pay(ctx, r)
			})
		}
		wg.Wait()
		firsts := 0
		for i := range n {
			if errs[i] != nil || orders[i] != orders[0] {
				t.Errorf("retry %d: %+v, %v, want %+v", i, orders[i], errs[i], orders[0])
			}
			if !replayed[i] {
				firsts++
			}
		}
		if firsts != 1 {
			t.Errorf("%d of %d tries of one order said not replayed, want the one that paid", firsts, n)
		}
		paid := 0
		for _, err := range errs[n:] {
			switch {
			case err == nil:
				paid++
			case !errors.Is(err, ErrCodeUsed):
				t.Errorf("one code, many orders: %v", err)
			}
		}
		if paid != 1 {
			t.Errorf("one code paid %d orders", paid)
		}
		if b := balance(t, s2, acct); b != 10_000-1400 {
			t.Errorf("balance %d, want %d", b, 10_000-1400)
		}
	})
}

// The idempotent administrative writes stay idempotent when two instances
// race: the same fare table, device registration and top-up at once.
func TestConcurrentIdempotentWrites(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		stores := []*Store{db.open(t, nil), db.open(t, nil)}
		acct := newAccount(t, stores[0], 0)
		v1 := mustTable(t, tableV1)
		key := riderKey(1)
		const n = 8
		errs := make([]error, 3*n)
		var wg sync.WaitGroup
		for i := range n {
			s := stores[i%2]
			wg.Go(func() { errs[i] = s.PutFareTable(ctx, v1) })
			wg.Go(func() {
				errs[n+i] = s.RegisterDevice(ctx, DeviceRegistration{ID: "bus-1", PublicKey: key, MQTTHash: "h"})
			})
			wg.Go(func() { _, errs[2*n+i] = s.TopUp(ctx, acct, 500, "psp-race") })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("write %d: %v", i, err)
			}
		}
		if b := balance(t, stores[1], acct); b != 500 {
			t.Errorf("balance %d, want 500", b)
		}
	})
}

// A small pool shared by concurrent writers and readers never runs dry:
// no transaction waits for a second connection while holding the last one.
func TestSmallPool(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		s := db.open(t, &Options{MaxOpenConns: 1, FareGrace: scenarioGrace})
		sc := genScenario(t, rand.New(rand.NewPCG(3, 4)), 4, 2, 6)
		sc.setUp(t, s)
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for w := range 6 {
			wg.Go(func() {
				for i, b := range sc.batches(rand.New(rand.NewPCG(uint64(w), 1)), 8) {
					if _, err := s.CommitTaps(ctx, b); err != nil {
						errs <- err
						return
					}
					if _, err := s.Rides(ctx, 1000+uint64(i%4), 5); err != nil {
						errs <- err
						return
					}
					if _, err := s.DenyList(ctx); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		sc.verify(t, s)
	})
}

// A top-up and a batch of taps of one account race through two Stores (two
// settlement instances) over and over: whatever the interleaving, the
// account is on the deny list exactly when its balance is below zero. The
// account starts denied; the top-up lifts it, the tap takes it below zero
// again. On PostgreSQL under READ COMMITTED the tap's transaction must read
// the negative_balance state from the locked account row, not from a
// subquery of the statement that takes the lock: that one sees the snapshot
// from before the lock (the entry the top-up has just removed), and the
// account would end below zero and off the deny list.
func TestDenyListRacesTopUp(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s1 := db.open(t, nil)
		s2 := db.open(t, nil)
		putTableAt(t, s1, tableV1, tablesSince)
		rounds := 40
		if db.backend == "sqlite" {
			rounds = 10
		}
		for round := range rounds {
			dev := "race-" + strconv.Itoa(round)
			acct := newAccount(t, s1, 100)
			commit(t, s1, mkTap(dev, 1, acct, at(0), "")) // -150: denied
			tap := mkTap(dev, 2, acct, at(300), "")
			var wg sync.WaitGroup
			errs := make(chan error, 2)
			wg.Go(func() {
				if _, err := s2.TopUp(ctx, acct, 150, dev); err != nil { // back to 0
					errs <- err
				}
			})
			wg.Go(func() {
				if _, err := s1.CommitTaps(ctx, []Tap{tap}); err != nil { // another 250
					errs <- err
				}
			})
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			a, err := s2.Account(ctx, acct)
			if err != nil {
				t.Fatal(err)
			}
			denied := hasDeny(denyList(t, s1), acct, 0, ReasonNegativeBalance)
			if a.Balance != -250 || !denied || !a.Denied {
				t.Fatalf("round %d: balance %d (want -250), deny-listed %t, account says denied %t", round, a.Balance, denied, a.Denied)
			}
		}
	})
}

// A batch with a rider whose account another transaction holds (another
// instance's batch, a top-up) settles its other riders' taps without
// waiting, and the held rider's once the account is free: each tap once,
// with the fares it would have had in one transaction (PostgreSQL; SQLite
// runs one write transaction at a time).
func TestBusyAccountSettledAfter(t *testing.T) {
	db := newPostgresDB(t)
	s := ledgerWithTable(t, db)
	ctx := context.Background()
	held, free := newAccount(t, s, 10_000), newAccount(t, s, 10_000)
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `SELECT id FROM accounts WHERE id = $1 FOR UPDATE`, int64(held)); err != nil {
		t.Fatal(err)
	}
	batch := []Tap{mkTap("bus-1", 1, held, at(60), ""), mkTap("bus-1", 2, free, at(61), ""), mkTap("bus-1", 3, held, at(62), "")}
	type outcome struct {
		res []TapResult
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := s.CommitTaps(ctx, batch)
		done <- outcome{res, err}
	}()
	for deadline := time.Now().Add(20 * time.Second); balance(t, s, free) != 10_000-250; {
		if time.Now().After(deadline) {
			t.Fatal("the free rider's tap was not settled while another rider's account was held")
		}
		select {
		case o := <-done:
			t.Fatalf("CommitTaps returned while an account of its batch was held: %v", o.err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if b := balance(t, s, held); b != 10_000 {
		t.Fatalf("held rider's balance %d while the account was held, want 10000", b)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	var o outcome
	select {
	case o = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("CommitTaps did not return after the account was freed")
	}
	if o.err != nil {
		t.Fatalf("CommitTaps: %v", o.err)
	}
	want := []int64{250, 250, 0} // the held rider's second tap is a transfer
	for i, r := range o.res {
		if r.ID != batch[i].ID || r.Duplicate || r.Flag != "" || r.Charge != want[i] {
			t.Errorf("result %d: %+v, want tap %s charged %d", i, r, batch[i].ID, want[i])
		}
	}
	if b := balance(t, s, held); b != 10_000-250 {
		t.Errorf("held rider's balance %d, want %d", b, 10_000-250)
	}
	for i, r := range commit(t, s, batch...) {
		if !r.Duplicate || r.Charge != want[i] {
			t.Errorf("resent tap %d: %+v, want a duplicate charged %d", i, r, want[i])
		}
	}
	if b := balance(t, s, free); b != 10_000-250 {
		t.Errorf("free rider's balance %d after the resend, want %d", b, 10_000-250)
	}
}

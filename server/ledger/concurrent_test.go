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

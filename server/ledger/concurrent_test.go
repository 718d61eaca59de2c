package ledger

import (
	"context"
	"errors"
	"math/rand/v2"
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
		errs := make([]error, 2*n)
		var wg sync.WaitGroup
		for i := range n {
			s := []*Store{s1, s2}[i%2]
			wg.Go(func() { orders[i], errs[i] = s.Pay(ctx, req) })
			wg.Go(func() {
				r := other
				r.OrderID = "other-" + string(rune('a'+i))
				_, errs[n+i] = s.Pay(ctx, r)
			})
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil || orders[i] != orders[0] {
				t.Errorf("retry %d: %+v, %v, want %+v", i, orders[i], errs[i], orders[0])
			}
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

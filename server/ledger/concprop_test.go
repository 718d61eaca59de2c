package ledger

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/farego/farego/agent/paycode"
)

// Concurrency property test: a scenario's taps (genPropScenario) delivered
// at once by several goroutines through two Stores on one database (two
// settlement instances), every tap several times in different batchings,
// while top-ups, online payments (and their retries on the other
// instance) and refunds race them. Every call succeeds, or fails with an
// error a retry of the same call fixes; the final charges, flags, ratings,
// notes, balances and deny list are those of one sequential commit of the
// same taps followed by the same money operations; the invariants hold.

// concOp is a money operation of the concurrent property test.
type concOp struct {
	kind    string // "topup", "pay", "refund"
	acct    int    // account index
	amount  int64
	ref     string // top-up reference, order id, or refund id
	order   string // refund: the payment's order id
	counter uint16 // pay: the code's counter
}

// genConcOps makes top-ups, and (when rich) payments by fresh codes with
// refunds that never come to more than the payment: each call succeeds
// whatever the order. The refunds of a payment follow it in its chain.
func genConcOps(r *rand.Rand, accounts int, rich bool) [][]concOp {
	var chains [][]concOp
	for i := 0; i < 6; i++ {
		chains = append(chains, []concOp{{kind: "topup", acct: r.Intn(accounts), amount: 1 + r.Int63n(800), ref: fmt.Sprint("top-", i)}})
	}
	if !rich {
		return chains
	}
	for i := 0; i < 8; i++ {
		p := concOp{kind: "pay", acct: r.Intn(accounts), amount: 1 + r.Int63n(300), ref: fmt.Sprint("o-", i), counter: uint16(40000 + i)}
		chain := []concOp{p}
		left := p.amount
		for j := 0; j < r.Intn(3) && left > 0; j++ {
			a := 1 + r.Int63n(left)
			left -= a
			chain = append(chain, concOp{kind: "refund", amount: a, order: p.ref, ref: fmt.Sprintf("r-%d-%d", i, j)})
		}
		chains = append(chains, chain)
	}
	return chains
}

func (op concOp) run(ctx context.Context, s *Store, ids []uint64) error {
	switch op.kind {
	case "topup":
		_, err := s.TopUp(ctx, ids[op.acct], op.amount, op.ref)
		return err
	case "pay":
		acct := ids[op.acct]
		key := paycode.ID{Account: acct, Serial: 1, Time: uint32(day0.Unix()), Counter: op.counter}.Key()
		_, _, err := s.Pay(ctx, PaymentRequest{MerchantID: "shop", OrderID: op.ref, Account: acct, Serial: 1,
			RiderKey: riderKey(acct), CodeKey: key, CodeHash: "h", Amount: op.amount, Currency: "EUR"})
		return err
	default:
		_, _, err := s.RefundPayment(ctx, RefundRequest{MerchantID: "shop", OrderID: op.order, RefundID: op.ref, Amount: op.amount})
		return err
	}
}

// concCall runs f; on an error it records it and retries the same call
// (up to 3 times): an error no retry fixes is a failure.
func concCall(t *testing.T, mu *sync.Mutex, first *[]string, what string, f func() error) {
	err := f()
	for i := 0; err != nil && i < 3; i++ {
		mu.Lock()
		*first = append(*first, fmt.Sprintf("%s: %v", what, err))
		mu.Unlock()
		err = f()
	}
	if err != nil {
		t.Errorf("%s: still failing after retries: %v", what, err)
	}
}

func denySet(t testing.TB, s *Store, ids []uint64) []string {
	idx := map[uint64]int{}
	for i, id := range ids {
		idx[id] = i
	}
	var out []string
	for _, e := range denyList(t, s).Entries {
		out = append(out, fmt.Sprintf("acct#%d/%d/%s", idx[e.Account], e.Serial, e.Reason))
	}
	sort.Strings(out)
	return out
}

func TestPropertyConcurrentInstances(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		seeds := propSeeds(2)
		for _, rich := range []bool{false, true} {
			for _, seed := range seeds {
				t.Run(fmt.Sprintf("rich=%t/seed%d", rich, seed), func(t *testing.T) {
					testConcurrentSeed(t, db.backend, seed, rich)
				})
			}
		}
	})
}

func testConcurrentSeed(t *testing.T, backend string, seed int64, rich bool) {
	ctx := context.Background()
	r := rand.New(rand.NewSource(seed))
	sc := genPropScenario(r, envInt("FAREGO_CONC_ACCOUNTS", 3), envInt("FAREGO_CONC_TAPS", 60))
	chains := genConcOps(r, sc.accounts, rich)
	if rich {
		// Payments need a credential no code reuse denies (whether a
		// payment comes before or after a deny is the race's to decide):
		// every tap has a code of its own.
		for i := range sc.taps {
			tp := &sc.taps[i]
			tp.CodeKey = paycode.ID{Account: tp.Account, Serial: 1, Time: uint32(tp.Time.Unix()), Counter: uint16(i)}.Key()
		}
	}
	prepare := func(pl *propLedger) {
		if rich {
			for _, id := range pl.ids {
				if _, err := pl.s.TopUp(ctx, id, 100_000, fmt.Sprint("rich-", id)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}

	// The reference: one sequential commit, then the money operations.
	ref := newPropLedger(t, newDB(t, backend), sc.accounts)
	prepare(ref)
	ref.commit(t, ref.taps(sc))
	for _, ch := range chains {
		for _, op := range ch {
			if err := op.run(ctx, ref.s, ref.ids); err != nil {
				t.Fatalf("reference %s %s: %v", op.kind, op.ref, err)
			}
		}
	}
	want, wantBals := ref.state(t)
	wantDeny := denySet(t, ref.s, ref.ids)

	// Two instances on one database, everything at once.
	cdb := newDB(t, backend)
	pl := newPropLedger(t, cdb, sc.accounts)
	prepare(pl)
	stores := []*Store{pl.s, cdb.open(t, nil)}
	taps := pl.taps(sc)
	var mu sync.Mutex
	var firstErrs []string
	var wg sync.WaitGroup
	workers := envInt("FAREGO_CONC_WORKERS", 6)
	for w := 0; w < workers; w++ {
		// Workers pair up: the two of a pair send the same batches, each
		// to the other instance, at the same time.
		wr := rand.New(rand.NewSource(seed*100 + int64(w/2)))
		var batches [][]Tap
		p := slices.Clone(taps)
		wr.Shuffle(len(p), func(i, j int) { p[i], p[j] = p[j], p[i] })
		for i := 0; i < len(p); {
			n := 1 + wr.Intn(20)
			batches = append(batches, slices.Clone(p[i:min(i+n, len(p))]))
			i += n
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i, b := range batches {
				s := stores[(w+i)%2]
				concCall(t, &mu, &firstErrs, fmt.Sprintf("worker %d batch %d", w, i), func() error {
					_, err := s.CommitTaps(ctx, b)
					return err
				})
			}
		}()
	}
	for ci, ch := range chains {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, op := range ch {
				{ // the retry races the first try, on the other instance
					var pw sync.WaitGroup
					for k := 0; k < 2; k++ {
						pw.Add(1)
						go func() {
							defer pw.Done()
							concCall(t, &mu, &firstErrs, fmt.Sprintf("%s %s try %d", op.kind, op.ref, k), func() error {
								return op.run(ctx, stores[(ci+k)%2], pl.ids)
							})
						}()
					}
					pw.Wait()
				}
			}
		}()
	}
	checkDuring(t, ctx, stores, wg.Wait)
	for _, e := range firstErrs {
		t.Logf("error fixed by a retry: %s", e)
	}
	if err := pl.s.CheckInvariants(ctx); err != nil {
		t.Fatalf("CheckInvariants: %v", err)
	}
	got, bals := pl.state(t)
	if !slices.Equal(bals, wantBals) {
		t.Errorf("balances %v, sequential %v", bals, wantBals)
	}
	if d := denySet(t, pl.s, pl.ids); !slices.Equal(d, wantDeny) {
		t.Errorf("deny list %v, sequential %v", d, wantDeny)
	}
	if len(got) != len(want) {
		t.Errorf("%d taps stored, sequential %d", len(got), len(want))
	}
	forgiven := func(m map[string]tapState, day string) int {
		n := 0
		for _, o := range m {
			if o.Day == day && strings.Contains(o.Notes, NoteCodeReuseWindow) {
				n++
			}
		}
		return n
	}
	for id, st := range want {
		g := got[id]
		if g.Notes != st.Notes {
			limit := forgiven(want, st.Day) >= MaxForgivenReuses || forgiven(got, st.Day) >= MaxForgivenReuses
			if !limit || g.Notes == NoteSameDeviceReuse || st.Notes == NoteSameDeviceReuse {
				t.Errorf("tap %s notes %q, sequential %q", id, g.Notes, st.Notes)
			}
		}
		g.Notes, st.Notes = "", ""
		if g != st {
			t.Errorf("tap %s %+v, sequential %+v", id, g, st)
		}
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestPropertyConcurrentContested: the same race on poor accounts, with
// online payments by the taps' own codes and refunds that may ask too
// much. The outcome is the race's (which use of a code comes first, which
// payment finds the money), so only what holds whatever the order is
// checked: each call succeeds or gives an answer of the ledger's (not an
// error of the database), the invariants hold during the race and after,
// and a code pays once: a payment made with a tap's code leaves every tap
// of that code uncharged.
func TestPropertyConcurrentContested(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		seeds := propSeeds(2)
		for _, seed := range seeds {
			t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
				ctx := context.Background()
				r := rand.New(rand.NewSource(seed))
				sc := genPropScenario(r, 3, envInt("FAREGO_CONC_TAPS", 60))
				cdb := newDB(t, db.backend)
				pl := newPropLedger(t, cdb, sc.accounts)
				stores := []*Store{pl.s, cdb.open(t, nil)}
				taps := pl.taps(sc)
				type payOp struct {
					req     PaymentRequest
					refunds []int64
				}
				var pays []payOp
				for i := 0; i < 12; i++ {
					tp := taps[r.Intn(len(taps))]
					acct := pl.ids[r.Intn(len(pl.ids))]
					key := paycode.ID{Account: acct, Serial: 1, Time: uint32(day0.Unix()), Counter: uint16(50000 + i)}.Key()
					if tp.Account == acct || r.Intn(2) == 0 {
						if int(tp.Account) != 999_999_999 {
							acct, key = tp.Account, slices.Clone(tp.CodeKey)
						}
					}
					p := payOp{req: PaymentRequest{MerchantID: "shop", OrderID: fmt.Sprint("c-", i), Account: acct, Serial: 1,
						RiderKey: riderKey(acct), CodeKey: key, CodeHash: "h", Amount: 1 + r.Int63n(3000), Currency: "EUR"}}
					for j := 0; j < r.Intn(4); j++ {
						p.refunds = append(p.refunds, 1+r.Int63n(p.req.Amount))
					}
					pays = append(pays, p)
				}
				ok := func(err error) bool {
					return err == nil || errors.Is(err, ErrCodeUsed) || errors.Is(err, ErrInsufficientFunds) ||
						errors.Is(err, ErrDenied) || errors.Is(err, ErrOverRefund) || errors.Is(err, ErrNotFound)
				}
				var mu sync.Mutex
				paid := map[string]bool{}
				var wg sync.WaitGroup
				call := func(what string, f func() error) {
					err := f()
					for i := 0; err != nil && !ok(err) && i < 3; i++ {
						t.Logf("%s: %v (retrying)", what, err)
						err = f()
					}
					if !ok(err) {
						t.Errorf("%s: %v", what, err)
					}
				}
				for w := 0; w < envInt("FAREGO_CONC_WORKERS", 6); w++ {
					wr := rand.New(rand.NewSource(seed*100 + int64(w)))
					p := slices.Clone(taps)
					wr.Shuffle(len(p), func(i, j int) { p[i], p[j] = p[j], p[i] })
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i, n := 0, 0; i < len(p); i, n = i+n, 1+wr.Intn(20) {
							b := p[i:min(i+n, len(p))]
							if len(b) == 0 {
								continue
							}
							call(fmt.Sprintf("worker %d taps", w), func() error {
								_, err := stores[(w+i)%2].CommitTaps(ctx, b)
								return err
							})
						}
					}()
				}
				for pi, p := range pays {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for k := 0; k < 2; k++ {
							call("pay "+p.req.OrderID, func() error {
								_, _, err := stores[(pi+k)%2].Pay(ctx, p.req)
								if err == nil {
									mu.Lock()
									paid[string(p.req.CodeKey)] = true
									mu.Unlock()
								}
								return err
							})
						}
						for j, a := range p.refunds {
							call("refund "+p.req.OrderID, func() error {
								_, _, err := stores[(pi+j)%2].RefundPayment(ctx, RefundRequest{MerchantID: "shop",
									OrderID: p.req.OrderID, RefundID: fmt.Sprint(p.req.OrderID, "-", j), Amount: a})
								return err
							})
						}
					}()
					wg.Add(1)
					go func() {
						defer wg.Done()
						call("top-up", func() error {
							_, err := stores[pi%2].TopUp(ctx, pl.ids[pi%len(pl.ids)], 1+int64(pi)*97, fmt.Sprint("t-", pi))
							return err
						})
					}()
				}
				checkDuring(t, ctx, stores, wg.Wait)
				if err := pl.s.CheckInvariants(ctx); err != nil {
					t.Fatalf("CheckInvariants: %v", err)
				}
				got, _ := pl.state(t)
				for _, tp := range taps {
					if st := got[tp.ID]; paid[string(tp.CodeKey)] && st.Charge != 0 {
						t.Errorf("code of tap %s paid online and the tap charged %d (%+v)", tp.ID, st.Charge, st)
					}
				}
			})
		}
	})
}

// checkDuring runs CheckInvariants on the stores in turn, again and again,
// until race returns.
func checkDuring(t *testing.T, ctx context.Context, stores []*Store, race func()) {
	t.Helper()
	done, checked := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(checked)
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			if err := stores[i%len(stores)].CheckInvariants(ctx); err != nil {
				t.Errorf("CheckInvariants during the race: %v", err)
				return
			}
		}
	}()
	race()
	close(done)
	<-checked
}

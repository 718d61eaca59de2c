package fleet

import (
	"context"
	"fmt"
	"sync"
)

// maxRides is the API's largest page of a rider's rides.
const maxRides = 10_000

// maxProblems bounds the problems a Reconciliation lists.
const maxProblems = 10

// Reconciliation compares the taps the fleet's validators accepted with
// the rides the ledger holds for the fleet's riders.
type Reconciliation struct {
	Accepted    int      // taps the validators accepted
	InLedger    int      // rides of the fleet's riders in the ledger
	Lost        int      // accepted, not in the ledger
	Doubled     int      // a tap id, or a payment code, in the ledger more than once
	Unexpected  int      // in the ledger, never accepted by a validator of the fleet
	BadBalances int      // riders whose balance is not their top-up minus their rides' charges
	Charged     int64    // the rides' charges, minor units
	Problems    []string // the first few problems found
}

// OK reports whether every accepted tap is in the ledger once, nothing
// else is, and every balance adds up.
func (r *Reconciliation) OK() bool {
	return r.Lost == 0 && r.Doubled == 0 && r.Unexpected == 0 && r.BadBalances == 0 && r.InLedger == r.Accepted
}

func (r *Reconciliation) problem(format string, a ...any) {
	if len(r.Problems) < maxProblems {
		r.Problems = append(r.Problems, fmt.Sprintf(format, a...))
	}
}

// Reconcile reads every rider's rides and balance through the API and
// compares them with the taps the validators accepted. Call it once the
// queues are empty: a tap still on its way shows as lost.
func (f *Fleet) Reconcile(ctx context.Context) (Reconciliation, error) {
	var mu sync.Mutex
	var rec Reconciliation
	err := f.parallel(ctx, len(f.riders), func(i int) error {
		r := f.riders[i]
		var rides struct {
			Rides []struct {
				TapID    string `json:"tap_id"`
				Charge   int64  `json:"charge"`
				CodeHash string `json:"code_hash"`
			} `json:"rides"`
		}
		if err := f.call(ctx, "GET", fmt.Sprintf("/v1/accounts/%d/rides?limit=%d", r.Account, maxRides), f.cfg.Token, nil, &rides); err != nil {
			return fmt.Errorf("fleet: rides of account %d: %w", r.Account, err)
		}
		if len(rides.Rides) >= maxRides {
			return fmt.Errorf("fleet: account %d has %d rides or more: too many to reconcile (use more riders)", r.Account, maxRides)
		}
		var acct struct {
			Balance int64 `json:"balance"`
		}
		if err := f.call(ctx, "GET", fmt.Sprintf("/v1/accounts/%d", r.Account), f.cfg.Token, nil, &acct); err != nil {
			return fmt.Errorf("fleet: account %d: %w", r.Account, err)
		}
		r.mu.Lock()
		accepted := map[string]bool{}
		for _, id := range r.taps {
			accepted[id] = true
		}
		r.mu.Unlock()

		mu.Lock()
		defer mu.Unlock()
		rec.Accepted += len(accepted)
		rec.InLedger += len(rides.Rides)
		seen, codes := map[string]bool{}, map[string]bool{}
		var charged int64
		for _, rd := range rides.Rides {
			charged += rd.Charge
			switch {
			case seen[rd.TapID] || codes[rd.CodeHash]:
				rec.Doubled++
				rec.problem("account %d: tap %s (code %s) in the ledger twice", r.Account, rd.TapID, rd.CodeHash)
			case !accepted[rd.TapID]:
				rec.Unexpected++
				rec.problem("account %d: tap %s in the ledger, never accepted", r.Account, rd.TapID)
			}
			seen[rd.TapID], codes[rd.CodeHash] = true, true
		}
		for id := range accepted {
			if !seen[id] {
				rec.Lost++
				rec.problem("account %d: tap %s accepted, not in the ledger", r.Account, id)
			}
		}
		rec.Charged += charged
		if acct.Balance != r.TopUp-charged {
			rec.BadBalances++
			rec.problem("account %d: balance %d, want top-up %d − charges %d", r.Account, acct.Balance, r.TopUp, charged)
		}
		return nil
	})
	return rec, err
}

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/server/ledger"
)

func cmdVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("farego-settlement verify", flag.ContinueOnError)
	data := dataFlag(fs)
	db := dbFlag(fs)
	every := fs.Duration("progress", 5*time.Second, "say on stderr which check runs, at most this often, from this long after the start (0: never)")
	if err := cli.Parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	st, err := openLedger(ctx, *data, *db)
	if err != nil {
		return err
	}
	defer st.Close()
	stats, err := st.Stats(ctx)
	if err != nil {
		return err
	}
	// A large ledger takes minutes (every check reads a whole table):
	// say which check runs, not nothing until the end.
	p := &verifyProgress{w: stderr, every: *every, now: time.Now}
	p.start = p.now()
	p.last = p.start
	if *every > 0 {
		// While one check runs, too: one check alone may take minutes
		// (said only as the next began, the first check was never named).
		t := time.NewTicker(max(*every, time.Second))
		done := make(chan struct{})
		defer func() { close(done); t.Stop() }()
		go func() {
			for {
				select {
				case <-done:
					return
				case <-t.C:
					p.tick()
				}
			}
		}()
	}
	err = st.CheckInvariantsProgress(ctx, p.begin)
	p.end()
	if err != nil {
		return fmt.Errorf("ledger invariants violated:\n  %s", strings.ReplaceAll(err.Error(), "\n", "\n  "))
	}
	held, err := st.HeldCount(ctx)
	if err != nil {
		return err
	}
	quarantined, err := st.QuarantineCount(ctx)
	if err != nil {
		return err
	}
	// Amounts in minor units first (scripts read them), then as money.
	cur := st.Currency()
	fmt.Fprintf(stdout, "ledger ok: %d accounts, %d taps (%d flagged), %d postings, %d payments, balances total %d (%s); %d held, %d quarantined",
		stats.Accounts, stats.Taps, stats.FlaggedTaps, stats.Postings, stats.Payments, stats.TotalBalance,
		feedback.FormatAmount(stats.TotalBalance, cur), held, quarantined)
	if stats.Refunds > 0 { // the line scripts read stays as it was without refunds
		refunded, err := st.RefundedTotal(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "; %d refunds of payments, %d given back (%s)", stats.Refunds, refunded, feedback.FormatAmount(refunded, cur))
	}
	fmt.Fprintln(stdout)
	return nil
}

// verifyProgress says on w which check of verify runs, from every after
// the start and at most every every (0: never): as a check begins, and
// while it runs (tick).
type verifyProgress struct {
	w           io.Writer
	every       time.Duration
	now         func() time.Time
	mu          sync.Mutex
	start, last time.Time
	step        int // the check running (0: none)
	what        string
}

func (p *verifyProgress) begin(step int, what string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.step, p.what = step, what
	p.say()
}

func (p *verifyProgress) tick() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.step > 0 {
		p.say()
	}
}

// end stops the lines: the checks are over.
func (p *verifyProgress) end() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.step = 0
}

func (p *verifyProgress) say() {
	if now := p.now(); p.every > 0 && now.Sub(p.last) >= p.every {
		p.last = now
		fmt.Fprintf(p.w, "verify: %s: check %d of %d, looking for: %s\n", now.Sub(p.start).Round(time.Second), p.step, ledger.InvariantSteps, p.what)
	}
}

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
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
	start := time.Now()
	last := start
	progress := func(step int, what string) {
		if now := time.Now(); *every > 0 && now.Sub(last) >= *every {
			last = now
			fmt.Fprintf(stderr, "verify: %s: check %d of %d, looking for: %s\n", now.Sub(start).Round(time.Second), step, ledger.InvariantSteps, what)
		}
	}
	if err := st.CheckInvariantsProgress(ctx, progress); err != nil {
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

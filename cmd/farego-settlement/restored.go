package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/server/ledger"
)

// cmdRestored is the first step after restoring the ledger from a backup
// (see the README's restore procedure): the id counters jump forward past
// anything the lost history may have handed out, and the deny-list version
// moves to the current time. Run it before starting the servers: it
// refuses to run while one serves the ledger (ledger.ErrInUse), and no
// server starts while it runs.
func cmdRestored(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("farego-settlement restored", flag.ContinueOnError)
	data := dataFlag(fs)
	db := dbFlag(fs)
	margin := fs.Int64("margin", 0, "how far the account and payment id counters jump (default 100000)")
	var lost []*fare.Table
	var lostFiles []string
	fs.Func("fares", "a fare table published after the backup (the JSON file as published; repeat it for each): stored again, and the validators' taps that name it rated by it", func(v string) error {
		t, err := fare.Load(v)
		if err != nil {
			return err
		}
		lost, lostFiles = append(lost, t), append(lostFiles, v)
		return nil
	})
	if err := cli.Parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	if *margin < 0 || *margin > ledger.MaxRestoreMargin {
		return cli.Usagef(stderr, fs.Name(), "--margin must be 0 (the default, %d) to %d, got %d", ledger.DefaultRestoreMargin, ledger.MaxRestoreMargin, *margin)
	}
	st, err := openLedger(ctx, *data, *db)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Exclusive(ctx); err != nil {
		return err
	}
	acct, pay, err := st.Restored(ctx, *margin, "cli", lost...)
	if lf := (*ledger.LostFareTableError)(nil); errors.As(err, &lf) {
		return fmt.Errorf("%s: %w (the ledger is unchanged: mend the --fares tables, or leave out the refused one, and run restored again)",
			lostFiles[lf.Index], err)
	}
	if err != nil {
		return err
	}
	for i, t := range lost {
		fmt.Fprintf(stdout, "fare table version %d (%s) is in the ledger\n", t.Version, lostFiles[i])
	}
	if err := st.CheckInvariants(ctx); err != nil {
		return fmt.Errorf("the restored ledger does not check: %w", err)
	}
	fmt.Fprintf(stdout, `ledger marked as restored: the next account id is %d, the next payment id %d
next: start the settlement server(s), then ask every online validator to resend its archive:
  curl -X POST -H "Authorization: Bearer $(cat %s/keys/operator.token)" http://HOST:8080/v1/devices/replay
`, acct+1, pay+1, *data)
	return nil
}

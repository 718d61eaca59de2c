package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/farego/farego/server/ledger"
)

const deviceUsage = `Usage:
  farego-settlement device revoke --data DIR [--db DSN] ID

revoke: from now on the device's broker login and certificate are refused
(within seconds on every settlement instance with an embedded broker) and
its batches are kept aside, never charged. Register it again with
farego-provision device --force to bring it back.
`

func cmdDevice(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		if len(args) == 0 {
			fmt.Fprint(stderr, deviceUsage)
			return errUsage
		}
		fmt.Fprint(stdout, deviceUsage)
		return nil
	}
	if args[0] != "revoke" {
		fmt.Fprintf(stderr, "device: unknown subcommand %q\n\n%s", args[0], deviceUsage)
		return errUsage
	}
	fs := flag.NewFlagSet("device revoke", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := dataFlag(fs)
	db := fs.String("db", "", "ledger DSN (default sqlite:DATA/ledger.db)")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "device revoke: give the device id")
		return errUsage
	}
	st, err := openLedger(ctx, *data, *db)
	if err != nil {
		return err
	}
	defer st.Close()
	id := fs.Arg(0)
	if err := st.RevokeDevice(ctx, id); err != nil {
		return err
	}
	if err := st.Audit(ctx, ledger.AuditEntry{Actor: "cli", Action: "revoke_device", Target: id}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "device %s revoked\n", id)
	return nil
}

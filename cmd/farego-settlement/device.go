package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/server/ledger"
)

const deviceUsage = `Usage:
  farego-settlement device revoke --data DIR [--db DSN] ID

revoke: from now on the device's broker login and certificate are refused
(within seconds on every settlement instance with an embedded broker) and
its batches are kept aside, never charged. To bring it back (not a stolen
one), provision it again with farego-provision device --force --unrevoke:
a new identity, and its revocation lifted (--force alone is refused).

An external broker (Mosquitto) keeps letting the device log in until its
password file is written again without it (farego-settlement mqtt-passwd
--out FILE) and reloaded (SIGHUP); a device that logs in with its
certificate, until the broker's CRL lists it.
`

func cmdDevice(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if done, err := beforeSubcommand(args, deviceUsage, stdout, stderr); done {
		return err
	}
	if args[0] != "revoke" {
		fmt.Fprint(stderr, deviceUsage)
		return cli.Usagef(stderr, "farego-settlement device", "unknown subcommand %q", args[0])
	}
	fs := flag.NewFlagSet("farego-settlement device revoke", flag.ContinueOnError)
	data := dataFlag(fs)
	db := dbFlag(fs)
	if err := cli.ParseArgs(fs, args[1:], stdout, stderr); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return cli.Usagef(stderr, fs.Name(), "give the device id")
	}
	st, err := openLedger(ctx, *data, *db)
	if err != nil {
		return err
	}
	defer st.Close()
	id := fs.Arg(0)
	// Again (after a restore the README says to revoke again): said so,
	// not audited twice, as token revoke.
	if d, err := st.Device(ctx, id); err == nil && !d.Revoked.IsZero() {
		fmt.Fprintf(stdout, "device %s was revoked already (%s): nothing changed\n", id, d.Revoked.UTC().Format(time.RFC3339))
		return nil
	}
	if err := st.RevokeDevice(ctx, id); err != nil {
		if errors.Is(err, ledger.ErrNotFound) {
			// It said "ledger: not found: device X" alone.
			return fmt.Errorf("%w: nothing was changed (the console's fleet page, or GET /v1/devices, lists the ids)", err)
		}
		return err
	}
	if err := st.Audit(ctx, ledger.AuditEntry{Actor: cliActor(), Action: "revoke_device", Target: id}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "device %s revoked\n", id)
	// An operator of Mosquitto revokes there too (the embedded broker
	// asks the ledger at every login; Mosquitto reads its password file).
	fmt.Fprintf(stderr, "with an external broker: write its password file again (farego-settlement mqtt-passwd --out FILE) "+
		"and reload it (SIGHUP), or the device still logs in there (its batches are kept aside all the same)\n")
	return nil
}

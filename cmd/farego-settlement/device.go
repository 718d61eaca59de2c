package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
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
A device taken out of service for good is revoked once it has synced
(farego-validator ctl status: "queue_depth": 0): the taps on its card
are riders' green taps, never charged once it is revoked. Revoking says
how many its last status had not sent.

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
	d, derr := st.Device(ctx, id)
	if derr == nil && !d.Revoked.IsZero() {
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
	if derr == nil {
		fmt.Fprint(stderr, unsentAtRevoke(d, time.Now()))
	}
	// An operator of Mosquitto revokes there too (the embedded broker
	// asks the ledger at every login; Mosquitto reads its password file).
	fmt.Fprintf(stderr, "with an external broker: write its password file again (farego-settlement mqtt-passwd --out FILE) "+
		"and reload it (SIGHUP), or the device still logs in there (its batches are kept aside all the same)\n")
	return nil
}

// unsentAtRevoke says what the server knows of the taps a device being
// revoked has not sent: green taps, owed by riders, that are kept aside
// and never charged once it is revoked. A technician decommissioning a
// working validator with "device revoke" was told only "revoked", and the
// taps on its card were lost to the operator without a word (field test:
// two taps queued offline, revoked, nothing said). The server knows only
// the device's last status: taps made since cannot be known, so the way to
// decommission is said too.
func unsentAtRevoke(d ledger.Device, now time.Time) string {
	var b strings.Builder
	switch {
	case d.StatusAt.IsZero():
		fmt.Fprintf(&b, "its taps not yet sent are unknown: it never sent a status\n")
	case d.Status.QueueDepth > 0:
		fmt.Fprintf(&b, "WARNING: its last status (%s, %s ago) had %d taps not yet sent (the oldest %s old then): "+
			"riders' green taps, kept aside and never charged while it is revoked\n",
			d.StatusAt.UTC().Format(time.RFC3339), now.Sub(d.StatusAt).Round(time.Second), d.Status.QueueDepth,
			d.Status.OldestUnsent.Round(time.Second))
	default:
		fmt.Fprintf(&b, "its last status (%s, %s ago) had no taps waiting; taps made since cannot be known here\n",
			d.StatusAt.UTC().Format(time.RFC3339), now.Sub(d.StatusAt).Round(time.Second))
	}
	fmt.Fprintf(&b, "decommissioning it (not a stolen one)? its taps settle only from an unrevoked identity: "+
		"provision it again (farego-provision device --force --unrevoke --id %s), install that bundle beside its "+
		"/var/lib/farego/validator.db, and revoke it once farego-validator ctl status says \"queue_depth\": 0\n", d.ID)
	return b.String()
}

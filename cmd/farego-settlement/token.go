package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/server/api"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
)

const tokenUsage = `Usage:
  farego-settlement token create --data DIR --role ROLE [--merchant ID] [--name TEXT] [--db DSN]
  farego-settlement token list   --data DIR [--db DSN] [--keys DIR]
  farego-settlement token revoke --data DIR [--db DSN] [--keys DIR] ID
  farego-settlement token payments --data DIR [--db DSN] [--before PAYMENT] ID
  farego-settlement token refunds --data DIR [--db DSN] [--before NS] ID

Roles: operator (everything), payments (top-ups and credit lines), merchant
(online payments for one merchant id: --merchant), auditor (reads
everything, changes nothing). The token is printed once; the ledger keeps
only its hash. A revoked token stops working at once on every instance.
revoke init: the operator token file init wrote (DATA/keys/operator.token,
or --keys DIR) gets a new token; the servers that read that file refuse
the old one within a second (the command waits for that), then its console
sessions end. Copy the new file to every other instance's key directory.
payments: the online payments a token made, newest first, 100 at a time
(--before the last id shown for older ones): a leaked till token's orders.
refunds: the refunds it made (a merchant token may refund any of its shop's
payments), newest first, 100 at a time (--before the time in unix ns of the
last one shown, as the hint says).
`

// openKeysAndLedger opens the key directory and the ledger of a data
// directory (or --db); migrate as for openLedgerTo.
func openKeysAndLedger(ctx context.Context, data, db string, migrate bool) (*keys.Dir, *ledger.Store, error) {
	kd, err := keys.Open(filepath.Join(data, "keys"))
	if err != nil {
		return nil, nil, err
	}
	st, err := openLedgerTo(ctx, data, db, migrate, kd.Fingerprint())
	return kd, st, err
}

// openLedger opens the ledger of a data directory (or --db) for a command
// run beside the server: one this build would migrate is refused
// (ledger.Options.NoMigrate), so that trying a new build's tool before
// the server is upgraded leaves the schema to the server's start.
func openLedger(ctx context.Context, data, db string) (*ledger.Store, error) {
	return openLedgerTo(ctx, data, db, false, "")
}

// openLedgerTo opens the ledger of a data directory (or --db), migrating
// it if migrate (the server's own programs: restored, broker) unless it
// is bound to another key directory than keySet's (ledger.Options.KeySet).
func openLedgerTo(ctx context.Context, data, db string, migrate bool, keySet string) (*ledger.Store, error) {
	dsn := db
	if dsn == "" {
		dsn = "sqlite:" + filepath.Join(data, "ledger.db")
	}
	st, err := ledger.Open(ctx, dsn, &ledger.Options{MustExist: true, NoMigrate: !migrate, KeySet: keySet})
	return st, noLedgerHint(err)
}

func cmdToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if done, err := beforeSubcommand(args, tokenUsage, stdout, stderr); done {
		return err
	}
	sub := args[0]
	fs := flag.NewFlagSet("farego-settlement token "+sub, flag.ContinueOnError)
	data := dataFlag(fs)
	db := dbFlag(fs)
	var role, merchant, name, keysDir *string
	var before *uint64
	var beforeNS *int64
	if sub == "payments" {
		before = fs.Uint64("before", 0, "list the payments older than this payment id")
	}
	if sub == "refunds" {
		beforeNS = fs.Int64("before", 0, "list the refunds made before this time (unix ns, as the hint after a full page gives it)")
	}
	if sub == "list" || sub == "revoke" {
		keysDir = fs.String("keys", "", "key directory (default DATA/keys): its operator token file is the token init")
	}
	if sub == "create" {
		role = fs.String("role", "", "operator, payments, merchant or auditor (required)")
		merchant = fs.String("merchant", "", "the merchant id a merchant token pays for (required with --role merchant)")
		name = fs.String("name", "", "what the token is for (shown in token list)")
	}
	switch sub {
	case "create", "list", "revoke", "payments", "refunds":
	default:
		fmt.Fprint(stderr, tokenUsage)
		return cli.Usagef(stderr, "farego-settlement token", "unknown subcommand %q", sub)
	}
	parse := cli.Parse // only revoke, payments and refunds take an argument (the token's id)
	if sub == "revoke" || sub == "payments" || sub == "refunds" {
		parse = cli.ParseArgs
	}
	if err := parse(fs, args[1:], stdout, stderr); err != nil {
		return err
	}
	switch sub {
	case "create":
		if err := cli.Required(fs, stderr, "role"); err != nil {
			return err
		}
		if !ledger.ValidRole(*role) {
			return cli.Usagef(stderr, fs.Name(), "--role %q: want operator, payments, merchant or auditor", *role)
		}
		if *role == ledger.RoleMerchant && *merchant == "" {
			return cli.Usagef(stderr, fs.Name(), "--role merchant needs --merchant ID: the shop whose orders the token may take and refund")
		}
		if *role != ledger.RoleMerchant && *merchant != "" {
			return cli.Usagef(stderr, fs.Name(), "--merchant goes with --role merchant only, not --role %s", *role)
		}
	case "revoke", "payments", "refunds":
		if fs.NArg() != 1 {
			return cli.Usagef(stderr, fs.Name(), "give the token's id (see token list)")
		}
	}
	st, err := openLedger(ctx, *data, *db)
	if err != nil {
		return err
	}
	defer st.Close()
	switch sub {
	case "create":
		t, err := api.CreateToken(ctx, st, *role, *merchant, *name)
		if err != nil {
			return err
		}
		if err := st.Audit(ctx, ledger.AuditEntry{Actor: cliActor(), Action: "create_token", Target: t.ID,
			Detail: fmt.Sprintf("role %s merchant %q name %q", t.Role, t.MerchantID, t.Name)}); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "token %s (%s) created; it is shown this once:\n", t.ID, t.Role)
		fmt.Fprintln(stdout, t.Token)
	case "list":
		ts, err := st.Tokens(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tROLE\tMERCHANT\tNAME\tCREATED\tREVOKED")
		if info, err := os.Stat(filepath.Join(orKeys(*keysDir, *data), keys.TokenFile)); err == nil {
			// Not in the ledger: the file init wrote (replaced by
			// token revoke init, whence its time).
			fmt.Fprintf(tw, "init\t%s\t-\tthe operator token file %s\t%s\t-\n", ledger.RoleOperator,
				filepath.Join(orKeys(*keysDir, *data), keys.TokenFile), info.ModTime().UTC().Format("2006-01-02 15:04"))
		}
		for _, t := range ts {
			revoked := "-"
			if !t.Revoked.IsZero() {
				revoked = t.Revoked.UTC().Format("2006-01-02 15:04")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Role, orDash(t.MerchantID), orDash(t.Name),
				t.Created.UTC().Format("2006-01-02 15:04"), revoked)
		}
		return tw.Flush()
	case "revoke":
		id := fs.Arg(0)
		if id == ledger.InitTokenID {
			return replaceInitToken(ctx, st, orKeys(*keysDir, *data), stdout)
		}
		now, err := st.RevokeTokenOnce(ctx, id)
		if errors.Is(err, ledger.ErrNotFound) {
			return fmt.Errorf("%w (farego-settlement token list shows the ids)", err)
		}
		if err != nil {
			return err
		}
		if !now {
			// Nothing changed, nothing to audit.
			fmt.Fprintf(stdout, "token %s was revoked already: nothing changed\n", id)
			return nil
		}
		if err := st.Audit(ctx, ledger.AuditEntry{Actor: cliActor(), Action: "revoke_token", Target: id}); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "token %s revoked\n", id)
	case "payments", "refunds":
		if err := api.KnownToken(ctx, st, fs.Arg(0)); errors.Is(err, ledger.ErrNotFound) {
			return fmt.Errorf("%w (farego-settlement token list shows the ids)", err)
		} else if err != nil {
			return err
		}
		if sub == "refunds" {
			return printTokenRefunds(ctx, st, fs.Arg(0), *beforeNS, stdout, stderr)
		}
		ps, err := st.PaymentsByToken(ctx, fs.Arg(0), *before, ledger.MaxPaymentsPage)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tMERCHANT\tORDER\tACCOUNT\tAMOUNT\tAT")
		for _, p := range ps {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\n", p.ID, p.MerchantID, p.OrderID, p.Account,
				feedback.FormatAmount(p.Amount, p.Currency), p.CreatedAt.UTC().Format("2006-01-02 15:04:05"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if len(ps) == ledger.MaxPaymentsPage {
			fmt.Fprintf(stderr, "older ones: --before %d\n", ps[len(ps)-1].ID)
		}
	}
	return nil
}

// orKeys is the key directory: --keys, or DATA/keys.
func orKeys(keysDir, data string) string {
	if keysDir != "" {
		return keysDir
	}
	return filepath.Join(data, "keys")
}

// replaceInitToken revokes the operator token file's token ("init"): the
// file gets a new one (the servers reading it take it within a second),
// the console sessions signed in with the old one end, and it is audited.
// A leaked operator.token (the file technicians are given for
// provisioning) could not be revoked at all: token revoke init said "not
// found".
func replaceInitToken(ctx context.Context, st *ledger.Store, keysDir string, stdout io.Writer) error {
	path, err := keys.ReplaceToken(keysDir)
	if err != nil {
		return fmt.Errorf("replace the operator token: %w (check --data or --keys)", err)
	}
	// The servers reading the file take the old token up to
	// keys.TokenRecheck longer: a console sign-in with it meanwhile, after
	// the sessions were ended, made one that outlived the revocation.
	// The sessions are ended once none of them takes it (a sign-in that
	// took it just before given time to record its session).
	select {
	case <-time.After(keys.TokenRecheck + 2*time.Second):
	case <-ctx.Done():
		return fmt.Errorf("%s holds a new operator token, but the console sessions signed in with the old one were not ended (run token revoke init again): %w",
			path, ctx.Err())
	}
	n, err := st.EndSessionsOf(ctx, ledger.InitTokenID)
	if err != nil {
		return fmt.Errorf("%s holds a new operator token, but its console sessions could not be ended (sign them out in the console): %w", path, err)
	}
	if err := st.Audit(ctx, ledger.AuditEntry{Actor: cliActor(), Action: "revoke_token", Target: ledger.InitTokenID,
		Detail: fmt.Sprintf("operator token file replaced; %d console sessions ended", n)}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "token init revoked: %s holds a new operator token (the servers that read this file refuse the old one); %d console sessions signed in with it ended\n", path, n)
	fmt.Fprintln(stdout, "copy the file (mode 0600) to every other settlement instance's key directory, and give it to whoever used the old one;")
	fmt.Fprintln(stdout, "better: a named operator token for each (token create --role operator --name …), each revocable on its own;")
	// What the leaked token did stays done: tokens it made, above all,
	// work on after its revocation.
	fmt.Fprintln(stdout, "and look at what the old token did (the audit trail: GET /v1/audit, the console's Audit page, actor token:init): revoke the tokens it made")
	return nil
}

// printTokenRefunds prints the refunds token id made, newest first, and
// the --before that lists older ones after a full page.
func printTokenRefunds(ctx context.Context, st *ledger.Store, id string, before int64, stdout, stderr io.Writer) error {
	if before < 0 {
		return fmt.Errorf("--before %d: a time in unix nanoseconds", before)
	}
	rs, err := st.RefundsByToken(ctx, id, before, ledger.MaxPaymentsPage)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PAYMENT\tMERCHANT\tORDER\tREFUND\tACCOUNT\tAMOUNT\tAT")
	for _, r := range rs {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", r.PaymentID, r.MerchantID, r.OrderID, r.RefundID, r.Account,
			feedback.FormatAmount(r.Amount, r.Currency), r.CreatedAt.UTC().Format("2006-01-02 15:04:05"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rs) >= ledger.MaxPaymentsPage {
		fmt.Fprintf(stderr, "older ones: --before %d\n", rs[len(rs)-1].CreatedAt.UnixNano())
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

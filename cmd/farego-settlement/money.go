package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/driver/feedback"
	"github.com/farego/farego/server/ledger"
)

// The operator's money acts on the command line: what the console and the
// API do (a top-up, a fare voided, a shop's payment refunded), on the
// settlement host, through the same ledger functions (TopUpAs, VoidTap,
// RefundPayment: every money rule is the ledger's), audited in the act's
// own transaction as cli:USER@HOST. They work on the ledger a running
// server serves (SQLite: writers take turns on the file, waiting up to
// the busy timeout; PostgreSQL: row locks), as token and device do.

const accountUsage = `Usage:
  farego-settlement account show  --data DIR [--db DSN] [--rides N] [--postings N] ACCOUNT
  farego-settlement account topup --data DIR [--db DSN] --reference REF --reason TEXT ACCOUNT AMOUNT

show: the account's balance, credit line, deny state, passes (credentials,
each valid, expired or denied), its newest rides with their tap ids (what
tap void takes), its newest postings (top-ups, fares, shop payments and
refunds, with the balance after each) and the shop payments among them
with what is left to refund (what payment refund takes).

topup: adds AMOUNT to the account, in the ledger's currency as the
console takes it, with its decimals: 12.50 or 5.00 (EUR; 12,50 and
"12.50 EUR" too), 1200 (JPY); never minor units (1250 for 12.50 EUR is
refused: it would read 1,250.00). --reference is the top-up's idempotency key, required:
the same reference again adds nothing ("nothing added"), so a command
retried after a dropped SSH session cannot top up twice; the reference with
another account or amount is refused. Give the payment provider's
transaction id when it took the money (its own retry then adds nothing
either), else a ticket number of your own. --reason goes to the audit trail.
`

const tapUsage = `Usage:
  farego-settlement tap void --data DIR [--db DSN] --reason TEXT TAP-ID

void: gives back a wrongly charged fare, as the console's Void… and
POST /v1/taps/void: the tap (DEVICE/EPOCH/SEQ, a ride's tap id in account
show) is flagged voided and the rider's service day rated again without it,
so what comes back is the net change (a transfer it started, the daily
cap). Once only: a tap void already says so and changes nothing. --reason
(required, at most 256 bytes) goes to the audit trail.
`

const paymentUsage = `Usage:
  farego-settlement payment refund --data DIR [--db DSN] --merchant ID --reason TEXT [--refund-id ID] ORDER [AMOUNT]

refund: gives back AMOUNT (in the ledger's currency, as account topup takes
it; without it, all that is left of the payment) of the shop's online
payment (merchant ID, order ORDER: account show lists a rider's) to the
rider, as the console's Refund… and POST /v1/payments/{merchant}/{order}/refunds.
The payment's refunds never come to more than it. The refund's idempotency
key is --refund-id, by default derived from the merchant, the order and the
amount (printed): the same command again refunds nothing twice; a second
refund of the same amount of the same order needs a --refund-id of its own.
--reason (required, at most 128 bytes) is kept with the refund and in the
audit trail.
`

// moneyFlags are the flags of the money acts: the ledger's place, and
// those a subcommand adds.
type moneyFlags struct {
	fs                 *flag.FlagSet
	data, db           *string
	reason, reference  *string
	merchant, refundID *string
	rides, postings    *int
}

func newMoneyFlags(name, usage string) *moneyFlags {
	f := &moneyFlags{fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	f.fs.Usage = func() { // what the act does, then its flags
		fmt.Fprint(f.fs.Output(), usage, "\nFlags:\n")
		f.fs.PrintDefaults()
	}
	f.data = dataFlag(f.fs)
	f.db = dbFlag(f.fs)
	return f
}

// negativeAmount is an argument a negative amount would be: the flag
// parser took "-5" for an unknown flag -5.
var negativeAmount = regexp.MustCompile(`^-[0-9.,]`)

// parseArgs parses the subcommand's flags and wants n to most arguments:
// usage errors (exit 2) name what is wrong.
func (f *moneyFlags) parseArgs(args []string, n, most int, what string, stdout, stderr io.Writer) error {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			i = len(args) // the arguments after it: parseAmount refuses a sign
		case negativeAmount.MatchString(a):
			return cli.Usagef(stderr, f.fs.Name(), "%s: a negative amount; amounts are positive (nothing was changed)", a)
		case strings.HasPrefix(a, "-") && !strings.Contains(a, "="):
			i++ // a flag's value follows (none of these flags is boolean): --reason "-5 too much" is a reason
		}
	}
	if err := cli.ParseArgs(f.fs, args, stdout, stderr); err != nil {
		return err
	}
	if f.fs.NArg() < n || f.fs.NArg() > most {
		return cli.Usagef(stderr, f.fs.Name(), "give %s (see --help)", what)
	}
	return nil
}

// parseAccount reads an account number argument.
func parseAccount(stderr io.Writer, prog, s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 || id > math.MaxInt64 {
		return 0, cli.Usagef(stderr, prog, "account %q: an account number is a positive whole number, such as 1001", s)
	}
	return id, nil
}

// parseAmount reads an amount typed in the ledger's currency, as the
// console takes it (feedback.ParseAmount), at most the ledger's bound for
// one amount.
func parseAmount(text, currency string) (int64, error) {
	return feedback.ParseAmount(text, currency, ledger.MaxAmount)
}

func cmdAccount(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if done, err := beforeSubcommand(args, accountUsage, stdout, stderr); done {
		return err
	}
	sub := args[0]
	f := newMoneyFlags("farego-settlement account "+sub, accountUsage)
	switch sub {
	case "show":
		f.rides = f.fs.Int("rides", 10, "how many of the newest rides to show (1 to 1000)")
		f.postings = f.fs.Int("postings", 10, "how many of the newest postings to show (1 to 1000)")
		if err := f.parseArgs(args[1:], 1, 1, "the account number", stdout, stderr); err != nil {
			return err
		}
		if *f.rides < 1 || *f.rides > 1000 || *f.postings < 1 || *f.postings > 1000 {
			return cli.Usagef(stderr, f.fs.Name(), "--rides and --postings: 1 to 1000")
		}
	case "topup":
		f.reference = f.fs.String("reference", "", "the top-up's idempotency key (required): the payment provider's transaction id, or a ticket number")
		f.reason = f.fs.String("reason", "", "why (required; kept in the audit trail)")
		if err := f.parseArgs(args[1:], 2, 2, "the account number and the amount", stdout, stderr); err != nil {
			return err
		}
		if err := cli.Required(f.fs, stderr, "reference", "reason"); err != nil {
			return err
		}
	default:
		fmt.Fprint(stderr, accountUsage)
		return cli.Usagef(stderr, "farego-settlement account", "unknown subcommand %q", sub)
	}
	id, err := parseAccount(stderr, f.fs.Name(), f.fs.Arg(0))
	if err != nil {
		return err
	}
	st, err := openLedger(ctx, *f.data, *f.db)
	if err != nil {
		return err
	}
	defer st.Close()
	if sub == "show" {
		return showAccount(ctx, st, id, *f.rides, *f.postings, stdout)
	}
	cur := st.Currency()
	amount, err := parseAmount(f.fs.Arg(1), cur)
	if err != nil {
		return cli.UsageError("%v (nothing was changed)", err)
	}
	a, added, err := st.TopUpAs(ctx, id, amount, *f.reference, cliActor(), *f.reason)
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		return fmt.Errorf("no account %d (nothing was changed): check the number", id)
	case errors.Is(err, ledger.ErrTopUpConflict):
		return fmt.Errorf("reference %q was used for another top-up (of another account or amount): nothing was changed; "+
			"give this top-up a reference of its own", *f.reference)
	case err != nil:
		return actError(err, "with the same --reference it adds the money once")
	}
	if !added {
		fmt.Fprintf(stdout, "account %d was topped up %s with reference %q already: nothing added; balance %s\n", id,
			feedback.FormatAmount(amount, cur), *f.reference, feedback.FormatAmount(a.Balance, cur))
		return nil
	}
	fmt.Fprintf(stdout, "account %d topped up %s (reference %q): balance %s\n", id, feedback.FormatAmount(amount, cur),
		*f.reference, feedback.FormatAmount(a.Balance, cur))
	if a.Denied {
		fmt.Fprintf(stdout, "the account is still denied (%s): account show %d says why\n", a.DenyReason, id)
	}
	return nil
}

func cmdTap(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if done, err := beforeSubcommand(args, tapUsage, stdout, stderr); done {
		return err
	}
	if args[0] != "void" {
		fmt.Fprint(stderr, tapUsage)
		return cli.Usagef(stderr, "farego-settlement tap", "unknown subcommand %q", args[0])
	}
	f := newMoneyFlags("farego-settlement tap void", tapUsage)
	f.reason = f.fs.String("reason", "", "why the fare is given back (required; kept in the audit trail)")
	if err := f.parseArgs(args[1:], 1, 1, "the tap's id, DEVICE/EPOCH/SEQ (account show lists a rider's rides with theirs)", stdout, stderr); err != nil {
		return err
	}
	if err := cli.Required(f.fs, stderr, "reason"); err != nil {
		return err
	}
	tap := f.fs.Arg(0)
	st, err := openLedger(ctx, *f.data, *f.db)
	if err != nil {
		return err
	}
	defer st.Close()
	cur := st.Currency()
	res, err := st.VoidTap(ctx, tap, *f.reason, cliActor())
	switch {
	case errors.Is(err, ledger.ErrNotFound):
		return fmt.Errorf("no tap %q (nothing was changed): a ride's tap id is DEVICE/EPOCH/SEQ, as account show lists it", tap)
	case err != nil:
		return actError(err, "a tap is voided once")
	}
	if res.Already {
		fmt.Fprintf(stdout, "tap %s (account %d, service day %s) was void already: nothing changed\n", tap, res.Account, res.Day)
		return nil
	}
	a, err := st.Account(ctx, res.Account)
	if err != nil {
		return fmt.Errorf("tap %s voided, %s back to account %d; reading the account after it: %w", tap,
			feedback.FormatAmount(res.Returned, cur), res.Account, err)
	}
	fmt.Fprintf(stdout, "tap %s voided: %s back to account %d net (service day %s rated again without it); balance %s\n", tap,
		feedback.FormatAmount(res.Returned, cur), res.Account, res.Day, feedback.FormatAmount(a.Balance, cur))
	if res.Returned <= 0 {
		// Not a failure: the day's later rides pay what the voided one
		// saved them (a transfer it started, the daily cap).
		fmt.Fprintf(stdout, "(nothing came back net: later rides of %s now pay what this ride saved them; account show %d lists them)\n",
			res.Day, res.Account)
	}
	return nil
}

// defaultRefundID is the refund id of a refund asked without --refund-id:
// the same merchant, order and amount make the same id, so the same
// command again is the same refund (the ledger answers it as a retry).
func defaultRefundID(merchant, order string, amount int64) string {
	h := sha256.Sum256([]byte(merchant + "\x00" + order + "\x00" + strconv.FormatInt(amount, 10)))
	return "cli-" + hex.EncodeToString(h[:10])
}

// restRefundID is the refund id of a refund of all that is left of an
// order, asked without an amount or --refund-id: the rest after what its
// refunds gave back by then. Derived from the amount alone, the rest
// after a refund of the same amount (2.00 of 4.00, then the rest) was
// that refund's id, answered "was made already: nothing changed" (exit
// 0) and never given back; two runs at once still make one refund.
func restRefundID(merchant, order string, refunded int64) string {
	h := sha256.Sum256([]byte(merchant + "\x00" + order + "\x00rest after " + strconv.FormatInt(refunded, 10)))
	return "cli-" + hex.EncodeToString(h[:10])
}

func cmdPayment(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if done, err := beforeSubcommand(args, paymentUsage, stdout, stderr); done {
		return err
	}
	if args[0] != "refund" {
		fmt.Fprint(stderr, paymentUsage)
		return cli.Usagef(stderr, "farego-settlement payment", "unknown subcommand %q", args[0])
	}
	f := newMoneyFlags("farego-settlement payment refund", paymentUsage)
	f.merchant = f.fs.String("merchant", "", "the shop's merchant id (required)")
	f.reason = f.fs.String("reason", "", "why (required; kept with the refund and in the audit trail)")
	f.refundID = f.fs.String("refund-id", "", "the refund's idempotency key (default: derived from the merchant, order and amount)")
	if err := f.parseArgs(args[1:], 1, 2, "the order id, and the amount unless all that is left", stdout, stderr); err != nil {
		return err
	}
	if err := cli.Required(f.fs, stderr, "merchant", "reason"); err != nil {
		return err
	}
	merchant, order := *f.merchant, f.fs.Arg(0)
	st, err := openLedger(ctx, *f.data, *f.db)
	if err != nil {
		return err
	}
	defer st.Close()
	cur := st.Currency()
	var amount int64
	if f.fs.NArg() == 2 {
		if amount, err = parseAmount(f.fs.Arg(1), cur); err != nil {
			return cli.UsageError("%v (nothing was changed)", err)
		}
	}
	p, err := st.PaymentByOrder(ctx, merchant, order)
	if errors.Is(err, ledger.ErrNotFound) {
		return fmt.Errorf("merchant %q has no payment with order %q (nothing was changed): account show lists a rider's shop payments", merchant, order)
	} else if err != nil {
		return err
	}
	refunded, err := refundedOf(ctx, st, p.ID)
	if err != nil {
		return err
	}
	rest := amount == 0
	if rest {
		// All that is left, as it is now; the ledger checks it again
		// under the account's lock.
		if amount = p.Amount - refunded; amount <= 0 {
			return fmt.Errorf("nothing is left to refund of merchant %q's order %q: its refunds come to %s of %s already (nothing was changed)",
				merchant, order, feedback.FormatAmount(refunded, cur), feedback.FormatAmount(p.Amount, cur))
		}
	}
	refundID := *f.refundID
	switch {
	case refundID != "":
	case rest:
		refundID = restRefundID(merchant, order, refunded)
	default:
		refundID = defaultRefundID(merchant, order, amount)
	}
	rf, replayed, err := st.RefundPayment(ctx, ledger.RefundRequest{MerchantID: merchant, OrderID: order, RefundID: refundID,
		Amount: amount, Reason: *f.reason, Actor: cliActor()})
	switch {
	case errors.Is(err, ledger.ErrRefundConflict):
		return fmt.Errorf("refund id %q of merchant %q was used for another order or amount: nothing was changed; give --refund-id an id of its own",
			refundID, merchant)
	case errors.Is(err, ledger.ErrNotFound):
		return fmt.Errorf("merchant %q has no payment with order %q (nothing was changed)", merchant, order)
	case err != nil:
		return actError(err, "with the same amount, or the same --refund-id, it refunds once")
	}
	what := fmt.Sprintf("merchant %s's order %s (payment %d, account %d)", merchant, order, rf.PaymentID, rf.Account)
	if replayed {
		fmt.Fprintf(stdout, "refund %s of %s to %s was made already: nothing changed; its refunds come to %s of %s\n", refundID,
			feedback.FormatAmount(rf.Amount, cur), what, feedback.FormatAmount(refunded, cur), feedback.FormatAmount(p.Amount, cur))
		if *f.refundID == "" {
			fmt.Fprintln(stdout, "(another refund of the same amount of this order is one more: give it --refund-id ID of its own)")
		}
		return nil
	}
	fmt.Fprintf(stdout, "refunded %s of %s (refund id %s): its refunds come to %s of %s, %s left\n", feedback.FormatAmount(rf.Amount, cur),
		what, refundID, feedback.FormatAmount(rf.Refunded, cur), feedback.FormatAmount(rf.PaymentAmount, cur),
		feedback.FormatAmount(rf.PaymentAmount-rf.Refunded, cur))
	return nil
}

// actError is the error of a money act the ledger did not do: a refusal
// (bad input, a rule: nothing was written), or a failure whose outcome
// may be unknown (the database cut off as it committed, say), which the
// same command again settles: it is idempotent, as retry says.
func actError(err error, retry string) error {
	for _, refusal := range []error{ledger.ErrInvalid, ledger.ErrNotFound, ledger.ErrNotVoidable, ledger.ErrOverRefund,
		ledger.ErrTopUpConflict, ledger.ErrRefundConflict} {
		if errors.Is(err, refusal) {
			return fmt.Errorf("%w (nothing was changed)", err)
		}
	}
	return fmt.Errorf("%w\nif it is not clear whether it was done, run the same command again: %s (account show tells)", err, retry)
}

// refundedOf is what a payment's refunds have given back by now.
func refundedOf(ctx context.Context, st *ledger.Store, payment uint64) (int64, error) {
	rs, err := st.Refunds(ctx, payment)
	if err != nil {
		return 0, err
	}
	return ledger.RefundedOf(rs), nil
}

const timeFormat = "2006-01-02 15:04:05"

// showAccount prints what an operator asks of an account at 3 a.m.: its
// balance and state, its passes, its newest rides and postings, and the
// shop payments among them with what is left to refund.
func showAccount(ctx context.Context, st *ledger.Store, id uint64, rides, postings int, stdout io.Writer) error {
	a, err := st.Account(ctx, id)
	if errors.Is(err, ledger.ErrNotFound) {
		return fmt.Errorf("no account %d: check the number", id)
	}
	if err != nil {
		return err
	}
	cur := a.Currency
	m := func(v int64) string { return feedback.FormatAmount(v, cur) }
	entries, err := st.DenyEntries(ctx, id)
	if err != nil {
		return err
	}
	creds, err := st.CredentialsBefore(ctx, id, 0, ledger.MaxUnexpiredCredentials)
	if err != nil {
		return err
	}
	rs, err := st.Rides(ctx, id, rides)
	if err != nil {
		return err
	}
	ps, err := st.Postings(ctx, id, postings)
	if err != nil {
		return err
	}
	now := time.Now()
	profile := a.Profile.String()
	if a.ProfilePending {
		profile += " (pending: its passes carry adult until confirmed)"
	}
	fmt.Fprintf(stdout, "account %d", id)
	if a.Name != "" {
		fmt.Fprintf(stdout, " %q", a.Name)
	}
	fmt.Fprintf(stdout, ", created %s UTC\n", a.CreatedAt.UTC().Format(timeFormat))
	fmt.Fprintf(stdout, "balance       %s\n", m(a.Balance))
	limit := "none"
	if a.PaymentLimit > 0 {
		limit = m(a.PaymentLimit)
	}
	fmt.Fprintf(stdout, "credit line   %s; limit for shops %s\n", m(a.CreditLine), limit)
	fmt.Fprintf(stdout, "profile       %s\n", profile)
	state := "in good standing"
	var accountEntries []string
	for _, e := range entries {
		if e.Serial == 0 {
			accountEntries = append(accountEntries, fmt.Sprintf("%s since %s", e.Reason, e.Since.UTC().Format(timeFormat)))
		}
	}
	if len(accountEntries) > 0 {
		state = "DENIED: " + strings.Join(accountEntries, "; ")
	}
	fmt.Fprintf(stdout, "state         %s\n", state)

	fmt.Fprintf(stdout, "\npasses (newest %d of %d issued)\n", len(creds), a.LastSerial)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  SERIAL\tISSUED UTC\tVALID UNTIL UTC\tSTATE")
	for _, c := range creds {
		s := "valid"
		if now.After(c.NotAfter) {
			s = "expired"
		}
		for _, e := range entries {
			if e.Serial == c.Serial {
				s += ", denied: " + e.Reason
			}
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\n", c.Serial, c.IssuedAt.UTC().Format(timeFormat), c.NotAfter.UTC().Format(timeFormat), s)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintf(stdout, "\nrides (newest %d)\n", len(rs))
	tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  TAP\tTIME UTC\tDAY\tROUTE\tFARE\tCHARGED\tMARKS")
	for _, r := range rs {
		var marks []string
		if r.Flag != "" {
			marks = append(marks, r.Flag)
		}
		if r.Transfer {
			marks = append(marks, "transfer")
		}
		if r.Capped {
			marks = append(marks, "capped")
		}
		marks = append(marks, r.Notes...)
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.TapID, r.Time.UTC().Format(timeFormat), r.ServiceDay, r.Route,
			m(r.BaseFare), m(r.Charge), orDash(strings.Join(marks, ", ")))
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintf(stdout, "\npostings (newest %d)\n", len(ps))
	tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  SEQ\tTIME UTC\tKIND\tAMOUNT\tBALANCE\tFOR")
	var payments []uint64
	seen := map[uint64]bool{}
	for _, p := range ps {
		kind, what := p.Kind, ""
		switch {
		case p.Kind == ledger.KindTopUp:
			what = "reference " + strconv.Quote(p.Reference)
		case p.TapID != "":
			what = "tap " + p.TapID
		case p.IsRefund():
			kind = "refund"
			what = fmt.Sprintf("merchant %s order %s refund %s %q", p.MerchantID, p.OrderID, p.RefundID, p.RefundReason)
		case p.Kind == ledger.KindPayment:
			what = fmt.Sprintf("merchant %s order %s", p.MerchantID, p.OrderID)
		}
		if p.PaymentID != 0 && !seen[p.PaymentID] {
			seen[p.PaymentID] = true
			payments = append(payments, p.PaymentID)
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\n", p.Seq, p.CreatedAt.UTC().Format(timeFormat), kind, m(p.Amount), m(p.Balance), what)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(payments) == 0 {
		return nil
	}
	// The shop payments among those postings, with what is left of each
	// (at most one read per posting shown).
	fmt.Fprintln(stdout, "\nshop payments among them (payment refund --merchant ID ORDER [AMOUNT])")
	tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  PAYMENT\tMERCHANT\tORDER\tPAID\tREFUNDED\tLEFT")
	for _, id := range payments {
		var merchant, order string
		for _, p := range ps {
			if p.PaymentID == id {
				merchant, order = p.MerchantID, p.OrderID
			}
		}
		o, err := st.PaymentByOrder(ctx, merchant, order)
		if err != nil {
			return err
		}
		refunded, err := refundedOf(ctx, st, id)
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\n", id, o.MerchantID, o.OrderID, m(o.Amount), m(refunded), m(o.Amount-refunded))
	}
	return tw.Flush()
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
)

// validatorArchiveAge is how long a validator keeps acked taps for a
// replay by default (queue.DefaultArchiveMaxAge; the server does not link
// the queue).
const validatorArchiveAge = 7 * 24 * time.Hour

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
	keysDir := fs.String("keys", "", "the servers' key directory (default DATA/keys): the ledger must be bound to it")
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
	if *keysDir == "" {
		*keysDir = filepath.Join(*data, "keys")
	}
	kd, err := keys.Open(*keysDir)
	if err != nil {
		return fmt.Errorf("the key directory the servers start with: %w (give it with --keys)", err)
	}
	if err := staleWAL(*data, *db); err != nil {
		return err
	}
	// A backup of the release before: restored is its first program, and
	// migrates it unless it is another deployment's (checked first).
	st, err := openLedgerTo(ctx, *data, *db, true, kd.Fingerprint())
	if errors.Is(err, ledger.ErrOtherKeys) {
		return fmt.Errorf("%w: the backup is of another deployment, or the key directory (%s) is", err, *keysDir)
	}
	if err != nil {
		return err
	}
	defer st.Close()
	if err := st.Exclusive(ctx); err != nil {
		return err
	}
	// Another deployment's ledger (a backup of the wrong one) would be
	// changed here and refused only by run: check first, change nothing.
	if have, err := st.KeySet(ctx); err != nil {
		return err
	} else if have != "" && have != kd.Fingerprint() {
		return fmt.Errorf("%w (the ledger's key set is %s, %s's is %s): the backup is of another deployment, or the key directory is; "+
			"the ledger is unchanged", ledger.ErrOtherKeys, have, *keysDir, kd.Fingerprint())
	}
	before, again := st.RestoredAt()
	// Taps acked since the backup come back only from the validators'
	// archives, which keep them for so long: older, they are lost for good
	// (riders rode free), and the operator should know before replaying.
	newest, anyTap, err := st.LastTapCommitted(ctx)
	if err != nil {
		return err
	}
	acct, pay, err := st.Restored(ctx, *margin, cliActor(), lost...)
	if lf := (*ledger.LostFareTableError)(nil); errors.As(err, &lf) {
		return fmt.Errorf("%s: %w (the ledger is unchanged: mend the --fares tables, or leave out the refused one, and run restored again)",
			lostFiles[lf.Index], err)
	}
	if err != nil {
		return err
	}
	if again {
		// Run twice by mistake, or a second restore: harmless, but each
		// moves the id counters on again; said, not done in silence.
		fmt.Fprintf(stdout, "this ledger was marked restored already, at %s: marked again (the id counters moved on by the margin once more)\n",
			before.UTC().Format(time.RFC3339))
	}
	for i, t := range lost {
		fmt.Fprintf(stdout, "fare table version %d (%s) is in the ledger\n", t.Version, lostFiles[i])
	}
	if age := time.Since(newest); anyTap && !again && age > validatorArchiveAge {
		fmt.Fprintf(stdout, "warning: the restored ledger's newest tap was committed %s, %d days ago; validators keep acked taps "+
			"%d days (their archive, which a replay resends): the taps settled from then until %s are in no archive and stay lost\n",
			newest.UTC().Format(time.RFC3339), int(age/(24*time.Hour)), int(validatorArchiveAge/(24*time.Hour)),
			time.Now().Add(-validatorArchiveAge).UTC().Format(time.RFC3339))
	}
	if err := st.CheckInvariants(ctx); err != nil {
		return fmt.Errorf("the restored ledger does not check: %w", err)
	}
	// Money moved since the backup is lost with it, and nothing brings it
	// back but the operator: say from when (a drill found the procedure
	// naming the records to redo them from, not the time to start at),
	// and that a shop's payment cannot be entered again (its code has
	// expired: POST /v1/payments answers code_expired) — unless its till
	// retries it while the code is still valid: that retry pays it again,
	// under a new id, and the settlement report holds it (a shop settled
	// from its records for it too was paid twice).
	topup, payment, refund, err := st.LastMoneyMoved(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "the restored ledger's newest top-up was made %s, its newest shop payment %s, its newest refund %s: those made since are lost.\n"+
		"  Enter again, with their references, the top-ups the payment provider's records show after it. Shop payments since\n"+
		"  cannot be entered again (a payment needs the rider's code, expired by now), but one a till sends again while its code\n"+
		"  is still valid (the code max age, 2 minutes by default) is paid again, under a new payment id, and the merchant\n"+
		"  settlement report holds it: settle with each shop, from its records, only the orders since that the ledger does not\n"+
		"  find (GET /v1/payments/MERCHANT/ORDER: 404). A refund since of a payment the restored ledger holds is owed\n"+
		"  to the rider and can be sent again: the shop's till sends it again with its refund_id (or the operator, from the shop's\n"+
		"  records: POST /v1/payments/MERCHANT/ORDER/refunds); one of a payment lost too is settled with the shop.\n"+
		"  API tokens created since are lost too: create them again.\n",
		orNone(topup), orNone(payment), orNone(refund))
	// A fare voided since the backup is charged again by the replay
	// below (a restore drill: the voided tap replayed, charged, nothing
	// said): name when the restored ledger's newest void was made, and
	// where the lost ones are named.
	voided, err := st.LastAudited(ctx, "void_tap")
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "the restored ledger's newest void of a fare was made %s: fares voided since are lost, and the replay charges their\n"+
		"  taps again: void them again once replayed (POST /v1/taps/void, the console's Void…); the settlement servers' logs name\n"+
		"  each voided through the API or the console, \"tap voided by an operator\" with its tap; one voided on the command\n"+
		"  line (farego-settlement tap void) is in no server's log: the command printed \"tap … voided\".\n", orNone(voided))
	// So are the other changes since, which only the audit trail
	// recorded (the restored one): say from when.
	audited, err := st.LastAudited(ctx, "")
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "the restored ledger's audit trail ends %s: what was changed since is lost with it; do again the reduced fares\n"+
		"  confirmed, credit lines and payment limits set, secrets replaced and deny entries made since (a rider's own payment\n"+
		"  limit or secret change is in no audit entry: the rider sets it again).\n",
		orNone(audited))
	// API tokens revoked since the backup are in force again (a leaked
	// payments token tops up any account): name those in force, to be
	// checked against the revocations made since.
	toks, err := st.Tokens(ctx)
	if err != nil {
		return err
	}
	var live []string
	for _, t := range toks {
		if t.Revoked.IsZero() {
			name := "-" // as token list writes a token without a name (it was "")
			if t.Name != "" {
				name = strconv.Quote(t.Name)
			}
			live = append(live, fmt.Sprintf("  %s %s %s %s created %s", t.ID, t.Role, orDash(t.MerchantID), name, t.Created.UTC().Format(time.RFC3339)))
		}
	}
	if len(live) > 0 {
		fmt.Fprintf(stdout, "API tokens in force in the restored ledger (a token revoked since the backup is in force again: revoke it again):\n%s\n", strings.Join(live, "\n"))
	}
	fmt.Fprintf(stdout, `ledger marked as restored: the next account id is %d, the next payment id %d
next: revoke again the validators revoked since the backup (farego-settlement device revoke) and the
  API tokens revoked since (farego-settlement token revoke ID), before
  the servers start; then start the settlement server(s) and ask every online validator to resend
  its archive:
  curl -X POST -H "Authorization: Bearer $(cat %s/operator.token)" http://HOST:8080/v1/devices/replay
  (it reaches the validators online now, and is kept a day for the others, sent to each when it is
  next heard online; one off for longer: ask it alone, POST /v1/devices/ID/replay, once GET
  /v1/devices shows it online, or the taps it sent after the backup stay out of the ledger);
  and do again what else was done since the backup: register the validators registered since, deny
  again, enter the top-ups again, send the refunds again, void the fares again (see the README's restore procedure)
`, acct+1, pay+1, *keysDir)
	return nil
}

// orNone writes t in RFC 3339, or "none" for the zero time.
func orNone(t time.Time) string {
	if t.IsZero() {
		return "none"
	}
	return t.UTC().Format(time.RFC3339)
}

// staleWAL refuses a SQLite ledger with a write-ahead log beside it older
// than the file itself: the log of the server that ran (or crashed) before
// the backup was copied over the file. Opened, SQLite plays it onto the
// backup: restored reported ok on what was the crashed server's ledger,
// not the backup (a correctness review), or on a larger ledger found it
// malformed after it had changed it. Nothing is opened or changed.
func staleWAL(data, db string) error {
	dsn := db
	if dsn == "" {
		dsn = "sqlite:" + filepath.Join(data, "ledger.db")
	}
	path, ok := ledger.SQLitePath(dsn)
	if !ok {
		return nil
	}
	file, err := os.Stat(path)
	if err != nil || ledger.SQLiteServed(path) {
		return nil // openLedger says what is missing, Exclusive that a server runs (whose log is live)
	}
	wal, err := os.Stat(path + "-wal")
	// The file's change time, not its modification time: a copy that
	// keeps times (cp -a, rsync -a, tar) gives the backup its old
	// modification time, but the change time is the copy's.
	placed := changed(file)
	if err != nil || wal.Size() == 0 || !wal.ModTime().Before(placed) {
		return nil
	}
	return fmt.Errorf("%s-wal (%d bytes, written %s) is older than %s (put in place %s): it is the log of the server that ran before "+
		"the backup was put in place, and SQLite would play it onto the backup. If %s is the backup's whole copy, remove "+
		"%s-wal and %s-shm (README: Restoring a backup, step 1) and run restored again; the ledger is unchanged",
		path, wal.Size(), wal.ModTime().UTC().Format(time.RFC3339), path, placed.UTC().Format(time.RFC3339),
		path, path, path)
}

// changed returns when fi's file was last changed (its inode: written,
// renamed into place, its mode or owner set), or its modification time
// where the system does not say.
func changed(fi os.FileInfo) time.Time {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return time.Unix(st.Ctim.Unix())
	}
	return fi.ModTime()
}

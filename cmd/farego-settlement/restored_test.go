package main

import (
	"context"
	"crypto/ed25519"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/queue"
	"github.com/farego/farego/server/ledger"
)

// A ledger restored from a backup holds the API tokens as they were then:
// one revoked since (a payment provider's token that leaked: it tops up
// any account) works again. restored said to revoke again the validators
// revoked since, and nothing of tokens; it names the tokens in force in
// the restored ledger and says to revoke again those revoked since, before
// the servers start.
func TestRestoredNamesTheTokensInForce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	data := filepath.Join(t.TempDir(), "data")
	if c, _, e := settle(t, ctx, "init", "--data", data); c != 0 {
		t.Fatal(e)
	}
	c, _, e := settle(t, ctx, "token", "create", "--data", data, "--role", "payments", "--name", "psp")
	if c != 0 {
		t.Fatal(e)
	}
	if c, _, e := settle(t, ctx, "token", "create", "--data", data, "--role", "auditor"); c != 0 { // no name
		t.Fatal(e)
	}
	id := regexp.MustCompile(`token ([a-z0-9]+) \(payments\) created`).FindStringSubmatch(e)
	if id == nil {
		t.Fatalf("token create: %q", e)
	}
	// The backup (no server runs: the file is quiet), then the token is
	// revoked.
	backup := t.TempDir()
	copyLedger(t, data, backup)
	if c, _, e := settle(t, ctx, "token", "revoke", "--data", data, id[1]); c != 0 {
		t.Fatal(e)
	}
	// The restore.
	copyLedger(t, backup, data)
	// What the restore did: the token is in force again.
	if _, list, _ := settle(t, ctx, "token", "list", "--data", data); !strings.Contains(list, id[1]) {
		t.Fatalf("token list after the restore: %q", list)
	}
	c, out, e := settle(t, ctx, "restored", "--data", data)
	if c != 0 {
		t.Fatal(e)
	}
	if !strings.Contains(out, id[1]) || !strings.Contains(out, "farego-settlement token revoke") {
		t.Errorf("restored: %q; want the token in force (%s) named, and to revoke again those revoked since", out, id[1])
	}
	// A token without a name reads as token list writes it, not "";
	// and the replay is kept for validators offline then, one off longer
	// asked alone (a drill: a validator offline during the request kept
	// its taps sent since the backup out of the ledger until asked again).
	if strings.Contains(out, `""`) || !strings.Contains(out, `"psp"`) || !strings.Contains(out, "auditor - - created") {
		t.Errorf("restored names the tokens:\n%s\nwant \"psp\" and - for the one without a name", out)
	}
	if !strings.Contains(out, "kept a day for the others") || !strings.Contains(out, "ask it alone") {
		t.Errorf("restored does not say to ask the validators offline again:\n%s", out)
	}
	if strings.Contains(out, "marked restored already") {
		t.Errorf("restored on a ledger never restored: %q", out)
	}
	// Run again by mistake: said (it moved the id counters on once more
	// in silence).
	if c, out, e := settle(t, ctx, "restored", "--data", data); c != 0 || !strings.Contains(out, "marked restored already") {
		t.Errorf("restored again: %d %q %q", c, out, e)
	}
}

// copyLedger copies from/ledger.db* to to/ (removing to's first).
func copyLedger(t *testing.T, from, to string) {
	t.Helper()
	old, _ := filepath.Glob(filepath.Join(to, "ledger.db*"))
	for _, m := range old {
		os.Remove(m)
	}
	files, _ := filepath.Glob(filepath.Join(from, "ledger.db*"))
	for _, m := range files {
		if strings.HasSuffix(m, "-serving") {
			continue
		}
		in, err := os.Open(m)
		if err != nil {
			t.Fatal(err)
		}
		outf, err := os.OpenFile(filepath.Join(to, filepath.Base(m)), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(outf, in); err != nil {
			t.Fatal(err)
		}
		in.Close()
		if err := outf.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// A backup older than the validators' archive (7 days by default): the
// taps they acked from the backup until a week ago are in no archive, and
// no replay brings them back. restored said nothing of it (the README's
// "nothing a restore loses is lost for good"); it says so now, with the
// dates, and says nothing of a recent backup.
func TestRestoredOlderThanTheArchive(t *testing.T) {
	if validatorArchiveAge != queue.DefaultArchiveMaxAge {
		t.Fatalf("validatorArchiveAge %s; the validators' is %s", validatorArchiveAge, queue.DefaultArchiveMaxAge)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range []struct {
		age  time.Duration
		warn bool
	}{{10 * 24 * time.Hour, true}, {2 * 24 * time.Hour, false}} {
		data := filepath.Join(t.TempDir(), "data")
		if c, _, e := settle(t, ctx, "init", "--data", data, "--fares", filepath.Join("..", "..", "testdata", "fare", "table.json")); c != 0 {
			t.Fatal(e)
		}
		// The backup's newest tap, committed c.age ago (an unknown
		// account's: stored uncharged, which is all this needs).
		committed := time.Now().Add(-c.age)
		st, err := ledger.Open(ctx, "sqlite:"+filepath.Join(data, "ledger.db"), &ledger.Options{Now: func() time.Time { return committed }})
		if err != nil {
			t.Fatal(err)
		}
		tp := ledger.Tap{ID: ledger.TapID("bus-1", "e1", 1), DeviceID: "bus-1", Epoch: "e1", Seq: 1, Time: committed, Account: 4242,
			Serial: 1, RiderKey: make([]byte, ed25519.PublicKeySize), CodeKey: paycode.ID{Account: 4242, Serial: 1, Time: uint32(committed.Unix())}.Key(),
			CodeHash: "0123456789ab", Profile: paycode.Adult, ClaimedProfile: paycode.Adult, BaseFare: 250, Currency: "EUR", FareVersion: 1,
			Route: "42", Vehicle: "bus-7", Record: []byte("record")}
		if _, err := st.CommitTaps(ctx, []ledger.Tap{tp}); err != nil {
			t.Fatal(err)
		}
		st.Close()
		code, out, e := settle(t, ctx, "restored", "--data", data)
		if code != 0 {
			t.Fatal(e)
		}
		if warned := strings.Contains(out, "are in no archive and stay lost") && strings.Contains(out, committed.UTC().Format(time.RFC3339)); warned != c.warn {
			t.Errorf("restored, the newest tap %s old: %q; want the taps in no archive said: %v", c.age, out, c.warn)
		}
	}
}

// The backup copied over ledger.db beside the crashed server's
// ledger.db-wal: SQLite plays that newer log onto the backup, and
// restored reported ok on the crashed server's ledger (correctness
// review). A log older than the file is refused, the file unchanged; once
// removed (the README's step 1), restored runs.
func TestRestoredRefusesAStaleWAL(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	data := filepath.Join(t.TempDir(), "data")
	if c, _, e := settle(t, ctx, "init", "--data", data); c != 0 {
		t.Fatal(e)
	}
	db := filepath.Join(data, "ledger.db")
	wal := db + "-wal"
	if err := os.WriteFile(wal, []byte("the crashed server's log"), 0o600); err != nil {
		t.Fatal(err)
	}
	hour := time.Now().Add(-time.Hour)
	if err := os.Chtimes(wal, hour, hour); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	// The backup put in place by a copy that keeps times (cp -a): its
	// modification time is older than the log's, its change time is not.
	day := time.Now().Add(-24 * time.Hour)
	if err := os.Chtimes(db, day, day); err != nil {
		t.Fatal(err)
	}
	c, out, e := settle(t, ctx, "restored", "--data", data)
	if c == 0 || !strings.Contains(e, "ledger.db-wal (24 bytes") || !strings.Contains(e, "is older than") || !strings.Contains(e, "the ledger is unchanged") {
		t.Fatalf("restored beside a stale -wal: exit %d, %q %q; want it refused, saying why", c, out, e)
	}
	if after, err := os.ReadFile(db); err != nil || string(after) != string(before) {
		t.Fatalf("the ledger changed (%v)", err)
	}
	if b, err := os.ReadFile(wal); err != nil || string(b) != "the crashed server's log" {
		t.Fatalf("the -wal changed: %q %v", b, err)
	}
	// A server serving the ledger (its lock held, here by the test): its log is live, and
	// removing it would lose what it holds; restored says a server runs.
	lock, err := os.OpenFile(db+ledger.LockFileSuffix, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_SH); err != nil {
		t.Fatal(err)
	}
	c, out, e = settle(t, ctx, "restored", "--data", data)
	lock.Close()
	if c == 0 || strings.Contains(e, "-wal") || !strings.Contains(e, "serving this ledger") {
		t.Fatalf("restored beside a serving server: exit %d, %q %q; want it to say a server serves it, and nothing of its log", c, out, e)
	}
	// An empty -wal (as SQLite leaves one) is not refused.
	if err := os.WriteFile(wal, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if c, _, e := settle(t, ctx, "restored", "--data", data); c != 0 {
		t.Fatalf("restored with the -wal emptied: %d %q", c, e)
	}
}

// A lock file restored cannot open (the server's user made it 0600 and
// restored runs as another; here a directory, as root opens any file)
// does not tell whether a server serves the ledger: the -wal may be a
// live server's (idle after a checkpoint, older than the file's change
// time), and staleWAL told the operator to remove it.
func TestStaleWALUnknownLock(t *testing.T) {
	data := t.TempDir()
	db := filepath.Join(data, "ledger.db")
	if err := os.WriteFile(db, []byte("ledger"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db+"-wal", []byte("a live server's log"), 0o600); err != nil {
		t.Fatal(err)
	}
	hour := time.Now().Add(-time.Hour)
	if err := os.Chtimes(db+"-wal", hour, hour); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(db+ledger.LockFileSuffix, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := staleWAL(data, ""); err != nil {
		t.Fatalf("staleWAL with a lock file it cannot open: %v; want it left to Exclusive", err)
	}
}

// Top-ups, shop payments and refunds made since the backup are lost with
// it. The README told the operator to enter them again from the payment
// provider's and the shops' records, and restored said "enter the top-ups
// again", but neither said from when: a restore drill had to guess the
// backup's time. restored names the restored ledger's newest top-up,
// payment and refund ("none" where it holds none), and says a shop's
// payment cannot be entered again (its code has expired).
func TestRestoredSaysWhenMoneyLastMoved(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	data := filepath.Join(t.TempDir(), "data")
	if c, _, e := settle(t, ctx, "init", "--data", data, "--fares", filepath.Join("..", "..", "testdata", "fare", "table.json")); c != 0 {
		t.Fatal(e)
	}
	toppedUp := time.Now().Add(-3 * time.Hour).Truncate(time.Second)
	st, err := ledger.Open(ctx, "sqlite:"+filepath.Join(data, "ledger.db"), &ledger.Options{Now: func() time.Time { return toppedUp }})
	if err != nil {
		t.Fatal(err)
	}
	a, err := st.CreateAccount(ctx, ledger.AccountSpec{Profile: paycode.Adult})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.TopUp(ctx, a.ID, 1000, "psp-1"); err != nil {
		t.Fatal(err)
	}
	st.Close()
	c, out, e := settle(t, ctx, "restored", "--data", data)
	if c != 0 {
		t.Fatal(e)
	}
	want := "newest top-up was made " + toppedUp.UTC().Format(time.RFC3339) + ", its newest shop payment none, its newest refund none"
	if !strings.Contains(out, want) || !strings.Contains(out, "cannot be entered again") {
		t.Errorf("restored: %q; want %q and that shop payments cannot be entered again", out, want)
	}
}

// A fare voided after the backup is lost with it, and the replay that
// restored asks for brings its tap back charged (a restore drill on
// PostgreSQL: a tap voided after the backup, the backup restored, the
// archive replayed: the rider paid the voided fare again, and neither
// restored nor the README said so). restored names the restored ledger's
// newest void and says to void those since again, where their taps are
// named. It said too that refunds made since "cannot be entered again",
// as a shop's payment cannot: a refund of a payment the restored ledger
// holds can (the same request with its refund_id, tried in the drill), and
// the rider is owed it; settling it with the shop gave the rider nothing.
func TestRestoredSaysVoidsAndRefundsSinceAreToBeDoneAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	data := filepath.Join(t.TempDir(), "data")
	if c, _, e := settle(t, ctx, "init", "--data", data, "--fares", filepath.Join("..", "..", "testdata", "fare", "table.json")); c != 0 {
		t.Fatal(e)
	}
	voidedAt := time.Now().Add(-2 * time.Hour).Truncate(time.Second)
	st, err := ledger.Open(ctx, "sqlite:"+filepath.Join(data, "ledger.db"), &ledger.Options{Now: func() time.Time { return voidedAt }})
	if err != nil {
		t.Fatal(err)
	}
	a, err := st.CreateAccount(ctx, ledger.AccountSpec{Profile: paycode.Adult})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.TopUp(ctx, a.ID, 1000, "psp-1"); err != nil {
		t.Fatal(err)
	}
	rider := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	serial, err := st.IssueCredentialSerial(ctx, a.ID, voidedAt.Add(24*time.Hour), rider)
	if err != nil {
		t.Fatal(err)
	}
	at := voidedAt.Add(-time.Minute)
	tp := ledger.Tap{ID: ledger.TapID("bus-1", "e1", 1), DeviceID: "bus-1", Epoch: "e1", Seq: 1, Time: at, Account: a.ID,
		Serial: serial, RiderKey: rider, CodeKey: paycode.ID{Account: a.ID, Serial: serial, Time: uint32(at.Unix())}.Key(),
		CodeHash: "0123456789ab", Profile: paycode.Adult, ClaimedProfile: paycode.Adult, BaseFare: 250, Currency: "EUR", FareVersion: 1,
		Route: "42", Record: []byte("record")}
	if _, err := st.CommitTaps(ctx, []ledger.Tap{tp}); err != nil {
		t.Fatal(err)
	}
	if v, err := st.VoidTap(ctx, tp.ID, "wrong route", "token:op (operator)"); err != nil || v.Returned != 250 {
		t.Fatalf("void: %+v, %v; want 250 returned", v, err)
	}
	st.Close()
	c, out, e := settle(t, ctx, "restored", "--data", data)
	if c != 0 {
		t.Fatal(e)
	}
	if want := "newest void of a fare was made " + voidedAt.UTC().Format(time.RFC3339); !strings.Contains(out, want) ||
		!strings.Contains(out, "void them again") {
		t.Errorf("restored: %q; want %q and that the fares voided since are to be voided again", out, want)
	}
	if want := "audit trail ends " + voidedAt.UTC().Format(time.RFC3339); !strings.Contains(out, want) {
		t.Errorf("restored: %q; want %q (the void's entry, not the restore's own)", out, want)
	}
	if !strings.Contains(out, "can be sent again") || strings.Contains(out, "payments and refunds since\n  cannot be entered again") {
		t.Errorf("restored: %q; want that a refund since of a payment the ledger holds can be sent again", out)
	}
}

// A shop's payment made after the backup is lost with it, and restored
// said it "cannot be entered again" (its code expired by now) and to
// settle it with the shop from its records, the merchant settlement report
// not holding it. A till that retries the order while the rider's code is
// still valid (a till retrying through the outage, the server back within
// the code's 2 minutes: tried with the binaries, the retry answered 201 with
// payment id 100001 where the first had 1) pays it again, under a new id,
// and the report holds it: settled from the shop's records as well, the
// shop was paid twice for one order. restored says that such a retry is
// paid again and to settle from the shop's records only the orders the
// ledger does not find.
func TestRestoredSaysARetriedShopPaymentIsPaidAgain(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	data := filepath.Join(t.TempDir(), "data")
	if c, _, e := settle(t, ctx, "init", "--data", data, "--fares", filepath.Join("..", "..", "testdata", "fare", "table.json")); c != 0 {
		t.Fatal(e)
	}
	db := filepath.Join(data, "ledger.db")
	now := time.Now().Truncate(time.Second)
	open := func() *ledger.Store {
		t.Helper()
		st, err := ledger.Open(ctx, "sqlite:"+db, &ledger.Options{Now: func() time.Time { return now }})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	st := open()
	a, err := st.CreateAccount(ctx, ledger.AccountSpec{Profile: paycode.Adult})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.TopUp(ctx, a.ID, 1000, "psp-1"); err != nil {
		t.Fatal(err)
	}
	rider := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	serial, err := st.IssueCredentialSerial(ctx, a.ID, now.Add(24*time.Hour), rider)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	if _, err := os.Stat(db + "-wal"); err == nil {
		t.Fatal("ledger.db-wal left after close: the copy below would not be the backup")
	}
	backup, err := os.ReadFile(db) // the backup, taken before the payment
	if err != nil {
		t.Fatal(err)
	}
	req := ledger.PaymentRequest{MerchantID: "shop-1", OrderID: "o-1", Account: a.ID, Serial: serial, RiderKey: rider,
		CodeKey: paycode.ID{Account: a.ID, Serial: serial, Time: uint32(now.Unix())}.Key(), CodeHash: "0123456789ab",
		Amount: 300, Currency: "EUR"}
	st = open()
	first, _, err := st.Pay(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	for _, f := range []string{db + "-wal", db + "-shm"} {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(db, backup, 0o600); err != nil {
		t.Fatal(err)
	}
	c, out, e := settle(t, ctx, "restored", "--data", data)
	if c != 0 {
		t.Fatal(e)
	}
	st = open()
	defer st.Close()
	again, replayed, err := st.Pay(ctx, req) // the till's retry, the code still valid
	if err != nil || replayed || again.ID == first.ID {
		t.Fatalf("the retry after the restore: %+v replayed %v, %v; first %+v: want paid again under a new id", again, replayed, err, first)
	}
	if acct, err := st.Account(ctx, a.ID); err != nil || acct.Balance != 700 {
		t.Fatalf("account after the retry: %+v, %v; want 700 (paid once in this ledger)", acct, err)
	}
	if err := st.CheckInvariants(ctx); err != nil {
		t.Fatal(err)
	}
	flat := strings.Join(strings.Fields(out), " ")
	if !strings.Contains(flat, "is paid again") || !strings.Contains(flat, "only the orders") ||
		strings.Contains(flat, "the merchant settlement report does not hold them") {
		t.Errorf("restored: %q; want that a till's retry within the code's life is paid again (the report holds it) and to settle only the orders the ledger does not find", out)
	}
}

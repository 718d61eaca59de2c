package server

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/paycode/paycodetest"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/ledger/ledgertest"
	"github.com/farego/farego/sync/ingest"
	"github.com/farego/farego/sync/wire"
)

// A revoked device's batch, alone or committed together with other
// batches, is kept aside whole and charges nothing.
func TestRevokedBatchKeptAside(t *testing.T) {
	ctx := context.Background()
	l := sqliteLedger(t)
	st := testStore(t, l, "bus-1")
	batch := func(epoch string) *ingest.Batch {
		return &ingest.Batch{DeviceID: "bus-1", Epoch: epoch, Revoked: true, Taps: []ingest.Tap{
			{Seq: 1, Record: []byte("record one")}, {Seq: 2, Record: []byte("record two")}}}
	}
	if err := st.Commit(ctx, batch("e1")); err != nil {
		t.Fatal(err)
	}
	if err := st.CommitBatches(ctx, []*ingest.Batch{batch("e2"), batch("e3")}); err != nil {
		t.Fatal(err)
	}
	if n, err := l.QuarantineCount(ctx); err != nil || n != 6 {
		t.Fatalf("records kept aside: %d, %v; want 6", n, err)
	}
	stats, err := l.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stats.Taps != 0 {
		t.Errorf("stats %+v: a revoked device's records were stored as taps", stats)
	}
}

// A coalesced set larger than one ledger call takes (here 11 devices'
// batches of 1,000 records: 11,000 taps, the ledger takes 10,000) is
// settled in calls of at most ledger.MaxCommitTaps, not handed to the
// ledger whole, refused, and settled batch by batch.
func TestCoalescedSetOverLedgerLimit(t *testing.T) {
	ctx := context.Background()
	l := sqliteLedger(t)
	now := time.Now()
	tbl, err := fare.Parse([]byte(`{"version":1,"currency":"EUR","timezone":"UTC","service_day_start":"04:00",
		"fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.PutFareTable(ctx, tbl); err != nil {
		t.Fatal(err)
	}
	_, fleet, _ := ed25519.GenerateKey(nil)
	pub, err := ingest.NewPublisher(ingest.PublisherConfig{MQTTConfig: ingest.MQTTConfig{Brokers: []string{"tcp://127.0.0.1:1"}},
		FleetKey: fleet, Source: func(context.Context, string) (uint64, []byte, error) { return 0, nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	st := (*store)(&Server{ledger: l, log: slog.New(slog.DiscardHandler), pub: pub,
		cfg: Config{AfterCommit: func() { calls++ }}})
	// Account 999,999 does not exist: every tap is stored, flagged
	// unknown_account, charged nothing (one code serves them all).
	rider := paycodetest.NewIssuer(t, 1, now).Rider(t, 999_999, now)
	code, err := paycode.ParseText(rider.Code(t, now))
	if err != nil {
		t.Fatal(err)
	}
	var bs []*ingest.Batch
	for d := range 11 {
		b := &ingest.Batch{DeviceID: fmt.Sprintf("bus-%d", d), Epoch: "e"}
		for seq := uint64(1); seq <= wire.MaxBatchRecords; seq++ {
			rec := &record.Tap{DeviceID: b.DeviceID, Epoch: "e", Seq: seq, Time: now, Route: "42", Account: code.Account,
				Serial: code.Serial, Fare: 250, Currency: "EUR", FareVersion: 1}
			b.Taps = append(b.Taps, ingest.Tap{Seq: seq, ID: rec.ID(), Record: []byte("record"), Tap: rec, Code: code,
				CodeHash: "0123456789ab"})
		}
		bs = append(bs, b)
	}
	if err := st.CommitBatches(ctx, bs); err != nil {
		t.Fatal(err)
	}
	if n, err := l.TapCount(ctx); err != nil || n != 11*wire.MaxBatchRecords {
		t.Fatalf("%d taps stored, %v; want %d", n, err, 11*wire.MaxBatchRecords)
	}
	if calls != 2 {
		t.Errorf("%d ledger commits for 11,000 taps; want 2 (10 batches, then 1)", calls)
	}
}

// A tap's route is checked against the assignment in force at its server
// time: its device time less the device's clock offset. A device whose
// clock runs 3 minutes behind, reassigned from route 1 to route 2, takes
// two taps a minute later (its clock still reads 2 minutes before the
// reassignment): the one on route 2 is not noted route_mismatch, the one
// still on route 1 is. On SQLite and, with FAREGO_TEST_POSTGRES, PostgreSQL.
func TestRouteMismatchAtServerTime(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			dsn := "sqlite:" + filepath.Join(t.TempDir(), "ledger.db")
			if backend == "postgres" {
				dsn = ledgertest.PostgresSchema(t)
			}
			testRouteMismatchAtServerTime(t, dsn)
		})
	}
}

func testRouteMismatchAtServerTime(t *testing.T, dsn string) {
	ctx := context.Background()
	l, shift := shiftedLedger(t, dsn)
	now := time.Now()
	st, _, _, rider := riderFixture(t, l, now)
	shift.Store(int64(-time.Hour))
	if _, err := l.AssignDevice(ctx, "bus-1", "1", "", "op"); err != nil {
		t.Fatal(err)
	}
	shift.Store(0)
	a2, err := l.AssignDevice(ctx, "bus-1", "2", "", "op")
	if err != nil {
		t.Fatal(err)
	}
	behind := int64(-3 * time.Minute / time.Millisecond)
	if err := st.Status(ctx, &wire.Status{DeviceID: "bus-1", Online: true, Time: time.Now().Add(-3 * time.Minute),
		ClockOffsetMS: &behind}); err != nil {
		t.Fatal(err)
	}
	if d, err := l.Device(ctx, "bus-1"); err != nil || (d.ClockOffset+3*time.Minute).Abs() > 5*time.Second {
		t.Fatalf("device clock offset %v, %v; want -3m", d.ClockOffset, err)
	}

	deviceTime := a2.At.Add(time.Minute).Add(-3 * time.Minute)
	b := &ingest.Batch{DeviceID: "bus-1", Epoch: "e"}
	for seq, route := range map[uint64]string{1: "2", 2: "1"} {
		code, err := paycode.ParseText(rider.Code(t, deviceTime))
		if err != nil {
			t.Fatal(err)
		}
		rec := &record.Tap{DeviceID: "bus-1", Epoch: "e", Seq: seq, Time: deviceTime, Route: route, Account: code.Account,
			Serial: code.Serial, Profile: paycode.Adult, Fare: 250, Currency: "EUR", FareVersion: 1}
		b.Taps = append(b.Taps, ingest.Tap{Seq: seq, ID: rec.ID(), Record: []byte("record"), Tap: rec, Code: code,
			CodeHash: paycode.ShortHash(paycode.EncodeText(rec.Code))})
	}
	if err := st.Commit(ctx, b); err != nil {
		t.Fatal(err)
	}
	rows, err := l.DeviceTaps(ctx, "bus-1", 10)
	if err != nil || len(rows) != 2 {
		t.Fatalf("device taps %+v, %v; want 2", rows, err)
	}
	for _, r := range rows {
		noted := slices.Contains(r.Notes, ledger.NoteRouteMismatch)
		if r.Flag != "" || noted != (r.Route == "1") {
			t.Errorf("tap on route %s at device time %v: flag %q, notes %v; want route_mismatch only on route 1 (assignment 2 at %v, the device 3m behind)",
				r.Route, deviceTime.Format(time.TimeOnly), r.Flag, r.Notes, a2.At.Format(time.TimeOnly))
		}
	}
}

// A record the held list refuses (its batch's epoch holds a '/', which no
// tap id may) is quarantined instead, and the batch goes through: it
// does not fail, to come again for good.
func TestUnholdableRecordQuarantined(t *testing.T) {
	ctx := context.Background()
	l := sqliteLedger(t)
	st := testStore(t, l, "bus-1")
	now := time.Now()
	rider := paycodetest.NewIssuer(t, 9, now).Rider(t, 1001, now)
	code, err := paycode.ParseText(rider.Code(t, now))
	if err != nil {
		t.Fatal(err)
	}
	rec := &record.Tap{DeviceID: "bus-1", Epoch: "e/x", Seq: 1, Time: now, Route: "42", Account: code.Account, Serial: code.Serial}
	b := &ingest.Batch{DeviceID: "bus-1", Epoch: "e/x", Taps: []ingest.Tap{{Seq: 1, ID: rec.ID(), Record: []byte("record"), Tap: rec,
		Code: code, Verdict: paycode.ReasonUnknownIssuerKey}}}
	if err := st.Commit(ctx, b); err != nil {
		t.Fatalf("a batch with an unholdable record: %v", err)
	}
	if n, err := l.QuarantineCount(ctx); err != nil || n != 1 {
		t.Errorf("quarantined %d, %v; want 1", n, err)
	}
	if n, err := l.HeldCount(ctx); err != nil || n != 0 {
		t.Errorf("held %d, %v; want 0", n, err)
	}
}

// riderFixture gives ledger l a fare table (250 an adult ride) and the
// store with device bus-1, and makes an account with 100.00 and a pass
// issued at now by an issuer of key 1 (its rider).
// sqliteLedger opens a new SQLite ledger in the test's directory, closed
// when the test ends.
func sqliteLedger(t *testing.T) *ledger.Store {
	t.Helper()
	l, err := ledger.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "ledger.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func riderFixture(t *testing.T, l *ledger.Store, now time.Time) (*store, ledger.Account, *paycodetest.Issuer, *paycodetest.Rider) {
	t.Helper()
	ctx := context.Background()
	tbl, err := fare.Parse([]byte(`{"version":1,"currency":"EUR","timezone":"UTC","service_day_start":"04:00",
		"fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.PutFareTable(ctx, tbl); err != nil {
		t.Fatal(err)
	}
	st := testStore(t, l, "bus-1")
	acct, err := l.CreateAccount(ctx, ledger.AccountSpec{Profile: paycode.Adult})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.TopUp(ctx, acct.ID, 10_000, "test"); err != nil {
		t.Fatal(err)
	}
	issuer := paycodetest.NewIssuer(t, 1, now)
	rider := issuer.Rider(t, acct.ID, now)
	if serial, err := l.IssueCredentialSerial(ctx, acct.ID, now.Add(24*time.Hour), rider.Key.Public().(ed25519.PublicKey)); err != nil || serial != rider.Serial {
		t.Fatalf("credential serial %d, %v; want %d", serial, err, rider.Serial)
	}
	return st, acct, issuer, rider
}

// testStore is the server's store on ledger l with devices registered and
// a downlink publisher that reaches no broker.
func testStore(t *testing.T, l *ledger.Store, devices ...string) *store {
	t.Helper()
	for _, id := range devices {
		pub, _, _ := ed25519.GenerateKey(nil)
		if err := l.RegisterDevice(context.Background(), ledger.DeviceRegistration{ID: id, PublicKey: pub, MQTTHash: "h"}); err != nil {
			t.Fatal(err)
		}
	}
	_, fleet, _ := ed25519.GenerateKey(nil)
	publisher, err := ingest.NewPublisher(ingest.PublisherConfig{MQTTConfig: ingest.MQTTConfig{Brokers: []string{"tcp://127.0.0.1:1"}},
		FleetKey: fleet, Source: func(context.Context, string) (uint64, []byte, error) { return 0, nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	return (*store)(&Server{ledger: l, log: slog.New(slog.DiscardHandler), pub: publisher})
}

// TestUnattributableTapsQuarantined: a tap is stored under the account its
// code names only if the rider's own code says so — verified, or failed
// only on time with the issuer's signature on the pass and the rider's on
// the code. A stolen validator made up rides in any account's history
// (flagged invalid_code, shown to the rider) from codes with a garbage
// signature, or from a pass it had seen with a code it could not sign;
// those are quarantined now, and the rider's own late code still shows.
func TestUnattributableTapsQuarantined(t *testing.T) {
	ctx := context.Background()
	l := sqliteLedger(t)
	now := time.Now()
	st, acct, issuer, rider := riderFixture(t, l, now)
	verifier := paycode.NewVerifier(0)
	b := &ingest.Batch{DeviceID: "bus-1", Epoch: "e"}
	add := func(codeAt, tapAt time.Time, damage int) paycode.Reason {
		raw, err := paycode.ParseText(rider.Code(t, codeAt))
		if err != nil {
			t.Fatal(err)
		}
		bs := raw.Bytes()
		if damage > 0 {
			bs[damage] ^= 1
		}
		code, err := paycode.ParseCode(bs)
		if err != nil {
			t.Fatal(err)
		}
		seq := uint64(len(b.Taps) + 1)
		rec := &record.Tap{DeviceID: "bus-1", Epoch: "e", Seq: seq, Time: tapAt, Route: "42", Account: code.Account,
			Serial: code.Serial, Profile: paycode.Adult, Fare: 250, Currency: "EUR", FareVersion: 1, Code: bs}
		d := verifier.VerifyCode(code, tapAt, issuer.Keyring, paycode.Policy{})
		b.Taps = append(b.Taps, ingest.Tap{Seq: seq, ID: rec.ID(), Record: fmt.Appendf(nil, "record %d", seq), Tap: rec, Code: code,
			CodeHash: paycode.ShortHash(paycode.EncodeText(bs)), Verdict: d.Reason})
		return d.Reason
	}
	const issuerSig, riderSig = 100, 150 // a byte of the pass's issuer signature, of the code's rider signature
	later := now.Add(48 * time.Hour)     // the pass has expired
	for _, c := range []struct {
		codeAt, tapAt time.Time
		damage        int
		verdict       paycode.Reason
	}{
		{now, now, 0, ""}, // charged
		{now.Add(-time.Hour), now, 0, paycode.ReasonCodeExpired},              // the rider's own, late: flagged, shown
		{later, later, 0, paycode.ReasonCredentialExpired},                    // the rider's own, pass expired: flagged, shown
		{now, now, issuerSig, paycode.ReasonBadCredentialSignature},           // quarantined
		{now.Add(time.Minute), now, riderSig, paycode.ReasonBadCodeSignature}, // quarantined
		{later, later, riderSig, paycode.ReasonCredentialExpired},             // a pass seen, a code not the rider's: quarantined
	} {
		if v := add(c.codeAt, c.tapAt, c.damage); v != c.verdict {
			t.Fatalf("tap %d verdict %q; want %q", len(b.Taps), v, c.verdict)
		}
	}
	if err := st.Commit(ctx, b); err != nil {
		t.Fatal(err)
	}
	if b.Aside != 5 {
		t.Errorf("batch Aside %d; want 5 (2 flagged, 3 quarantined)", b.Aside)
	}
	rides, err := l.Rides(ctx, acct.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range rides {
		got = append(got, r.TapID+":"+r.Flag)
	}
	slices.Sort(got)
	if want := []string{"bus-1/e/1:", "bus-1/e/2:invalid_code", "bus-1/e/3:invalid_code"}; !slices.Equal(got, want) {
		t.Errorf("the rider's rides %v; want %v", got, want)
	}
	if n, err := l.QuarantineCount(ctx); err != nil || n != 3 {
		t.Errorf("quarantined %d, %v; want 3", n, err)
	}
	if a, err := l.Account(ctx, acct.ID); err != nil || a.Balance != 10_000-250 {
		t.Errorf("balance %d, %v; want one fare charged", a.Balance, err)
	}
}

// TestRefusedClaimsCountedAside: a stolen validator replays a code it read
// with a claim out of the ledger's range (fare version 2^64-1): the ledger
// would refuse the record. Such records were quarantined tap by tap after
// the whole set was refused (n+1 ledger calls a batch) and never charged
// to the device's aside budget, so they filled the quarantine without
// bound (a review). Now they are kept aside before the commit, counted,
// and the batch's good tap is charged in the same call.
func TestRefusedClaimsCountedAside(t *testing.T) {
	ctx := context.Background()
	l := sqliteLedger(t)
	now := time.Now()
	st, acct, _, rider := riderFixture(t, l, now)
	b := &ingest.Batch{DeviceID: "bus-1", Epoch: "e"}
	for i := range 51 {
		code, err := paycode.ParseText(rider.Code(t, now))
		if err != nil {
			t.Fatal(err)
		}
		seq := uint64(i + 1)
		rec := &record.Tap{DeviceID: "bus-1", Epoch: "e", Seq: seq, Time: now, Route: "42", Account: code.Account,
			Serial: code.Serial, Profile: paycode.Adult, Fare: 250, Currency: "EUR", FareVersion: math.MaxUint64, Code: code.Bytes()}
		if i == 50 {
			rec.FareVersion = 1 // the one honest record
		}
		b.Taps = append(b.Taps, ingest.Tap{Seq: seq, ID: rec.ID(), Record: fmt.Appendf(nil, "record %d", seq), Tap: rec, Code: code,
			CodeHash: paycode.ShortHash(paycode.EncodeText(code.Bytes()))})
	}
	if err := st.Commit(ctx, b); err != nil {
		t.Fatal(err)
	}
	if n, err := l.QuarantineCount(ctx); err != nil || n != 50 || b.Aside != 50 {
		t.Errorf("quarantined %d (%v), Batch.Aside %d; want 50 and 50", n, err, b.Aside)
	}
	if a, err := l.Account(ctx, acct.ID); err != nil || a.Balance != 10_000-250 {
		t.Errorf("balance %d, %v; want the honest tap charged", a.Balance, err)
	}
}

// TestResentBatchNotChargedAgain: a batch sent again (its ack lost, or a
// replay after a restore) keeps nothing new aside, and is charged nothing
// against the device's aside budget. Its quarantined and held records were
// charged again on every resend (10 of 10 here), so a few resends of one
// batch used up the budget of a device whose acks got lost, and its
// batches went unacked for an hour.
func TestResentBatchNotChargedAgain(t *testing.T) {
	ctx := context.Background()
	l := sqliteLedger(t)
	now := time.Now()
	st, acct, _, rider := riderFixture(t, l, now)
	var taps []ingest.Tap
	for i := range 11 {
		code, err := paycode.ParseText(rider.Code(t, now))
		if err != nil {
			t.Fatal(err)
		}
		seq := uint64(i + 1)
		rec := &record.Tap{DeviceID: "bus-1", Epoch: "e", Seq: seq, Time: now, Route: "42", Account: code.Account,
			Serial: code.Serial, Profile: paycode.Adult, Fare: 250, Currency: "EUR", FareVersion: math.MaxUint64, Code: code.Bytes()}
		tp := ingest.Tap{Seq: seq, ID: rec.ID(), Record: fmt.Appendf(nil, "record %d", seq), Tap: rec, Code: code,
			CodeHash: paycode.ShortHash(paycode.EncodeText(code.Bytes()))}
		switch i {
		case 0, 1, 2: // signed by an issuer key the server lacks: held
			tp.Verdict = paycode.ReasonUnknownIssuerKey
		case 10:
			rec.FareVersion = 1 // the one honest record
		}
		taps = append(taps, tp)
	}
	for i, want := range []int{10, 0, 0} {
		b := &ingest.Batch{DeviceID: "bus-1", Epoch: "e", Taps: taps}
		if err := st.Commit(ctx, b); err != nil {
			t.Fatal(err)
		}
		if b.Aside != want {
			t.Errorf("send %d: Batch.Aside %d; want %d", i+1, b.Aside, want)
		}
	}
	if n, err := l.QuarantineCount(ctx); err != nil || n != 7 {
		t.Errorf("quarantined %d, %v; want 7", n, err)
	}
	if a, err := l.Account(ctx, acct.ID); err != nil || a.Balance != 10_000-250 {
		t.Errorf("balance %d, %v; want the honest tap charged once", a.Balance, err)
	}
}

// A device's last will, written when it connected an hour ago and carrying
// the clock offset it measured then, marks it offline and keeps the status
// recorded since: the offset is not applied to an offline status (it made
// the will's time now, and the will's queue and versions replaced the
// newer ones).
func TestLastWillKeepsNewerStatus(t *testing.T) {
	ctx := context.Background()
	l := sqliteLedger(t)
	st, _, _, _ := riderFixture(t, l, time.Now())
	offset := int64(0)
	online := &wire.Status{DeviceID: "bus-1", Online: true, Time: time.Now(), QueueDepth: 2, ClockOffsetMS: &offset,
		Versions: map[string]uint64{"fares": 1, "denylist": 9}}
	if err := st.Status(ctx, online); err != nil {
		t.Fatal(err)
	}
	will := &wire.Status{DeviceID: "bus-1", Online: false, Time: time.Now().Add(-time.Hour), QueueDepth: 400, ClockOffsetMS: &offset,
		Versions: map[string]uint64{"fares": 1}}
	if err := st.Status(ctx, will); err != nil {
		t.Fatal(err)
	}
	d, err := l.Device(ctx, "bus-1")
	if err != nil || d.Status.Online || d.Status.QueueDepth != 2 || d.Status.Versions["denylist"] != 9 {
		t.Errorf("after the will: %+v, %v; want offline with the recorded queue (2) and deny list (9)", d.Status, err)
	}
}

// shiftedLedger opens a ledger whose clock is the real one moved by the
// shift it returns (to make assignments in the past), closed at the
// test's end.
func shiftedLedger(t *testing.T, dsn string) (*ledger.Store, *atomic.Int64) {
	t.Helper()
	shift := new(atomic.Int64)
	l, err := ledger.Open(context.Background(), dsn, &ledger.Options{Now: func() time.Time { return time.Now().Add(time.Duration(shift.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, shift
}

// A coalesced commit of many devices' batches costs the ledger the same
// few write transactions whatever the number of devices: the taps in one,
// every device's last committed sequence number in one more. Each device
// was noted in a transaction of its own, the most of the ledger's writes
// while taps travel a few to a batch (300 validators at 0.5 taps/s on
// SQLite: 2,928 of them beside 332 for the taps). An unregistered device in
// the set does not keep the others from being noted. On SQLite and, with
// FAREGO_TEST_POSTGRES, PostgreSQL.
func TestCoalescedCommitWriteTransactions(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			dsn := "sqlite:" + filepath.Join(t.TempDir(), "ledger.db")
			if backend == "postgres" {
				dsn = ledgertest.PostgresSchema(t)
			}
			testCoalescedCommitWriteTransactions(t, dsn)
		})
	}
}

func testCoalescedCommitWriteTransactions(t *testing.T, dsn string) {
	const devices, perBatch = 20, 3
	ctx := context.Background()
	l, _ := shiftedLedger(t, dsn)
	now := time.Now()
	st, _, _, rider := riderFixture(t, l, now) // registers bus-1
	for d := 2; d <= devices; d++ {
		pub, _, _ := ed25519.GenerateKey(nil)
		if err := l.RegisterDevice(ctx, ledger.DeviceRegistration{ID: fmt.Sprintf("bus-%d", d), PublicKey: pub, MQTTHash: "h"}); err != nil {
			t.Fatal(err)
		}
	}
	var bs []*ingest.Batch
	for d := 1; d <= devices+1; d++ { // bus-21 is not registered
		b := &ingest.Batch{DeviceID: fmt.Sprintf("bus-%d", d), Epoch: "e"}
		for seq := uint64(1); seq <= perBatch; seq++ {
			at := now.Add(-time.Duration(d*perBatch+int(seq)) * time.Second)
			code, err := paycode.ParseText(rider.Code(t, at))
			if err != nil {
				t.Fatal(err)
			}
			rec := &record.Tap{DeviceID: b.DeviceID, Epoch: "e", Seq: seq, Time: at, Route: "1", Account: code.Account,
				Serial: code.Serial, Profile: paycode.Adult, Fare: 250, Currency: "EUR", FareVersion: 1}
			b.Taps = append(b.Taps, ingest.Tap{Seq: seq, ID: rec.ID(), Record: []byte("record"), Tap: rec, Code: code,
				CodeHash: paycode.ShortHash(paycode.EncodeText(rec.Code))})
		}
		bs = append(bs, b)
	}
	before := l.WriteTransactions()
	if err := st.CommitBatches(ctx, bs); err != nil {
		t.Fatal(err)
	}
	if n := l.WriteTransactions() - before; n > 2 {
		t.Errorf("%d write transactions for %d devices' batches of %d taps in one coalesced commit; want 2 (the taps, the devices' sync)",
			n, len(bs), perBatch)
	}
	if n, err := l.TapCount(ctx); err != nil || n != (devices+1)*perBatch {
		t.Fatalf("%d taps stored, %v; want %d", n, err, (devices+1)*perBatch)
	}
	for d := 1; d <= devices; d++ {
		dev, err := l.Device(ctx, fmt.Sprintf("bus-%d", d))
		if err != nil || dev.LastSeq != perBatch {
			t.Errorf("bus-%d: last synced seq %d, %v; want %d", d, dev.LastSeq, err, perBatch)
		}
	}

	// Their statuses (each sent as an ack empties its queue) in one
	// transaction too.
	var sts []*wire.Status
	for d := 1; d <= devices; d++ {
		sts = append(sts, &wire.Status{DeviceID: fmt.Sprintf("bus-%d", d), Online: true, Time: time.Now(), QueueDepth: d, Epoch: "e"})
	}
	before = l.WriteTransactions()
	if err := st.Statuses(ctx, sts); err != nil {
		t.Fatal(err)
	}
	if n := l.WriteTransactions() - before; n != 1 {
		t.Errorf("%d write transactions for %d devices' statuses recorded together; want 1", n, len(sts))
	}
	for d := 1; d <= devices; d++ {
		dev, err := l.Device(ctx, fmt.Sprintf("bus-%d", d))
		if err != nil || !dev.Status.Online || dev.Status.QueueDepth != d {
			t.Errorf("bus-%d: status %+v, %v; want online, queue depth %d", d, dev.Status, err, d)
		}
	}
	// One of an unregistered device fails the call and records nothing
	// (the ingest then records each alone).
	ghost := &wire.Status{DeviceID: fmt.Sprintf("bus-%d", devices+1), Online: true, Time: time.Now()}
	again := []*wire.Status{{DeviceID: "bus-1", Online: true, Time: time.Now(), QueueDepth: 77, Epoch: "e"}, ghost}
	if err := st.Statuses(ctx, again); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("statuses with an unregistered device's: %v, want ErrNotFound", err)
	}
	// Nor does a call naming one device twice (refused: its history keeps
	// one event per transaction time).
	twice := []*wire.Status{again[0], {DeviceID: "bus-1", Online: false, Time: time.Now()}}
	if err := st.Statuses(ctx, twice); !errors.Is(err, ledger.ErrInvalid) {
		t.Errorf("statuses naming bus-1 twice: %v, want ErrInvalid", err)
	}
	if dev, err := l.Device(ctx, "bus-1"); err != nil || dev.Status.QueueDepth != 1 || !dev.Status.Online {
		t.Errorf("bus-1 after failed calls: %+v, %v; want online, queue depth 1 (unchanged)", dev.Status, err)
	}

	// A stolen validator's status the ledger refuses (a time before 1970,
	// which the wire does not check) among them is left out and named: it
	// failed the call, and the ingest recorded every other status alone,
	// a transaction each, for each such status the thief sent.
	bad := &wire.Status{DeviceID: "bus-3", Online: false, Time: time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC)}
	sts = sts[:0]
	for d := 1; d <= devices; d++ {
		if d == 3 {
			sts = append(sts, bad)
			continue
		}
		sts = append(sts, &wire.Status{DeviceID: fmt.Sprintf("bus-%d", d), Online: true, Time: time.Now(), QueueDepth: 100 + d, Epoch: "e"})
	}
	before = l.WriteTransactions()
	err := st.Statuses(ctx, sts)
	var refused *ingest.StatusesRefused
	if !errors.As(err, &refused) || len(refused.Refused) != 1 || !errors.Is(refused.Refused[2], ledger.ErrInvalid) {
		t.Fatalf("statuses with one of a time before 1970: %v, want that one refused (index 2), the others recorded", err)
	}
	if n := l.WriteTransactions() - before; n != 1 {
		t.Errorf("%d write transactions for the statuses beside a refused one; want 1", n)
	}
	for d := 1; d <= devices; d++ {
		dev, err := l.Device(ctx, fmt.Sprintf("bus-%d", d))
		want := 100 + d
		if d == 3 {
			want = 3 // unchanged
		}
		if err != nil || dev.Status.QueueDepth != want {
			t.Errorf("bus-%d: queue depth %d, %v; want %d", d, dev.Status.QueueDepth, err, want)
		}
	}
}

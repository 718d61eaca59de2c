package server_test

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/paycode/paycodetest"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/server"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/ledger/ledgertest"
	"github.com/farego/farego/server/servertest"
)

// TestHeldTapsOfALostRotationCharged is the README's restore step 4: the
// ledger and the key directory are both restored from before a rotation
// (issuer key 2, signing since three hours ago), so the taps the buses
// took since under key 2 are held aside. The operator rotates with
// activate_in 0s, which recreates key 2 (keys derive from the root and
// their id) — but its window now begins at that rotation, a minute ago,
// not three hours ago: the held taps, made two hours ago, were still
// outside it (unknown_issuer_key) and stayed held for good, the riders
// never charged. The server's own key signed the credential, whose window
// (issuer-signed) is the server's word for when it is valid: the taps are
// charged. A real server: key directory, SQLite or PostgreSQL ledger,
// ingest, held re-check at start.
func TestHeldTapsOfALostRotationCharged(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { heldOfALostRotation(t, "sqlite:"+filepath.Join(t.TempDir(), "ledger.db")) })
	t.Run("postgres", func(t *testing.T) { heldOfALostRotation(t, ledgertest.PostgresSchema(t)) })
}

func heldOfALostRotation(t *testing.T, dsn string) {
	ctx := context.Background()
	dir := t.TempDir()
	kd, err := keys.Init(filepath.Join(dir, "keys"), keys.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rootHex, err := os.ReadFile(filepath.Join(dir, "keys", keys.RootFile))
	if err != nil {
		t.Fatal(err)
	}
	root, err := hex.DecodeString(strings.TrimSpace(string(rootHex)))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	issued, tapped := now.Add(-3*time.Hour), now.Add(-2*time.Hour)
	l, err := ledger.Open(ctx, dsn,
		&ledger.Options{Now: func() time.Time { return now.Add(-4 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	tbl, err := fare.Parse([]byte(`{"version":1,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.PutFareTable(ctx, tbl); err != nil {
		t.Fatal(err)
	}
	pub, _, _ := ed25519.GenerateKey(nil)
	if err := l.RegisterDevice(ctx, ledger.DeviceRegistration{ID: "bus-1", PublicKey: pub, MQTTHash: "h"}); err != nil {
		t.Fatal(err)
	}
	acct, err := l.CreateAccount(ctx, ledger.AccountSpec{Profile: paycode.Adult})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.TopUp(ctx, acct.ID, 1000, "t"); err != nil {
		t.Fatal(err)
	}
	// The pass the lost key 2 signed three hours ago, as the API issues
	// one: from 5 minutes before to 24 hours after.
	rider := paycodetest.IssuerFromRoot(t, root, 2, issued).RiderWith(t, paycode.Credential{Account: acct.ID, Serial: 1,
		Profile: paycode.Adult, NotBefore: uint32(issued.Add(-5 * time.Minute).Unix()), NotAfter: uint32(issued.Add(24 * time.Hour).Unix())})
	if _, err := l.IssueCredentialSerial(ctx, acct.ID, issued.Add(24*time.Hour), rider.Key.Public().(ed25519.PublicKey)); err != nil {
		t.Fatal(err)
	}
	code, err := paycode.ParseText(rider.Code(t, tapped))
	if err != nil {
		t.Fatal(err)
	}
	rec := record.Tap{DeviceID: "bus-1", Epoch: "e", Seq: 1, Time: tapped.Add(3 * time.Second), Route: "42", Code: code.Bytes(),
		Account: code.Account, Serial: code.Serial, Profile: paycode.Adult, Fare: 250, Currency: "EUR", FareVersion: 1}
	b, err := rec.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Hold(ctx, []ledger.HeldTap{{DeviceID: "bus-1", Epoch: "e", Seq: 1,
		Reason: string(paycode.ReasonUnknownIssuerKey), Record: b}}); err != nil {
		t.Fatal(err)
	}
	// The restore's step 4: POST /v1/keyring/rotate {"activate_in":"0s"}.
	kr, err := kd.Rotate(now, 0, 25*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := kr.Lookup(2); !ok || !k.NotBefore.After(tapped) {
		t.Fatalf("recreated key 2: %+v, %t; want its window to begin after the tap", k, ok)
	}

	servertest.RunConfig(t, server.Config{DataDir: dir, DB: dsn})
	deadline := time.Now().Add(60 * time.Second)
	for {
		a, err := l.Account(ctx, acct.ID)
		if err == nil && a.Balance == 750 {
			break
		}
		if time.Now().After(deadline) {
			n, _ := l.HeldCount(ctx)
			t.Fatalf("the held tap of the lost rotation is not charged after a minute: balance %d, %d held", a.Balance, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n, err := l.HeldCount(ctx); err != nil || n != 0 {
		t.Errorf("%d held, %v; want none", n, err)
	}
	if err := l.CheckInvariants(ctx); err != nil {
		t.Errorf("verify: %v", err)
	}
}

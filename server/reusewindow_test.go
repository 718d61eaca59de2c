package server

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/sync/ingest"
)

// TestReuseWindowFollowsPolicy: a server run with --max-age 5m (and its
// validators with max_age 5m) takes a code 200 s old. A rider who shows
// one code on two buses of a quick transfer 200 s apart is what the reuse
// rule forgives ("within the code's maximum age plus the clock skew");
// the ledger kept its default window of 150 s (120 s + 30 s) whatever the
// server's policy, and denied the pass (code_reused) — and the account,
// were other passes held — for a transfer both validators accepted.
func TestReuseWindowFollowsPolicy(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if _, err := keys.Init(filepath.Join(dir, "keys"), keys.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	policy := paycode.Policy{MaxAge: 5 * time.Minute}
	srv, err := New(ctx, Config{DataDir: dir, HTTPListen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0", Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.close()
	l := srv.ledger
	now := time.Now()
	st, acct, issuer, rider := riderFixture(t, l, now)
	pub, _, _ := ed25519.GenerateKey(nil)
	if err := l.RegisterDevice(ctx, ledger.DeviceRegistration{ID: "bus-2", PublicKey: pub, MQTTHash: "h"}); err != nil {
		t.Fatal(err)
	}
	text := rider.Code(t, now)
	code, err := paycode.ParseText(text)
	if err != nil {
		t.Fatal(err)
	}
	verifier := paycode.NewVerifier(0)
	batch := func(device, vehicle string, tapAt time.Time) *ingest.Batch {
		rec := &record.Tap{DeviceID: device, Epoch: "e", Seq: 1, Time: tapAt, Route: "42", Vehicle: vehicle, Account: code.Account,
			Serial: code.Serial, Profile: paycode.Adult, Fare: 250, Currency: "EUR", FareVersion: 1, Code: code.Bytes()}
		d := verifier.VerifyCode(code, tapAt, issuer.Keyring, policy)
		if !d.Accepted {
			t.Fatalf("the code at %s: %s", tapAt.Sub(now), d.Reason)
		}
		return &ingest.Batch{DeviceID: device, Epoch: "e", Taps: []ingest.Tap{{Seq: 1, ID: rec.ID(),
			Record: fmt.Appendf(nil, "record %s", device), Tap: rec, Code: code, CodeHash: paycode.ShortHash(text)}}}
	}
	if err := st.Commit(ctx, batch("bus-1", "v1", now)); err != nil {
		t.Fatal(err)
	}
	if err := st.Commit(ctx, batch("bus-2", "v2", now.Add(200*time.Second))); err != nil {
		t.Fatal(err)
	}
	rides, err := l.Rides(ctx, acct.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rides {
		if r.DeviceID == "bus-2" && (r.Flag != ledger.FlagDuplicateCode || len(r.Notes) != 1 || r.Notes[0] != ledger.NoteCodeReuseWindow) {
			t.Errorf("the transfer's tap: flag %q, notes %v; want %s, noted %s", r.Flag, r.Notes, ledger.FlagDuplicateCode,
				ledger.NoteCodeReuseWindow)
		}
	}
	dl, err := l.DenyList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range dl.Entries {
		if e.Account == acct.ID {
			t.Errorf("the rider's pass denied (%s) for a transfer both validators accepted", e.Reason)
		}
	}
}

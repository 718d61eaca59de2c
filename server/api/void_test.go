package api

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/ledger"
)

// TestVoidTap voids a wrongly charged tap through the real HTTP server on
// SQLite and PostgreSQL: the fare comes back, the rider's rides show it
// voided, a second void says already_void, the unknown and the uncharged
// are refused (404, 409), and nobody but an operator may void (a merchant,
// payments or auditor token, a rider's secret, a made-up token, none).
func TestVoidTap(t *testing.T) {
	onBackends(t, testVoidTap)
}

func testVoidTap(t *testing.T, dsn string) {
	f, advance := clockFixtureAt(t, dsn)
	ctx := context.Background()
	now := advance(0).UTC()
	day := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC).AddDate(0, 0, -1)
	r := f.newRider(10_000)
	c, err := paycode.ParseCredential(r.cred)
	if err != nil {
		t.Fatal(err)
	}
	var taps []ledger.Tap
	for i, h := range []time.Duration{8 * time.Hour, 12 * time.Hour} {
		seq := uint64(i + 1)
		at := day.Add(h)
		id := paycode.ID{Account: r.id, Serial: c.Serial, Time: uint32(at.Unix()), Counter: uint16(seq)}
		taps = append(taps, ledger.Tap{ID: ledger.TapID("bus-1", "e1", seq), DeviceID: "bus-1", Seq: seq, Epoch: "e1", Time: at,
			Account: r.id, Serial: c.Serial, RiderKey: c.RiderKey[:], CodeKey: id.Key(), CodeHash: fmt.Sprintf("%012d", seq),
			BaseFare: 250, Currency: "EUR", FareVersion: 1, Route: "42", Record: []byte("record")})
	}
	// A flagged tap (never charged).
	bad := taps[1]
	bad.ID, bad.Seq, bad.Flag = ledger.TapID("bus-1", "e1", 3), 3, ledger.FlagInvalidCode
	bad.CodeKey = paycode.ID{Account: r.id, Serial: c.Serial, Time: uint32(day.Add(13 * time.Hour).Unix()), Counter: 3}.Key()
	taps = append(taps, bad)
	if _, err := f.store.CommitTaps(ctx, taps); err != nil {
		t.Fatal(err)
	}
	balance := func() float64 {
		return f.do("GET", path("/v1/accounts/%d", r.id), r.secret, "", 200)["balance"].(float64)
	}
	if b := balance(); b != 10_000-500 {
		t.Fatalf("balance %v", b)
	}
	id := ledger.TapID("bus-1", "e1", 1)
	body := `{"tap":"` + id + `","reason":"charged in error"}`

	// Who may not void: nothing changes.
	for _, c := range []struct{ who, token string }{
		{"a merchant", f.tokenFor(ledger.RoleMerchant, "shop-1")},
		{"a payments token", f.tokenFor(ledger.RolePayments, "")},
		{"an auditor", f.tokenFor(ledger.RoleAuditor, "")},
		{"the rider", r.secret},
		{"a made-up token", "fgt_abcde_" + strings.Repeat("A", 52)},
	} {
		t.Run(c.who, func(t *testing.T) {
			f.do("POST", "/v1/taps/void", c.token, body, 403)
		})
	}
	f.do("POST", "/v1/taps/void", "", body, 401)
	if b := balance(); b != 10_000-500 {
		t.Fatalf("balance %v after refused voids", b)
	}

	// The operator voids it.
	out, hd := f.doHeader("POST", "/v1/taps/void", f.token, body, 200)
	if out["returned"] != float64(250) || out["already_void"] != false || out["account"] != float64(r.id) ||
		hd.Get("Idempotent-Replayed") != "" {
		t.Errorf("void: %v", out)
	}
	if b := balance(); b != 10_000-250 {
		t.Errorf("balance %v after the void", b)
	}
	rides := f.do("GET", path("/v1/accounts/%d/rides", r.id), r.secret, "", 200)
	var shown bool
	for _, x := range asList(rides["rides"]) {
		m := x.(map[string]any)
		if m["tap_id"] == id || m["id"] == id {
			shown = m["flag"] == ledger.FlagVoided && (m["charge"] == float64(0) || m["charge"] == nil)
			if !shown {
				t.Errorf("voided ride %v", m)
			}
		}
	}
	if !shown {
		t.Errorf("voided ride not in the rides: %v", rides)
	}
	// Again: nothing more, said so.
	out, hd = f.doHeader("POST", "/v1/taps/void", f.token, body, 200)
	if out["already_void"] != true || out["returned"] != float64(0) || hd.Get("Idempotent-Replayed") != "true" {
		t.Errorf("second void: %v", out)
	}
	if b := balance(); b != 10_000-250 {
		t.Errorf("balance %v after the second void", b)
	}
	// Refused: unknown, flagged, malformed, too large.
	if e := f.do("POST", "/v1/taps/void", f.token, `{"tap":"bus-9/e1/1","reason":"x"}`, 404); errCode(e) != "not_found" {
		t.Errorf("unknown tap: %v", e)
	}
	if e := f.do("POST", "/v1/taps/void", f.token, `{"tap":"`+bad.ID+`","reason":"x"}`, 409); errCode(e) != "not_voidable" {
		t.Errorf("flagged tap: %v", e)
	}
	f.do("POST", "/v1/taps/void", f.token, `{"tap":"`+id+`"}`, 400)
	f.do("POST", "/v1/taps/void", f.token, `{"tap":`, 400)
	f.do("POST", "/v1/taps/void", f.token, `{"tap":"`+id+`","reason":"`+strings.Repeat("x", 2<<20)+`"}`, 413)
	// The audit trail names it.
	log := f.do("GET", "/v1/audit", f.token, "", 200)
	if !strings.Contains(fmt.Sprint(log), "void_tap") {
		t.Errorf("no void_tap in the audit trail: %v", log)
	}
}

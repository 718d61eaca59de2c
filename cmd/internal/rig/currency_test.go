package rig

import (
	"errors"
	"strings"
	"testing"

	"github.com/farego/farego/cmd/internal/cli"
)

// A fleet whose fares are in yen: init takes the ledger's currency from the
// fare table, the server (started with no currency) opens the ledger in it,
// and a tap is charged its fare. Before the ledger kept its currency, the
// server made accounts in its default (EUR), and every yen tap was flagged
// currency_mismatch and charged 0. A fare table in another currency is
// refused and the old one stays.
func TestFleetInYen(t *testing.T) {
	const yen = `{"version": 1, "currency": "JPY", "timezone": "Asia/Tokyo", "service_day_start": "04:00",
  "fares": {"*": {"adult": 210, "child": 110, "senior": 110, "student": 160}}}`
	r, ctx := newRigWith(t, yen)
	d := startDevice(t, ctx, r, "bus-7-front")
	rider, err := r.NewRider(ctx, "kenji", "adult", 1000)
	if err != nil {
		t.Fatal(err)
	}
	code, err := rider.Code(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if line, _ := d.Scan(ctx, code); !strings.Contains(line, "ACCEPTED") {
		t.Fatalf("tap: %q", line)
	}
	a := waitBalance(t, ctx, r, rider.ID, 790)
	if a.Currency != "JPY" || len(a.Rides) != 1 || a.Rides[0].Charge != 210 || a.Rides[0].Flag != "" {
		t.Errorf("account after a tap: %+v, want JPY, one ride charged 210, no flag", a)
	}

	euro := map[string]any{"version": 2, "currency": "EUR", "timezone": "Europe/Berlin", "service_day_start": "04:00",
		"fares": map[string]any{"*": map[string]int{"adult": 250, "child": 120, "senior": 120, "student": 180}}}
	err = r.API(ctx, "PUT", "/v1/fares", euro, nil)
	var ae *cli.APIError
	if !errors.As(err, &ae) || ae.Status != 400 || !strings.Contains(ae.Message, "JPY") {
		t.Fatalf("PUT a EUR fare table on a JPY ledger: %v, want 400 naming JPY", err)
	}
	var cur struct {
		Version  uint64 `json:"version"`
		Currency string `json:"currency"`
	}
	if err := r.API(ctx, "GET", "/v1/fares", nil, &cur); err != nil || cur.Version != 1 || cur.Currency != "JPY" {
		t.Errorf("fares after the refused table: %+v, %v", cur, err)
	}
	// Killed and started again (no currency given, as ever): the ledger
	// is still in yen, and the next ride is charged in it.
	if err := r.StopServer(true); err != nil {
		t.Fatal(err)
	}
	if err := r.StartServer(ctx); err != nil {
		t.Fatal(err)
	}
	second, err := r.NewRider(ctx, "yuki", "adult", 1000)
	if err != nil {
		t.Fatal(err)
	}
	code, err = second.Code(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if line, _ := d.Scan(ctx, code); !strings.Contains(line, "ACCEPTED") {
		t.Fatalf("tap after the restart: %q", line)
	}
	a = waitBalance(t, ctx, r, second.ID, 790)
	if a.Currency != "JPY" || len(a.Rides) != 1 || a.Rides[0].Charge != 210 || a.Rides[0].Flag != "" {
		t.Errorf("account made after the restart: %+v, want JPY, one ride charged 210", a)
	}
	if out, err := r.Verify(ctx); err != nil || !strings.Contains(out, " 2 taps (0 flagged)") {
		t.Errorf("verify: %q, %v", out, err)
	}
}

package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/cmd/internal/cli"
)

func cmdAccount(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, statePath := flags("account")
	if err := cli.Parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	return showAccount(ctx, *statePath, stdout)
}

func showAccount(ctx context.Context, path string, stdout io.Writer) error {
	s, err := loadState(path)
	if err != nil {
		return err
	}
	var out struct {
		ID         uint64 `json:"id"`
		Profile    string `json:"profile"`
		Pending    bool   `json:"profile_pending"`
		Balance    int64  `json:"balance"`
		Currency   string `json:"currency"`
		Denied     bool   `json:"denied"`
		DenyReason string `json:"deny_reason"`
		Rides      []ride `json:"recent_rides"`
		Activity   []struct {
			Time       string `json:"time"`
			Kind       string `json:"kind"`
			Amount     int64  `json:"amount"`
			Balance    int64  `json:"balance"`
			MerchantID string `json:"merchant_id"`
			OrderID    string `json:"order_id"`
			Reason     string `json:"reason"` // a refund's, as the shop gave it
		} `json:"recent_activity"`
	}
	if err := s.call(ctx, path, "GET", fmt.Sprintf("%s/v1/accounts/%d", s.Server, s.Account), nil, &out); err != nil {
		return err
	}
	// What the server sends is shown with its control and invisible
	// characters as code points (record.Shown): a route comes from a
	// validator's record, which a stolen one fills with a terminal's
	// control sequences.
	profile := record.Shown(out.Profile)
	if out.Pending {
		// The codes carry the adult fare until the operator or the payment
		// provider confirms the reduced one.
		profile += ", pending confirmation: adult fare until then"
	}
	fmt.Fprintf(stdout, "account %d (%s): balance %s", out.ID, profile, money(out.Balance, out.Currency))
	if out.Denied {
		fmt.Fprintf(stdout, " — BLOCKED (%s)", record.Shown(out.DenyReason))
	}
	fmt.Fprintln(stdout)
	for _, r := range out.Rides {
		fmt.Fprintln(stdout, r.line(out.Currency))
	}
	if len(out.Activity) > 0 {
		fmt.Fprintln(stdout, "activity (newest first):")
	}
	for _, a := range out.Activity {
		what := record.Shown(a.Kind)
		switch a.Kind {
		case "payment":
			what = fmt.Sprintf("paid at %s (order %s)", record.Shown(a.MerchantID), record.Shown(a.OrderID))
		case "refund":
			what = fmt.Sprintf("refund from %s (order %s)", record.Shown(a.MerchantID), record.Shown(a.OrderID))
			if a.Reason != "" {
				what += ": " + record.Shown(a.Reason)
			}
		case "fare_correction":
			what = "fare corrected"
		}
		fmt.Fprintf(stdout, "  %s  %-40s %10s  balance %s\n", clock(a.Time), what, money(a.Amount, out.Currency), money(a.Balance, out.Currency))
	}
	return nil
}

// ride is one of the account's recent rides, as the API gives it.
type ride struct {
	Time     string `json:"time"`
	Route    string `json:"route"`
	Charge   int64  `json:"charge"`
	Transfer bool   `json:"transfer"`
	Capped   bool   `json:"capped"`
	Flag     string `json:"flag"`
}

// line is the ride as "account" shows it: why a ride cost nothing (a
// transfer, the daily cap) or was flagged is said after its charge; the
// route as record.Shown writes it.
func (r ride) line(currency string) string {
	var notes []string
	if r.Transfer {
		notes = append(notes, "transfer")
	}
	if r.Capped {
		notes = append(notes, "daily cap reached")
	}
	if r.Flag != "" {
		notes = append(notes, record.Shown(r.Flag))
	}
	return strings.TrimRight(fmt.Sprintf("  %s  route %-6s %10s  %s", clock(r.Time), record.Shown(r.Route), money(-r.Charge, currency), strings.Join(notes, ", ")), " ")
}

// clock shows an API time to the second, in UTC, so that the columns line
// up (the API gives nanoseconds, without trailing zeros).
func clock(t string) string {
	if tm, err := time.Parse(time.RFC3339Nano, t); err == nil {
		return tm.UTC().Format("2006-01-02 15:04:05Z")
	}
	return t
}

package main

import (
	"context"
	"fmt"
	"io"

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
		Balance    int64  `json:"balance"`
		Currency   string `json:"currency"`
		Denied     bool   `json:"denied"`
		DenyReason string `json:"deny_reason"`
		Rides      []struct {
			Time   string `json:"time"`
			Route  string `json:"route"`
			Charge int64  `json:"charge"`
			Flag   string `json:"flag"`
		} `json:"recent_rides"`
		Activity []struct {
			Time       string `json:"time"`
			Kind       string `json:"kind"`
			Amount     int64  `json:"amount"`
			Balance    int64  `json:"balance"`
			MerchantID string `json:"merchant_id"`
			OrderID    string `json:"order_id"`
		} `json:"recent_activity"`
	}
	if err := call(ctx, "GET", fmt.Sprintf("%s/v1/accounts/%d", s.Server, s.Account), s.Secret, nil, &out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "account %d (%s): balance %s", out.ID, out.Profile, money(out.Balance, out.Currency))
	if out.Denied {
		fmt.Fprintf(stdout, " — BLOCKED (%s)", out.DenyReason)
	}
	fmt.Fprintln(stdout)
	for _, r := range out.Rides {
		fmt.Fprintf(stdout, "  %s  route %-6s %10s  %s\n", r.Time, r.Route, money(-r.Charge, out.Currency), r.Flag)
	}
	if len(out.Activity) > 0 {
		fmt.Fprintln(stdout, "activity (newest first):")
	}
	for _, a := range out.Activity {
		what := a.Kind
		switch a.Kind {
		case "payment":
			what = fmt.Sprintf("paid at %s (order %s)", a.MerchantID, a.OrderID)
		case "refund":
			what = fmt.Sprintf("refund from %s (order %s)", a.MerchantID, a.OrderID)
		case "fare_correction":
			what = "fare corrected"
		}
		fmt.Fprintf(stdout, "  %s  %-40s %10s  balance %s\n", a.Time, what, money(a.Amount, out.Currency), money(a.Balance, out.Currency))
	}
	return nil
}

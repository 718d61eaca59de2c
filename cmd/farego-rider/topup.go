package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/driver/feedback"
)

func cmdTopUp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, statePath := flags("topup")
	var amount minorUnits
	fs.Var(&amount, "amount", "amount in minor units (cents: 500 is 5.00) (required)")
	ref := fs.String("reference", "", "payment provider reference (default: generated)")
	tok := fs.String("operator-token", "", "operator token, or @FILE to read it (stands in for the payment provider) (required)")
	if err := cli.Parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	if amount <= 0 {
		return cli.Usagef(stderr, fs.Name(), "--amount must be a positive number of minor units (see --help)")
	}
	if err := cli.Required(fs, stderr, "operator-token"); err != nil {
		return err
	}
	return topUp(ctx, *statePath, int64(amount), *ref, *tok, stdout)
}

// minorUnits is an amount flag in whole minor units: "5.00" is refused
// with what to type instead (it was strconv's "parse error").
type minorUnits int64

func (m *minorUnits) String() string { return strconv.FormatInt(int64(*m), 10) }

func (m *minorUnits) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		if whole, frac, ok := strings.Cut(s, "."); ok && len(frac) == 2 {
			return fmt.Errorf("%q: whole minor units (cents), e.g. %s%s for %s", s, strings.TrimLeft(whole, "0"), frac, s)
		}
		return fmt.Errorf("%q: want whole minor units (cents), e.g. 500 for 5.00", s)
	}
	*m = minorUnits(n)
	return nil
}

func topUp(ctx context.Context, path string, amount int64, ref, tok string, stdout io.Writer) error {
	s, err := loadState(path)
	if err != nil {
		return err
	}
	if amount <= 0 {
		return errors.New("--amount must be positive (minor units, e.g. 1000 = 10.00)")
	}
	tok, err = cli.Token("--operator-token", tok)
	if err != nil {
		return err
	}
	if tok == "" {
		return errors.New("--operator-token is required: top-ups come from the payment provider, which holds it")
	}
	if ref == "" {
		ref = fmt.Sprintf("rider-%d-%d", s.Account, time.Now().UnixNano())
	}
	var out struct {
		Balance  int64  `json:"balance"`
		Currency string `json:"currency"`
	}
	hdr, err := cli.CallJSONHeader(ctx, "POST", fmt.Sprintf("%s/v1/accounts/%d/topups", s.Server, s.Account), tok,
		map[string]any{"amount": amount, "reference": ref}, &out)
	if ae := (*cli.APIError)(nil); err != nil && !errors.As(err, &ae) {
		return fmt.Errorf("the server is not reachable (%s): a top-up needs it; try again with --reference %s, so that it counts once if this one reached it", s.noAnswer(path, err), ref)
	}
	if ae := (*cli.APIError)(nil); errors.As(err, &ae) && ae.Status == http.StatusForbidden {
		// The server cannot tell a wrong operator token from a wrong
		// account secret (both are 64 hex digits) and answers "wrong
		// account or secret": what was sent here is the token.
		return fmt.Errorf("the server refused the operator token (%w): check --operator-token (the server's keys/operator.token, or a payments token)", err)
	}
	if err != nil {
		return err
	}
	// The retry the message above asks for, of a top-up that had reached
	// the server, adds nothing: said so (it printed the balance alone, as
	// if added again).
	if hdr.Get("Idempotent-Replayed") == "true" {
		fmt.Fprintf(stdout, "reference %q was used already (%s): nothing added; account %d balance %s\n",
			ref, money(amount, out.Currency), s.Account, money(out.Balance, out.Currency))
		return nil
	}
	fmt.Fprintf(stdout, "account %d balance %s\n", s.Account, money(out.Balance, out.Currency))
	return nil
}

// money formats an amount with its currency's decimals (210 JPY, 2.10 EUR).
func money(minor int64, cur string) string { return feedback.FormatAmount(minor, cur) }

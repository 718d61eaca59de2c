package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"regexp"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
)

// currencyRE is an ISO 4217 code's form.
var currencyRE = regexp.MustCompile(`^[A-Z]{3}$`)

func cmdInit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("farego-settlement init", flag.ContinueOnError)
	data := dataFlag(fs)
	db := fs.String("db", "", "ledger DSN (default sqlite:DATA/ledger.db; postgres://… for PostgreSQL)")
	fleetKey := fs.String("fleet-key", "", "use this fleet key (from farego-provision init-fleet) instead of making one")
	fares := fs.String("fares", "", "upload this fare table (JSON) into the new ledger")
	currency := fs.String("currency", "", "the ledger's currency, of every account and fare table, kept for good (default: the --fares table's, else EUR)")
	if err := cli.Parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	if *currency != "" && !currencyRE.MatchString(*currency) {
		return cli.Usagef(stderr, "farego-settlement init", "--currency %q is not an ISO 4217 code like EUR or JPY", *currency)
	}
	if *fares != "" {
		t, err := fare.Load(*fares)
		if err != nil {
			return err
		}
		switch {
		case *currency == "":
			*currency = t.Currency
		case *currency != t.Currency:
			return fmt.Errorf("the fare table %s is in %s, not --currency %s: a ledger keeps one currency (its fare tables in another would charge nothing)",
				*fares, t.Currency, *currency)
		}
	}
	kd, err := keys.Init(filepath.Join(*data, "keys"), keys.InitOptions{FleetKey: *fleetKey})
	if err != nil {
		return err
	}
	dsn := *db
	if dsn == "" {
		dsn = "sqlite:" + filepath.Join(*data, "ledger.db")
	}
	st, err := ledger.Open(ctx, dsn, &ledger.Options{Currency: *currency})
	if err != nil {
		return err
	}
	defer st.Close()
	if *fares != "" {
		t, _ := fare.Load(*fares)
		if err := st.PutFareTable(ctx, t); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, `initialised %s
  keys:           %s (issuer root secret, fleet key, operator token, broker secret: back them up, keep them private)
  operator token: %s (Authorization: Bearer …)
  fleet key:      %s (its public half goes on every validator)
  ledger:         %s
`, *data, kd.Path(), filepath.Join(kd.Path(), keys.TokenFile), filepath.Join(kd.Path(), keys.FleetPubFile), dsn)
	return nil
}

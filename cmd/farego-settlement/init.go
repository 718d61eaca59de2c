package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
)

func cmdInit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("farego-settlement init", flag.ContinueOnError)
	data := dataFlag(fs)
	db := fs.String("db", "", "ledger DSN (default sqlite:DATA/ledger.db; postgres://… for PostgreSQL)")
	fleetKey := fs.String("fleet-key", "", "use this fleet key (from farego-provision init-fleet) instead of making one")
	fares := fs.String("fares", "", "upload this fare table (JSON) into the new ledger")
	currency := fs.String("currency", "", "currency of accounts (default EUR)")
	if err := cli.Parse(fs, args, stdout, stderr); err != nil {
		return err
	}
	if *fares != "" {
		if _, err := fare.Load(*fares); err != nil {
			return err
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

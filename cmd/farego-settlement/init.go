package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"golang.org/x/text/currency"
	"io"
	"net/url"
	"os"
	"path/filepath"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/cmd/internal/cli"
	"github.com/farego/farego/queue/durable"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/sync/keyfile"
)

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
	// The currency is kept for good: a code of the form but no currency
	// (a typo, "EUE") would refuse every real fare table after. ISO 4217
	// from golang.org/x/text/currency.
	if _, err := isoCurrency(*currency); *currency != "" && (err != nil || !ledger.ValidCurrency(*currency)) {
		return cli.Usagef(stderr, "farego-settlement init", "--currency %q is not an ISO 4217 code like EUR or JPY", *currency)
	}
	if *fares != "" {
		t, err := fare.Load(*fares)
		if errors.Is(err, os.ErrNotExist) {
			// A newcomer copying the Technician's guide had only "open
			// fares.json: no such file", and no word of what the file is.
			return fmt.Errorf("--fares %s: there is no such file: give the fare table (JSON, see the README's Fare tables; testdata/fare/table.json in the source is a sample), or leave --fares out and publish one later (PUT /v1/fares)", *fares)
		}
		if err != nil {
			return err
		}
		switch {
		case *currency == "":
			if _, err := isoCurrency(t.Currency); err != nil {
				return fmt.Errorf("the fare table %s is in %q, which is not an ISO 4217 currency: the ledger's currency is kept for good", *fares, t.Currency)
			}
			*currency = t.Currency
		case *currency != t.Currency:
			return fmt.Errorf("the fare table %s is in %s, not --currency %s: a ledger keeps one currency (its fare tables in another would charge nothing)",
				*fares, t.Currency, *currency)
		}
	}
	if *fleetKey != "" {
		if _, err := keyfile.ReadPrivate(*fleetKey); err != nil {
			return fmt.Errorf("--fleet-key: %w", err)
		}
	}
	keysDir := filepath.Join(*data, "keys")
	if entries, err := os.ReadDir(keysDir); err == nil && len(entries) > 0 {
		return fmt.Errorf("%s already exists and holds keys (remove the directory to start over: it holds the money's keys)", keysDir)
	}
	// The ledger first, durably, then the keys: a cut in between leaves
	// a ledger and no keys, and init run again takes that ledger (run
	// refuses keys without a ledger). A failure before the keys are made
	// removes what this init made.
	madeData := false
	if _, err := os.Stat(*data); errors.Is(err, os.ErrNotExist) {
		madeData = true
	}
	if err := durable.MkdirAll(*data, 0o700); err != nil {
		return err
	}
	dsn := *db
	if dsn == "" {
		dsn = "sqlite:" + filepath.Join(*data, "ledger.db")
	}
	dbFile, sqlite := ledger.SQLitePath(dsn)
	madeLedger := false
	if sqlite {
		if _, err := os.Stat(dbFile); errors.Is(err, os.ErrNotExist) {
			madeLedger = true
		}
	}
	done := false
	defer func() {
		if done {
			return
		}
		if madeLedger {
			for _, suffix := range []string{"", "-wal", "-shm"} {
				os.Remove(dbFile + suffix)
			}
		}
		if madeData {
			os.Remove(keysDir)
			os.Remove(*data)
		}
	}()
	// NoMigrate: a ledger of an older release is refused as it is, not
	// migrated and then refused as another init's (below): migrated, it
	// was refused by the older server still serving it at its next start,
	// and by that release's own tools (an upgrade review).
	st, err := ledger.Open(ctx, dsn, &ledger.Options{Currency: *currency, NoMigrate: true})
	if errors.Is(err, ledger.ErrSchemaTooOld) {
		return fmt.Errorf("%s already holds a ledger, of an older release: copy that instance's key directory (DATA/keys) to %s "+
			"instead of running init again; %w", ledger.Describe(dsn), keysDir, err)
	}
	if err != nil {
		return err
	}
	closed := false
	defer func() {
		if !closed {
			st.Close()
		}
	}()
	// A ledger another init made (and bound to its keys) is not taken:
	// keys made now would call its riders' codes forged.
	// So is one a server has used (a ledger from before the binding,
	// whose server has not started on this version yet).
	fp, err := st.KeySet(ctx)
	if err != nil {
		return err
	}
	used, err := st.InUse(ctx)
	if err != nil {
		return err
	}
	if fp != "" || used {
		return fmt.Errorf("%s already holds a ledger, made by another init with its own key directory: "+
			"copy that instance's key directory (DATA/keys) to %s instead of running init again", ledger.Describe(dsn), keysDir)
	}
	if *fares != "" {
		t, _ := fare.Load(*fares)
		if err := st.PutFareTable(ctx, t); err != nil {
			return err
		}
	}
	if sqlite {
		if err := durable.SyncDir(filepath.Dir(dbFile)); err != nil {
			return err
		}
	}
	kd, err := keys.Init(keysDir, keys.InitOptions{FleetKey: *fleetKey})
	if err != nil {
		return err
	}
	done = true
	// Bound last: a cut before this leaves keys that run binds at its
	// first start.
	if _, err := st.BindKeySet(ctx, kd.Fingerprint()); err != nil {
		return err
	}
	closed = true
	if err := st.Close(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, `initialised %s
  keys:           %s (issuer root secret, fleet key, operator token, broker secret: back them up, keep them private)
  operator token: %s (Authorization: Bearer …)
  fleet key:      %s (its public half goes on every validator)
  ledger:         %s
`, *data, kd.Path(), filepath.Join(kd.Path(), keys.TokenFile), filepath.Join(kd.Path(), keys.FleetPubFile), redactDSN(dsn))
	if *fares == "" {
		// Said here, not first at provisioning ("no fare table uploaded
		// yet"): validators stay out of service without one.
		fmt.Fprintln(stdout, "  fares:          none yet: validators stay out of service until a fare table is published "+
			"(PUT /v1/fares with the operator token, or init --fares FILE)")
	}
	return nil
}

// redactDSN is dsn as it may be shown: a database password in it is
// replaced by xxxxx (init's summary ends up in terminals and CI logs).
func redactDSN(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		return u.Redacted()
	}
	return dsn
}

// isoCurrency reports whether code is an ISO 4217 currency (upper case).
func isoCurrency(code string) (currency.Unit, error) {
	u, err := currency.ParseISO(code)
	if err == nil && u.String() != code {
		err = fmt.Errorf("%q is not upper case", code)
	}
	return u, err
}

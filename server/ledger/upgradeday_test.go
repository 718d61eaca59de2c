package ledger

import (
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestUpgradeKeepsOneServiceDay: a rider's morning after a fare table
// that moved the service day (v1 UTC days, v2 Berlin days from 10 March
// 00:00 UTC), on a bus still charging v1 (within the grace): the ride at
// 04:30 Berlin settled by the release of 2026-12-04 (bc3e1fe), which put
// it on v1's day, 9 March; the server upgraded; the ride at 04:50 on the
// same bus settled by this release, which puts a tap on the day of the
// table in force (10 March). Either release alone charged 250 + 0 (a
// transfer); the two together charged 250 + 250 on two days (and each
// day had its own cap). The start that migrates the ledger puts the
// settled tap on its day now. On SQLite the ledger is one bc3e1fe's
// ledger package made (testdata/ledger/README.md); on both backends one
// made by this release with the tap put back on the day and at the schema
// version the release before left (the newest migration is re-runnable).
func TestUpgradeKeepsOneServiceDay(t *testing.T) {
	ctx := context.Background()
	first, second := time.Date(2026, 3, 10, 4, 30, 0, 0, berlin), time.Date(2026, 3, 10, 4, 50, 0, 0, berlin)
	check := func(t *testing.T, s *Store, acct uint64) {
		t.Helper()
		r := commit(t, s, mkTap("bus-old", 2, acct, second, ""))
		if r[0].RatedVersion != 1 || r[0].Charge != 0 {
			t.Errorf("the ride at 04:50 after the upgrade: rated by v%d, charged %d; want v1 (the bus's, within the grace) and 0 (a transfer)",
				r[0].RatedVersion, r[0].Charge)
		}
		if b := balance(t, s, acct); b != 10000-250 {
			t.Errorf("balance %d, want %d (250 + 0)", b, 10000-250)
		}
		rides, err := s.Rides(ctx, acct, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, rd := range rides {
			if rd.ServiceDay != "2026-03-10" {
				t.Errorf("ride %s (%s) on service day %s, want 2026-03-10", rd.TapID, rd.Time.In(berlin).Format(time.TimeOnly), rd.ServiceDay)
			}
		}
	}
	t.Run("bc3e1fe", func(t *testing.T) {
		f, err := os.Open(filepath.Join("..", "..", "testdata", "ledger", "v22-bc3e1fe-fareday.db.gz"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(io.LimitReader(zr, 16<<20))
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "ledger.db")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		s := (&testDB{backend: "sqlite", dsn: "sqlite:" + path}).open(t, &Options{MustExist: true})
		check(t, s, 1000)
	})
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s := db.open(t, nil)
		putTableAt(t, s, strings.Replace(tableV1, `"Europe/Berlin"`, `"UTC"`, 1), tablesSince)
		putTableAt(t, s, strings.Replace(tableV1, `"version":1`, `"version":2`, 1), time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC))
		acct := newAccount(t, s, 10000)
		if r := commit(t, s, mkTap("bus-old", 1, acct, first, "")); r[0].Charge != 250 {
			t.Fatalf("the ride at 04:30 charged %d, want 250", r[0].Charge)
		}
		migs, err := migrations(s.backend)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{`UPDATE taps SET service_day = '2026-03-09'`, // v1's day, where bc3e1fe put it
			`DELETE FROM schema_migrations WHERE version = ` + strconv.FormatInt(migs[len(migs)-1].version, 10)} {
			if _, err := s.db.ExecContext(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		check(t, db.open(t, nil), acct)
	})
}

package ledger

import (
	"bytes"
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// redayBack puts the ledger back at the schema version the release before
// left (the newest migration is re-runnable) with the given taps on the
// days that release gave them, as TestUpgradeKeepsOneServiceDay does.
func redayBack(t *testing.T, s *Store, days map[string]string) {
	t.Helper()
	ctx := context.Background()
	migs, err := migrations(s.backend)
	if err != nil {
		t.Fatal(err)
	}
	for id, day := range days {
		if _, err := s.db.ExecContext(ctx, `UPDATE taps SET service_day = $1 WHERE tap_id = $2`, day, id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM schema_migrations WHERE version = `+
		strconv.FormatInt(migs[len(migs)-1].version, 10)); err != nil {
		t.Fatal(err)
	}
}

func postingCount(t *testing.T, s *Store) int64 {
	t.Helper()
	var n int64
	if err := s.db.QueryRowContext(context.Background(), `SELECT COUNT(*) FROM postings`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// syncBuffer is a log sink safe for the Store's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestUpgradeRedayRerates: the release before put the ride at 04:30 Berlin
// (a bus still charging v1, UTC days) on 9 March and the ride at 04:50 on
// an up-to-date bus (v2, Berlin days) on 10 March: 250 + 250. The start
// that migrates moves the first onto 10 March and re-rates: the second is
// the transfer it is (a fare_correction of +250), the ledger verifies, and
// a later migrating start (the same pass again) changes nothing.
func TestUpgradeRedayRerates(t *testing.T) {
	first, second := time.Date(2026, 3, 10, 4, 30, 0, 0, berlin), time.Date(2026, 3, 10, 4, 50, 0, 0, berlin)
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		putTableAt(t, s, strings.Replace(tableV1, `"Europe/Berlin"`, `"UTC"`, 1), tablesSince)
		putTableAt(t, s, strings.Replace(tableV1, `"version":1`, `"version":2`, 1), time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC))
		acct := newAccount(t, s, 10000)
		a := mkTap("bus-old", 1, acct, first, "")
		commit(t, s, a)
		// The release before's day, and its next ride on it (no migration
		// in between).
		if _, err := s.db.ExecContext(ctx, `UPDATE taps SET service_day = '2026-03-09' WHERE tap_id = $1`, a.ID); err != nil {
			t.Fatal(err)
		}
		b := mkTap("bus-new", 1, acct, second, "")
		b.FareVersion = 2
		if r := commit(t, s, b); r[0].Charge != 250 {
			t.Fatalf("the ride at 04:50 on the release before's days: charged %d, want 250", r[0].Charge)
		}
		redayBack(t, s, nil)
		s = db.open(t, nil)
		if got := balance(t, s, acct); got != 10000-250 {
			t.Errorf("balance after the upgrade %d, want %d (250 + 0)", got, 10000-250)
		}
		if err := s.CheckInvariants(ctx); err != nil {
			t.Errorf("verify after the upgrade: %v", err)
		}
		n := postingCount(t, s)
		redayBack(t, s, nil)
		s = db.open(t, nil)
		if got := postingCount(t, s); got != n {
			t.Errorf("a second migrating start wrote %d postings", got-n)
		}
		if got := balance(t, s, acct); got != 10000-250 {
			t.Errorf("balance after a second migrating start %d, want %d", got, 10000-250)
		}
	})
}

// TestUpgradeRedayLogsOnce: a start that moves many taps says so in one
// line (how many taps, accounts and days), not one line a tap: a ledger
// with a million such taps would log a million lines at Info.
func TestUpgradeRedayLogsOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s := db.open(t, nil)
		putTableAt(t, s, strings.Replace(tableV1, `"Europe/Berlin"`, `"UTC"`, 1), tablesSince)
		putTableAt(t, s, strings.Replace(tableV1, `"version":1`, `"version":2`, 1), time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC))
		back := map[string]string{}
		const riders = 20
		for i := range riders {
			acct := newAccount(t, s, 10000)
			tp := mkTap("bus-old", uint64(i+1), acct, time.Date(2026, 3, 10, 4, 30, 0, 0, berlin), "")
			commit(t, s, tp)
			back[tp.ID] = "2026-03-09"
		}
		redayBack(t, s, back)
		var logs syncBuffer
		db.open(t, &Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))})
		lines := 0
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "service day of the fare table in force") {
				lines++
				if !strings.Contains(l, "taps="+strconv.Itoa(riders)) {
					t.Errorf("log line without the count of moved taps (%d): %s", riders, l)
				}
			}
		}
		if lines != 1 {
			t.Errorf("%d log lines at Info for %d moved taps, want 1:\n%s", lines, riders, logs.String())
		}
	})
}

// TestUpgradeRedayLongGrace: with a fare grace longer than the three days
// of serviceDayAt, the release before believed a claim of the table before
// for all of it, and put the ride on that table's day four days after the
// change; the start that migrates must look that far too.
func TestUpgradeRedayLongGrace(t *testing.T) {
	const grace = 5 * 24 * time.Hour
	first, second := time.Date(2026, 3, 14, 4, 30, 0, 0, berlin), time.Date(2026, 3, 14, 4, 50, 0, 0, berlin)
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s := db.open(t, &Options{FareGrace: grace})
		putTableAt(t, s, strings.Replace(tableV1, `"Europe/Berlin"`, `"UTC"`, 1), tablesSince)
		putTableAt(t, s, strings.Replace(tableV1, `"version":1`, `"version":2`, 1), time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC))
		acct := newAccount(t, s, 10000)
		a := mkTap("bus-old", 1, acct, first, "")
		if r := commit(t, s, a); r[0].RatedVersion != 1 {
			t.Fatalf("rated by v%d, want v1 (within the grace)", r[0].RatedVersion)
		}
		redayBack(t, s, map[string]string{a.ID: "2026-03-13"}) // v1's day: the release before's
		s = db.open(t, &Options{FareGrace: grace})
		if r := commit(t, s, mkTap("bus-old", 2, acct, second, "")); r[0].Charge != 0 {
			t.Errorf("the ride at 04:50 after the upgrade charged %d, want 0 (a transfer)", r[0].Charge)
		}
		if got := balance(t, s, acct); got != 10000-250 {
			t.Errorf("balance %d, want %d (250 + 0)", got, 10000-250)
		}
	})
}

// TestUpgradeRedayRestoredTable: a fare table given back after a restore
// (Restored) comes into force at the restore, but a validator's claim of
// it is believed from long before (claimable): the release before put a
// late ride of those days on the restored table's day (Berlin, 5 March),
// this one on the day of the table in force (UTC days, 4 March). The start
// that migrates must look from the claimable time, not only the fare grace
// before the table's.
func TestUpgradeRedayRestoredTable(t *testing.T) {
	ctx := context.Background()
	first, second := time.Date(2026, 3, 5, 4, 30, 0, 0, berlin), time.Date(2026, 3, 5, 4, 50, 0, 0, berlin)
	forEachBackend(t, func(t *testing.T, db *testDB) {
		s := db.open(t, nil)
		putTableAt(t, s, strings.Replace(tableV1, `"Europe/Berlin"`, `"UTC"`, 1), tablesSince)
		s.now = func() time.Time { return time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC) }
		acct := newAccount(t, s, 10000)
		s.now = func() time.Time { return time.Date(2026, 3, 12, 0, 0, 0, 0, time.UTC) }
		if _, _, err := s.Restored(ctx, 0, "test", mustTable(t, strings.Replace(tableV1, `"version":1`, `"version":2`, 1))); err != nil {
			t.Fatal(err)
		}
		s.catalog.Store(nil)
		a := mkTap("bus-new", 1, acct, first, "")
		a.FareVersion = 2
		if r := commit(t, s, a); r[0].RatedVersion != 2 {
			t.Fatalf("rated by v%d, want v2 (claimable then)", r[0].RatedVersion)
		}
		redayBack(t, s, map[string]string{a.ID: "2026-03-05"}) // v2's day: the release before's
		s = db.open(t, nil)
		b := mkTap("bus-new", 2, acct, second, "")
		b.FareVersion = 2
		if r := commit(t, s, b); r[0].Charge != 0 {
			t.Errorf("the ride at 04:50 after the upgrade charged %d, want 0 (a transfer)", r[0].Charge)
		}
		if got := balance(t, s, acct); got != 10000-250 {
			t.Errorf("balance %d, want %d (250 + 0)", got, 10000-250)
		}
	})
}

// TestUpgradeRedayCloseChanges: four fare tables, three changes within 30
// hours, alternating UTC and Berlin days, a rider tapping every 25 minutes
// across them on buses with the table in force. The release before put
// each ride on its rating table's day; the start that migrates leaves the
// ledger as this release alone would have made it: the same balance and
// charges as the same rides committed to a fresh ledger, and it verifies.
func TestUpgradeRedayCloseChanges(t *testing.T) {
	ctx := context.Background()
	utc := strings.Replace(tableV1, `"Europe/Berlin"`, `"UTC"`, 1)
	docs := []string{utc, strings.Replace(tableV1, `"version":1`, `"version":2`, 1),
		strings.Replace(utc, `"version":1`, `"version":3`, 1), strings.Replace(tableV1, `"version":1`, `"version":4`, 1)}
	// v3 between Berlin's 04:00 and UTC's (serviceDayAt's floor).
	since := []time.Time{tablesSince, time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 3, 11, 3, 30, 0, 0, time.UTC), time.Date(2026, 3, 11, 20, 0, 0, 0, time.UTC)}
	ledger := func(t *testing.T, db *testDB) (*Store, uint64, []Tap) {
		s := db.open(t, nil)
		for i, d := range docs {
			putTableAt(t, s, d, since[i])
		}
		acct := newAccount(t, s, 100000)
		var taps []Tap
		for i, at := 0, time.Date(2026, 3, 9, 0, 0, 0, 0, time.UTC); at.Before(time.Date(2026, 3, 13, 0, 0, 0, 0, time.UTC)); i, at = i+1, at.Add(25*time.Minute) {
			tp := mkTap("bus", uint64(i+1), acct, at, "")
			bus := at // every other bus has the table of 12 hours before (within the grace)
			if i%2 == 1 {
				bus = at.Add(-12 * time.Hour)
			}
			for v := range since {
				if !bus.Before(since[v]) {
					tp.FareVersion = uint64(v + 1)
				}
			}
			taps = append(taps, tp)
		}
		commit(t, s, taps...)
		return s, acct, taps
	}
	charges := func(t *testing.T, s *Store) map[string]int64 {
		rows, err := s.db.QueryContext(ctx, `SELECT tap_id, charge FROM taps`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[string]int64{}
		for rows.Next() {
			var id string
			var c int64
			if err := rows.Scan(&id, &c); err != nil {
				t.Fatal(err)
			}
			out[id] = c
		}
		return out
	}
	forEachBackend(t, func(t *testing.T, db *testDB) {
		fresh, freshAcct, _ := ledger(t, newDB(t, db.backend))
		s, acct, taps := ledger(t, db)
		back := map[string]string{}
		moved := 0
		for _, tp := range taps {
			v := tp.FareVersion - 1
			back[tp.ID] = mustTable(t, docs[v]).ServiceDay(tp.Time)
			if d, err := s.ServiceDayAt(ctx, tp.Time); err != nil {
				t.Fatal(err)
			} else if d != back[tp.ID] {
				moved++
			}
		}
		if moved == 0 {
			t.Fatal("no ride on another day under the release before's rule: the test tests nothing")
		}
		redayBack(t, s, back)
		s = db.open(t, nil)
		if err := s.CheckInvariants(ctx); err != nil {
			t.Errorf("verify after the upgrade: %v", err)
		}
		if got, want := balance(t, s, acct), balance(t, fresh, freshAcct); got != want {
			t.Errorf("balance after the upgrade %d, this release alone %d (%d rides moved)", got, want, moved)
		}
		got, want := charges(t, s), charges(t, fresh)
		for id, c := range want {
			if got[id] != c {
				t.Errorf("tap %s charged %d, this release alone %d", id, got[id], c)
			}
		}
		t.Logf("%d rides, %d moved", len(taps), moved)
	})
}

// TestUpgradeRedayTwoStartsAtOnce: two servers started at once on the
// ledger the release before left: one migrates and moves the tap (its
// correction posted once), the other finds the ledger migrated and moves
// nothing.
func TestUpgradeRedayTwoStartsAtOnce(t *testing.T) {
	first, second := time.Date(2026, 3, 10, 4, 30, 0, 0, berlin), time.Date(2026, 3, 10, 4, 50, 0, 0, berlin)
	forEachBackend(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.open(t, nil)
		putTableAt(t, s, strings.Replace(tableV1, `"Europe/Berlin"`, `"UTC"`, 1), tablesSince)
		putTableAt(t, s, strings.Replace(tableV1, `"version":1`, `"version":2`, 1), time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC))
		acct := newAccount(t, s, 10000)
		a := mkTap("bus-old", 1, acct, first, "")
		commit(t, s, a)
		if _, err := s.db.ExecContext(ctx, `UPDATE taps SET service_day = '2026-03-09' WHERE tap_id = $1`, a.ID); err != nil {
			t.Fatal(err)
		}
		b := mkTap("bus-new", 1, acct, second, "")
		b.FareVersion = 2
		commit(t, s, b)
		redayBack(t, s, nil)
		n := postingCount(t, s)
		var logs [2]syncBuffer
		var wg sync.WaitGroup
		stores := make([]*Store, 2)
		errs := make([]error, 2)
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				stores[i], errs[i] = Open(ctx, db.dsn, &Options{Logger: slog.New(slog.NewTextHandler(&logs[i], nil))})
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("start %d: %v", i, err)
			}
			defer stores[i].Close()
		}
		if got := postingCount(t, stores[0]); got != n+1 {
			t.Errorf("%d postings written by two starts, want 1 (the correction)", got-n)
		}
		if got := balance(t, stores[1], acct); got != 10000-250 {
			t.Errorf("balance %d, want %d", got, 10000-250)
		}
		lines := strings.Count(logs[0].String()+logs[1].String(), "taps moved to the service day")
		if lines != 1 {
			t.Errorf("%d starts said they moved taps, want 1", lines)
		}
		if err := stores[0].CheckInvariants(ctx); err != nil {
			t.Error(err)
		}
	})
}

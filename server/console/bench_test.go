package console

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the PostgreSQL seed
	_ "modernc.org/sqlite"             // the SQLite seed

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server/api"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/ledger"
	"github.com/farego/farego/server/ledger/ledgertest"
)

// The console's page loads on a big ledger: 2,000 devices and 10 million
// taps over 30 days (FAREGO_CONSOLE_BENCH_TAPS changes the count), seeded in
// bulk SQL straight into the ledger's tables, on SQLite and, with
// FAREGO_TEST_POSTGRES, on PostgreSQL. Each sub-benchmark is one page,
// served through HTTP with a signed-in session, as a browser loads it.
//
//	go test -run '^$' -bench ConsolePages -benchtime 20x ./server/console
//
// Seeding 10 million taps takes minutes; FAREGO_CONSOLE_BENCH_CACHE=DIR
// keeps the seeded SQLite ledger there for the next run.

const (
	benchDevices = 2000
	benchRoutes  = 40
	benchDays    = 30
)

// benchAccounts is how many rider accounts are seeded (100,000;
// FAREGO_CONSOLE_BENCH_ACCOUNTS changes it).
var benchAccounts = func() int {
	if n, err := strconv.Atoi(os.Getenv("FAREGO_CONSOLE_BENCH_ACCOUNTS")); err == nil && n > 0 {
		return n
	}
	return 100_000
}()

func benchTaps() int {
	if n, err := strconv.Atoi(os.Getenv("FAREGO_CONSOLE_BENCH_TAPS")); err == nil && n > 0 {
		return n
	}
	return 10_000_000
}

func BenchmarkConsolePages(b *testing.B) {
	for _, backend := range []string{"sqlite", "postgres"} {
		b.Run(backend, func(b *testing.B) {
			dsn := benchLedger(b, backend)
			benchPages(b, dsn)
		})
	}
}

// benchLedger returns the DSN of a seeded ledger of the backend.
func benchLedger(b *testing.B, backend string) string {
	n := benchTaps()
	ctx := context.Background()
	var dsn string
	switch backend {
	case "postgres":
		base := ledgertest.PostgresURL(b)
		admin, err := sql.Open("pgx", base)
		if err != nil {
			b.Fatal(err)
		}
		defer admin.Close()
		schema := "consolebench_" + randHex(6)
		if _, err := admin.Exec(`CREATE SCHEMA ` + schema); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			a, err := sql.Open("pgx", base)
			if err == nil {
				a.Exec(`DROP SCHEMA ` + schema + ` CASCADE`)
				a.Close()
			}
		})
		u, _ := url.Parse(base)
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		dsn = u.String()
	default:
		dir := os.Getenv("FAREGO_CONSOLE_BENCH_CACHE")
		if dir == "" {
			dir = b.TempDir()
		}
		path := filepath.Join(dir, fmt.Sprintf("console-bench-%d-%d.db", n, benchAccounts))
		dsn = "sqlite:" + path
		if _, err := os.Stat(path + ".seeded"); err == nil {
			b.Logf("using the seeded ledger %s", path)
			return dsn
		}
		os.Remove(path)
		os.Remove(path + "-wal")
		os.Remove(path + "-shm")
	}
	st, err := ledger.Open(ctx, dsn, nil)
	if err != nil {
		b.Fatal(err)
	}
	tbl, err := fare.Parse([]byte(testFares))
	if err != nil {
		b.Fatal(err)
	}
	if err := st.PutFareTable(ctx, tbl); err != nil {
		b.Fatal(err)
	}
	st.Close()
	start := time.Now()
	if err := seed(ctx, backend, dsn, n, benchDevices); err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded %d taps, %d devices, %d accounts on %s in %v", n, benchDevices, benchAccounts, backend, time.Since(start).Round(time.Second))
	// The first summary (62 service days, the lag of the last 48 h).
	st, err = ledger.Open(ctx, dsn, nil)
	if err != nil {
		b.Fatal(err)
	}
	start = time.Now()
	rs, err := st.RefreshSummaries(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("first summary: %d days, %d lag slots in %v", rs.Days, rs.Slots, time.Since(start).Round(time.Millisecond))
	st.Close()
	if backend == "sqlite" {
		os.WriteFile(strings.TrimPrefix(dsn, "sqlite:")+".seeded", nil, 0o644)
	}
	return dsn
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// seedNow is the end of the seeded 30 days.
var seedNow = time.Now().Truncate(time.Hour)

// seed fills the ledger's tables with bulk SQL: accounts, devices with
// statuses, taps over 30 days (some flagged, noted, transfers, capped,
// late) with their fare postings, online payments at shops (some
// refunded), held and quarantined records, deny entries and audit entries. The indexes on taps are dropped
// first and made again after, as a restore would.
func seed(ctx context.Context, backend, dsn string, n, devices int) error {
	driver, src := "sqlite", strings.TrimPrefix(dsn, "sqlite:")
	if backend == "postgres" {
		driver, src = "pgx", dsn
	} else {
		src += "?_pragma=busy_timeout(10000)&_pragma=synchronous(OFF)&_pragma=cache_size(-262144)"
	}
	db, err := sql.Open(driver, src)
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	var indexes []string
	q := `SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'taps' AND sql IS NOT NULL`
	if backend == "postgres" {
		q = `SELECT indexdef FROM pg_indexes WHERE tablename = 'taps' AND schemaname = current_schema() AND indexname <> 'taps_pkey'`
	}
	rows, err := db.QueryContext(ctx, q)
	if err != nil {
		return err
	}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return err
		}
		indexes = append(indexes, s)
	}
	rows.Close()
	for _, ix := range indexes {
		name := strings.Fields(strings.TrimPrefix(strings.TrimPrefix(ix, "CREATE UNIQUE INDEX "), "CREATE INDEX "))[0]
		if _, err := db.ExecContext(ctx, `DROP INDEX `+name); err != nil {
			return fmt.Errorf("drop %s: %w", name, err)
		}
	}
	span := int64(benchDays * 24 * time.Hour)
	first := seedNow.UnixNano() - span
	step := span / int64(n)
	series := func(to int) string { // rows i = 0 .. to-1
		if backend == "postgres" {
			return fmt.Sprintf(`(SELECT generate_series(CAST(0 AS BIGINT), %d) AS i) n`, to-1)
		}
		return fmt.Sprintf(`(WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < %d) SELECT i FROM s) n`, to-1)
	}
	day := `strftime('%Y-%m-%d', (at / 1000000000) - 14400, 'unixepoch')`
	blob := `zeroblob(120)`
	key := `randomblob(18)`
	pad := func(expr string, w int) string { return fmt.Sprintf(`printf('%%0%dd', %s)`, w, expr) }
	if backend == "postgres" {
		day = `to_char(to_timestamp(at / 1000000000) - interval '4 hours', 'YYYY-MM-DD')`
		blob = `decode(repeat('00', 120), 'hex')`
		key = `decode(md5(i::text), 'hex')`
		pad = func(expr string, w int) string { return fmt.Sprintf(`lpad((%s)::text, %d, '0')`, expr, w) }
	}
	stmts := []string{
		fmt.Sprintf(`INSERT INTO accounts (id, profile, name, secret_hash, currency, balance, postings, last_serial, created_ns)
			SELECT 1000 + i, 0, '', %s, 'EUR', 5000, 0, 1, %d FROM %s`, blob, first, series(benchAccounts)),
		fmt.Sprintf(`INSERT INTO devices (id, public_key, registered_ns, online, queue_depth, oldest_unsent_ns, last_seen_ns, software,
				epoch, out_of_service, versions, status_ns, last_seq, synced_ns, mqtt_hash, clock_offset_ns)
			SELECT 'bus-' || %s, %s, %d, i %% 10 <> 0, CASE WHEN i %% 37 = 0 THEN 400 ELSE i %% 3 END,
				CASE WHEN i %% 37 = 0 THEN 3600000000000 ELSE 0 END, %d, '1.4.0', 'e', CASE WHEN i %% 301 = 0 THEN 'queue_full' ELSE '' END,
				'{"denylist":1,"fares":1,"keyring":1}', %d - (i %% 600) * 1000000000, 0, %d, 'h',
				CASE WHEN i %% 53 = 0 THEN 45000000000 ELSE (i %% 7) * 100000000 END
			FROM %s`, pad("i", 4), blob, first, seedNow.UnixNano(), seedNow.UnixNano(), seedNow.UnixNano(), series(devices)),
		fmt.Sprintf(`INSERT INTO taps (tap_id, device_id, seq, epoch, at_ns, account_id, serial, code_key, code_hash, profile, base_fare,
				currency, fare_version, route, vehicle, record, service_day, flag, charge, transfer, capped, rated_version,
				committed_ns, claimed_fare, notes, postings)
			SELECT 's' || %s || '/bus-' || %s, 'bus-' || %s, i, 'e', at, 1000 + (i * 7919) %% %d, 1, %s, 'abcdef012345', 0,
				250, 'EUR', 1, 'R' || ((i %% 1597) * (i %% 1597) * %d / 2550409), 'v' || (i %% %d), %s, %s,
				CASE WHEN i %% 997 = 0 THEN 'duplicate_code' WHEN i %% 1999 = 0 THEN 'invalid_code' ELSE '' END,
				CASE WHEN i %% 997 = 0 OR i %% 1999 = 0 THEN 0 WHEN i %% 5 = 0 THEN 0 WHEN i %% 11 = 0 OR (dow >= 5 AND i %% 3 = 0) THEN 50 ELSE 250 END,
				i %% 5 = 0, (i %% 11 = 0 OR (dow >= 5 AND i %% 3 = 0)) AND i %% 5 <> 0, 1,
				at + CASE WHEN i %% 50 = 0 THEN 7200000000000 ELSE (i %% 97) * 100000000 END,
				250, CASE WHEN i %% 1501 = 0 THEN 'fare_mismatch' ELSE '' END, 1
			FROM (SELECT i, at, (at / 86400000000000 + 3) %% 7 AS dow FROM (SELECT i, %d + i * %d AS at FROM %s) a) t`,
			pad("i", 10), pad(fmt.Sprintf("i %% %d", devices), 4), pad(fmt.Sprintf("i %% %d", devices), 4), benchAccounts, key,
			benchRoutes, devices, blob, day, first, step, series(n)),
		fmt.Sprintf(`INSERT INTO deny_entries (account_id, serial, reason, since_ns, expires_ns)
			SELECT 1000 + i * 97, 0, 'lost_phone', %d, 0 FROM %s`, seedNow.UnixNano(), series(1000)),
		fmt.Sprintf(`INSERT INTO audit_log (id, at_ns, actor, action, target, detail)
			SELECT i + 1, %d + i * 1000000000, 'token:init (operator)', 'deny', CAST(1000 + i AS TEXT), 'serial 0 reason "lost_phone"'
			FROM %s`, first, series(5000)),
		// Each charged tap's fare posting (the rider's account page).
		`INSERT INTO postings (account_id, seq, kind, amount, tap_id, fare_version, created_ns)
			SELECT account_id, seq, 'fare', -charge, tap_id, 1, committed_ns FROM taps WHERE charge > 0`,
		// Online payments at 50 shops, one in ten a tenth of the taps,
		// by one till token each; one in ten partly refunded.
		fmt.Sprintf(`INSERT INTO api_tokens (id, role, merchant_id, name, token_hash, created_ns)
			SELECT 'tok-' || %s, 'merchant', 'shop-' || %s, 'till', %s, %d FROM %s`, pad("i", 2), pad("i", 2), key, first, series(50)),
		fmt.Sprintf(`INSERT INTO payments (id, merchant_id, order_id, account_id, serial, code_key, code_hash, amount, currency, status,
				created_ns, token_id)
			SELECT i + 1, 'shop-' || %s, 'o' || %s, 1000 + (i * 7919) %% %d, 1, %s, 'abcdef012345', 100 + i %% 900, 'EUR', 'paid',
				%d + i * %d, 'tok-' || %s FROM %s`,
			pad("i % 50", 2), pad("i", 8), benchAccounts, key, first, step*10, pad("i % 50", 2), series(n/10)),
		`INSERT INTO postings (account_id, seq, kind, amount, payment_id, created_ns)
			SELECT account_id, 100000000 + id, 'payment', -amount, id, created_ns FROM payments`,
		`INSERT INTO postings (account_id, seq, kind, amount, payment_id, created_ns)
			SELECT account_id, 200000000 + id, 'payment', 50, id, created_ns + 1000 FROM payments WHERE id % 10 = 0`,
		`UPDATE counters SET value = (SELECT COALESCE(MAX(id), 0) FROM payments) WHERE name = 'payment_id'`,
		`INSERT INTO refunds (merchant_id, refund_id, payment_id, account_id, posting_seq, amount, reason, created_ns, token_id)
			SELECT merchant_id, 'r' || order_id, id, account_id, 200000000 + id, 50, 'complaint', created_ns + 1000, token_id
			FROM payments WHERE id % 10 = 0`,
		// Taps held (an issuer key the keyring lacks) and records
		// quarantined (a revoked device's), one per 100 and 400 taps.
		fmt.Sprintf(`INSERT INTO held_taps (device_id, epoch, seq, reason, record, received_ns)
			SELECT 'bus-' || %s, 'h', i, 'unknown_issuer_key', %s, %d + i * %d FROM %s`,
			pad(fmt.Sprintf("i %% %d", devices), 4), blob, first, step*100, series(max(n/100, 1))),
		fmt.Sprintf(`INSERT INTO quarantine (device_id, epoch, seq, reason, record, received_ns)
			SELECT 'bus-' || %s, 'q', i, 'revoked_device', %s, %d + i * %d FROM %s`,
			pad(fmt.Sprintf("i %% %d", devices), 4), blob, first, step*400, series(max(n/400, 1))),
		`UPDATE counters SET value = 5000 WHERE name = 'audit_id'`,
		`UPDATE counters SET value = 1 WHERE name = 'deny_version'`,
	}
	for _, s := range stmts {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("seed: %w\n%.300s", err, s)
		}
	}
	for _, ix := range indexes {
		if _, err := db.ExecContext(ctx, ix); err != nil {
			return fmt.Errorf("index: %w: %s", err, ix)
		}
	}
	if backend == "postgres" {
		_, err = db.ExecContext(ctx, `VACUUM ANALYZE`)
	} else {
		_, err = db.ExecContext(ctx, `ANALYZE`)
	}
	return err
}

// benchPages serves the console on the seeded ledger and loads each page
// b.N times.
func benchPages(b *testing.B, dsn string) {
	ctx := context.Background()
	st, err := ledger.Open(ctx, dsn, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	kd, err := keys.Init(filepath.Join(b.TempDir(), "keys"), keys.InitOptions{})
	if err != nil {
		b.Fatal(err)
	}
	tok, _ := os.ReadFile(filepath.Join(kd.Path(), keys.TokenFile))
	f := &fixture{t: b, store: st, keys: kd, opToken: strings.TrimSpace(string(tok))}
	a := api.New(api.Config{Ledger: st, Keys: kd})
	h := New(Config{Ledger: st, Keys: kd, API: a, Started: seedNow.Add(-time.Hour)})
	srv := newServer(h, a)
	defer srv.Close()
	f.srv = srv
	br := f.browser()
	resp, body := br.post("/console/signin", url.Values{"token": {f.opToken}})
	if resp.StatusCode != http.StatusSeeOther {
		b.Fatalf("sign-in: %d %s", resp.StatusCode, body)
	}
	pages := []struct{ name, path string }{
		{"overview", "/console/"},
		{"fleet", "/console/fleet"},
		{"fleet-by-heard", "/console/fleet?sort=heard&dir=desc&state=online"},
		{"device", "/console/devices/bus-0042"},
		{"money", "/console/money"},
		{"money-60d", "/console/money?days=60"},
		{"shops", "/console/shops"},
		{"flagged", "/console/flagged"},
		{"account", "/console/accounts/1042"},
		{"account-search", "/console/accounts?id=1042"},
		{"aside-held", "/console/aside?kind=held"},
		{"aside-quarantine", "/console/aside"},
		{"flagged-duplicate", "/console/flagged?flag=duplicate_code"},
		{"flagged-note", "/console/flagged?note=fare_mismatch"},
		{"device-taps", "/console/devices/bus-1999"},
		{"tokens", "/console/tokens"},
		{"token-payments", "/console/tokens/tok-07/payments"},
		{"aside-held-reason", "/console/aside?kind=held&reason=unknown_issuer_key"},
		{"fares", "/console/fares"},
		{"denylist", "/console/denylist"},
		{"audit", "/console/audit"},
	}
	for _, p := range pages {
		b.Run(p.name, func(b *testing.B) {
			var size int
			for b.Loop() {
				resp, err := br.c.Get(srv.URL + p.path)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusSeeOther {
					b.Fatalf("%s: %d", p.path, resp.StatusCode)
				}
				size = int(n)
			}
			b.ReportMetric(float64(size), "bytes/page")
		})
	}
	// A refresh of the summaries after 1,000 new taps of today.
	b.Run("refresh", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			addTaps(b, st, 1000)
			b.StartTimer()
			if _, err := st.RefreshSummaries(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}

var benchSeq int

// addTaps commits new taps made now on one device, through the ledger
// (unknown credentials: flagged, which changes nothing of the benchmark).
func addTaps(b *testing.B, st *ledger.Store, n int) {
	taps := make([]ledger.Tap, n)
	now := time.Now()
	for i := range taps {
		benchSeq++
		acct := uint64(1000 + benchSeq%benchAccounts)
		key := paycode.ID{Account: acct, Serial: 1, Time: uint32(now.Unix()), Counter: uint16(benchSeq)}.Key()
		key[12] ^= byte(benchSeq >> 16)
		taps[i] = ledger.Tap{ID: ledger.TapID("bus-0001", "b", uint64(benchSeq)), DeviceID: "bus-0001", Seq: uint64(benchSeq), Epoch: "b",
			Time: now, Account: acct, Serial: 1, RiderKey: make([]byte, 32), CodeKey: key, CodeHash: "0123456789ab",
			BaseFare: 250, Currency: "EUR", FareVersion: 1, Route: "R1", Record: make([]byte, 120)}
	}
	if _, err := st.CommitTaps(context.Background(), taps); err != nil {
		b.Fatal(err)
	}
}

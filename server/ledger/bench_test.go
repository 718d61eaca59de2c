package ledger

import (
	"context"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
)

// bulkAccounts creates n funded accounts in one transaction (benchmark
// set-up; the same writes as CreateAccount and TopUp).
func bulkAccounts(tb testing.TB, s *Store, n int, funds int64) {
	tb.Helper()
	err := s.write(context.Background(), "bulk accounts", func(t *txn) error {
		for i := range n {
			id, err := t.nextID("account_id")
			if err != nil {
				return err
			}
			if _, err := t.exec("account", `INSERT INTO accounts (id, profile, name, secret_hash, currency, created_ns)
				VALUES ($1, 0, '', $2, 'EUR', $3)`, id, []byte{}, t.now); err != nil {
				return err
			}
			t.stat(statAccounts, 1)
			a, err := t.lockAccount(uint64(id))
			if err != nil {
				return err
			}
			ref := "bulk-" + strconv.Itoa(i)
			if _, err := t.exec("topup", `INSERT INTO topups (reference, account_id, amount, created_ns) VALUES ($1, $2, $3, $4)`,
				ref, id, funds, t.now); err != nil {
				return err
			}
			if err := t.appendPosting(a, KindTopUp, funds, postingRef{topupRef: ref}); err != nil {
				return err
			}
			if _, err := t.exec("credential", `INSERT INTO credentials (account_id, serial, not_after_ns, rider_public_key, issued_ns)
				VALUES ($1, 1, $2, $3, $4)`, id, time.Now().Add(time.Hour).UnixNano(), riderKey(uint64(id)), t.now); err != nil {
				return err
			}
			if _, err := t.exec("serial", `UPDATE accounts SET last_serial = 1 WHERE id = $1`, id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// benchTaps makes batches of n new taps over accounts funded accounts
// (1000, 1001, …) on one service day, through 50 devices, deterministically.
type benchTaps struct {
	r        *rand.Rand
	seq      uint64
	accounts int
	device   string // "" for 50 devices "bus-N"
	// inOrder > 0 spreads that many taps over the day in the order they
	// are made (as validators online send them) instead of at random times.
	inOrder int
}

func (g *benchTaps) next(n int) []Tap {
	taps := make([]Tap, n)
	for i := range taps {
		g.seq++
		acct := uint64(1000 + g.r.IntN(g.accounts))
		when := day0.Add(time.Duration(g.r.IntN(16*60)) * time.Minute)
		if g.inOrder > 0 {
			when = day0.Add(time.Duration(g.seq) * 16 * time.Hour / time.Duration(g.inOrder))
		}
		dev := g.device
		if dev == "" {
			dev = "bus-" + strconv.Itoa(g.r.IntN(50))
		}
		key := paycode.ID{Account: acct, Serial: 1, Time: uint32(when.Unix()), Counter: uint16(g.seq)}.Key()
		key[12] ^= byte(g.seq >> 16) // keep keys apart beyond the 16-bit counter
		taps[i] = Tap{ID: TapID(dev, "e", g.seq), DeviceID: dev, Seq: g.seq, Epoch: "e", Time: when, Account: acct, Serial: 1,
			RiderKey: riderKey(acct), CodeKey: key, CodeHash: "0123456789ab", BaseFare: 250, Currency: "EUR",
			FareVersion: 1, Route: "42", Vehicle: "v", Record: make([]byte, 300)}
	}
	return taps
}

// benchLedger opens a ledger of backend with the test fare table and
// accounts funded accounts.
func benchLedger(b *testing.B, backend string, accounts int) *Store {
	b.Helper()
	s, err := Open(context.Background(), newDB(b, backend).dsn, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	putTableAt(b, s, tableV1, tablesSince)
	bulkAccounts(b, s, accounts, 1_000_000_00)
	return s
}

// floorRate inserts batches of taps, bare, into a copy of the taps table
// without indexes, each batch one transaction: one multi-row INSERT on
// SQLite, one COPY on PostgreSQL (pgx). It returns rows per second: the
// least a database can spend storing the taps alone.
func floorRate(b *testing.B, s *Store, batches [][]Tap) float64 {
	b.Helper()
	ctx := context.Background()
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE bench_floor AS SELECT tap_id, device_id, seq, epoch, at_ns, account_id,
		serial, code_key, rider_key, code_hash, profile, base_fare, currency, record FROM taps WHERE 1 = 0`); err != nil {
		b.Fatal(err)
	}
	cols := []string{"tap_id", "device_id", "seq", "epoch", "at_ns", "account_id", "serial", "code_key", "rider_key",
		"code_hash", "profile", "base_fare", "currency", "record"}
	row := func(tp *Tap) []any {
		return []any{tp.ID, tp.DeviceID, int64(tp.Seq), tp.Epoch, tp.Time.UnixNano(), int64(tp.Account), int64(tp.Serial),
			tp.CodeKey, tp.RiderKey, tp.CodeHash, int64(tp.Profile), tp.BaseFare, tp.Currency, tp.Record}
	}
	start := time.Now()
	rows := 0
	for _, batch := range batches {
		if s.backend == backendPostgres {
			conn, err := s.db.Conn(ctx)
			if err != nil {
				b.Fatal(err)
			}
			err = conn.Raw(func(dc any) error {
				pc := dc.(*stdlib.Conn).Conn()
				src := make([][]any, len(batch))
				for i := range batch {
					src[i] = row(&batch[i])
				}
				_, err := pc.CopyFrom(ctx, pgx.Identifier{"bench_floor"}, cols, pgx.CopyFromRows(src))
				return err
			})
			conn.Close()
			if err != nil {
				b.Fatal(err)
			}
		} else {
			bk := newBulk(tText, tText, tBigint, tText, tBigint, tBigint, tBigint, tBytes, tBytes, tText, tBigint, tBigint, tText, tBytes)
			for i := range batch {
				bk.add(row(&batch[i])...)
			}
			err := s.write(ctx, "floor", func(t *txn) error {
				src, args := t.rows(bk, 1)
				_, err := t.bulkExec("floor", `INSERT INTO bench_floor (`+strings.Join(cols, ", ")+`) `+src, args...)
				return err
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		rows += len(batch)
	}
	return float64(rows) / time.Since(start).Seconds()
}

// BenchmarkCommitTaps measures settled taps per second: batches of 100 new
// taps over 2,000 accounts, each batch one CommitTaps call (one
// transaction, re-rating every touched account's day). Beside it, in the
// same run: the floor (the same taps bulk inserted alone, see floorRate),
// x_floor = floor / settled (how many times the bare insert settling
// costs), and the round trips (statements) per batch.
func BenchmarkCommitTaps(b *testing.B) {
	for _, backend := range []string{"sqlite", "postgres"} {
		b.Run(backend, func(b *testing.B) {
			const batch, accounts = 100, 2000
			ctx := context.Background()
			s := benchLedger(b, backend, accounts)
			g := &benchTaps{r: rand.New(rand.NewPCG(1, 2)), accounts: accounts}
			var batches [][]Tap
			trips0 := s.roundTrips.Load()
			start := time.Now()
			for b.Loop() {
				taps := g.next(batch)
				if _, err := s.CommitTaps(ctx, taps); err != nil {
					b.Fatal(err)
				}
				batches = append(batches, taps)
			}
			elapsed := time.Since(start)
			rate := float64(len(batches)*batch) / elapsed.Seconds()
			b.ReportMetric(rate, "taps/s")
			b.ReportMetric(float64(s.roundTrips.Load()-trips0)/float64(len(batches)), "trips/batch")
			b.ReportMetric(0, "ns/op")
			floor := floorRate(b, s, batches)
			b.ReportMetric(floor, "floor_rows/s")
			b.ReportMetric(floor/rate, "x_floor")
		})
	}
}

// BenchmarkCommitTapsParallel is BenchmarkCommitTaps with 4 committers per
// CPU over 20,000 accounts, as several ingest workers (or settlement
// instances) would run: SQLite serializes them on its write lock;
// PostgreSQL runs them side by side, serializing only on shared accounts
// (a batch holds its accounts' row locks until it commits).
func BenchmarkCommitTapsParallel(b *testing.B) {
	for _, backend := range []string{"sqlite", "postgres"} {
		b.Run(backend, func(b *testing.B) {
			const batch, accounts = 100, 20_000
			ctx := context.Background()
			s := benchLedger(b, backend, accounts)
			var worker atomic.Uint64
			var total atomic.Int64
			b.SetParallelism(4)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				w := worker.Add(1)
				g := &benchTaps{r: rand.New(rand.NewPCG(w, 7)), accounts: accounts, device: "bus-p" + strconv.FormatUint(w, 10)}
				for pb.Next() {
					if _, err := s.CommitTaps(ctx, g.next(batch)); err != nil {
						b.Error(err)
						return
					}
					total.Add(batch)
				}
			})
			b.ReportMetric(float64(total.Load())/time.Since(start).Seconds(), "taps/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkCommitTapsGrowth is BenchmarkCommitTaps over a ledger that
// grows: 600 batches of 100 (60,000 taps, each account's day growing to
// 30 taps), the rate of the first and of the last 100 batches, and their
// ratio (how much a batch slows as the ledger grows). A read whose plan
// scans a table shows here: before the batch's lookups were made index
// lookups whatever the planner guesses, PostgreSQL's rate fell from 6,575
// to 2,141 taps/s (0.33); after, from 8,919 to 4,578 (0.51: the rest is
// the growing days, re-read when a tap is added; SQLite 0.42). Run it with
// -benchtime=1x.
//
// The _in_order variants make the taps in time order (as validators that
// are online send them): a batch re-rates each day from its earliest new
// tap, so there a tap costs its own rating, not its day's.
func BenchmarkCommitTapsGrowth(b *testing.B) {
	for _, name := range []string{"sqlite", "postgres", "sqlite_in_order", "postgres_in_order"} {
		backend, inOrder := strings.CutSuffix(name, "_in_order")
		b.Run(name, func(b *testing.B) {
			const batch, accounts, batches, window = 100, 2000, 600, 100
			ctx := context.Background()
			s := benchLedger(b, backend, accounts)
			g := &benchTaps{r: rand.New(rand.NewPCG(1, 2)), accounts: accounts}
			if inOrder {
				g.inOrder = batch * batches
			}
			for b.Loop() {
				var first, last float64
				start := time.Now()
				for i := 1; i <= batches; i++ {
					if _, err := s.CommitTaps(ctx, g.next(batch)); err != nil {
						b.Fatal(err)
					}
					if i%window == 0 {
						rate := float64(window*batch) / time.Since(start).Seconds()
						if i == window {
							first = rate
						}
						last = rate
						start = time.Now()
					}
				}
				b.ReportMetric(first, "first_taps/s")
				b.ReportMetric(last, "last_taps/s")
				b.ReportMetric(last/first, "last/first")
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

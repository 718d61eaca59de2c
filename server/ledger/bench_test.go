package ledger

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
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

// BenchmarkCommitTaps measures settled taps per second: batches of 100 new
// taps over 2,000 accounts, each batch one CommitTaps call (one transaction,
// with re-rating of every touched account's day). The floor is the same
// number of rows of the same size inserted in one transaction with nothing
// else; x_floor is how many times slower settling is than that floor.
func BenchmarkCommitTaps(b *testing.B) {
	for _, backend := range []string{"sqlite", "postgres"} {
		b.Run(backend, func(b *testing.B) {
			if backend == "postgres" && os.Getenv(postgresEnv) == "" {
				b.Skip(postgresEnv + " not set")
			}
			const batch, accounts = 100, 2000
			ctx := context.Background()
			db := newDB(b, backend)
			s, err := Open(ctx, db.dsn, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			putTableAt(b, s, tableV1, tablesSince)
			bulkAccounts(b, s, accounts, 1_000_000)
			r := rand.New(rand.NewPCG(1, 2))
			seq := uint64(0)
			next := func() []Tap {
				taps := make([]Tap, batch)
				for i := range taps {
					seq++
					acct := uint64(1000 + r.IntN(accounts))
					when := day0.Add(time.Duration(r.IntN(16*60)) * time.Minute)
					dev := "bus-" + strconv.Itoa(r.IntN(50))
					key := paycode.ID{Account: acct, Serial: 1, Time: uint32(when.Unix()), Counter: uint16(seq)}.Key()
					id := TapID(dev, "e", seq)
					taps[i] = Tap{ID: id, DeviceID: dev, Seq: seq, Epoch: "e", Time: when, Account: acct, Serial: 1,
						RiderKey: riderKey(acct), CodeKey: key, CodeHash: "0123456789ab", BaseFare: 250, Currency: "EUR",
						FareVersion: 1, Route: "42", Vehicle: "v", Record: make([]byte, 300)}
				}
				return taps
			}
			start := time.Now()
			n := 0
			for b.Loop() {
				if _, err := s.CommitTaps(ctx, next()); err != nil {
					b.Fatal(err)
				}
				n += batch
			}
			elapsed := time.Since(start)
			rate := float64(n) / elapsed.Seconds()
			b.ReportMetric(rate, "taps/s")
			b.ReportMetric(0, "ns/op")

			// The floor: the same rows, bare, through the same write path.
			if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS bench_floor (id TEXT PRIMARY KEY, a BIGINT, b BYTEA)`); err != nil {
				b.Fatal(err)
			}
			floorStart := time.Now()
			rows := 0
			for i := 0; i < n/batch; i++ {
				err := s.write(ctx, "floor", func(t *txn) error {
					for j := range batch {
						if _, err := t.exec("floor", `INSERT INTO bench_floor (id, a, b) VALUES ($1, $2, $3)`,
							fmt.Sprintf("%d/%d", i, j), int64(j), make([]byte, 300)); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
				rows += batch
			}
			floorRate := float64(rows) / time.Since(floorStart).Seconds()
			b.ReportMetric(floorRate, "floor_rows/s")
			b.ReportMetric(floorRate/rate, "x_floor")
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
			if backend == "postgres" && os.Getenv(postgresEnv) == "" {
				b.Skip(postgresEnv + " not set")
			}
			const batch, accounts = 100, 20_000
			ctx := context.Background()
			db := newDB(b, backend)
			s, err := Open(ctx, db.dsn, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			putTableAt(b, s, tableV1, tablesSince)
			bulkAccounts(b, s, accounts, 1_000_000)
			var seq atomic.Uint64
			var total atomic.Int64
			b.SetParallelism(4)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				r := rand.New(rand.NewPCG(seq.Add(1<<40), 7))
				for pb.Next() {
					taps := make([]Tap, batch)
					for i := range taps {
						n := seq.Add(1)
						acct := uint64(1000 + r.IntN(accounts))
						when := day0.Add(time.Duration(r.IntN(16*60)) * time.Minute)
						key := paycode.ID{Account: acct, Serial: 1, Time: uint32(when.Unix()), Counter: uint16(n)}.Key()
						key[12] ^= byte(n >> 16) // keep keys apart beyond the 16-bit counter
						id := TapID("bus-p", "e", n)
						taps[i] = Tap{ID: id, DeviceID: "bus-p", Seq: n, Epoch: "e", Time: when, Account: acct, Serial: 1,
							RiderKey: riderKey(acct), CodeKey: key, BaseFare: 250, Currency: "EUR", FareVersion: 1, Route: "42",
							Record: make([]byte, 300)}
					}
					if _, err := s.CommitTaps(ctx, taps); err != nil {
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

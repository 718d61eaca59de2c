package powercut_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/farego/farego/agent/fare"
	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/cmd/internal/powercut"
	"github.com/farego/farego/queue/durable"
	"github.com/farego/farego/server/ledger"
)

// TestLedgerBatchesSurvivePowerCutsAtEverySync: the settlement server's host
// loses its power while validators' batches are committed to the SQLite
// ledger (journal_mode WAL, its -wal file and mapped -shm beside it): the
// power is cut before each of the syncs of the ledger's open and of four
// batches, one of them sent again whole (a device that never saw its ack),
// in turn (Disk.FreezeAfterSyncs), every other cut asked to tear a page. After
// each cut the ledger opens on what survived; every batch whose commit had
// returned (a device may have deleted its taps on that ack) is there;
// the invariants hold; and once the devices have sent every batch again,
// the ledger is the one a run without a cut leaves: each tap once, every
// balance the same.
func TestLedgerBatchesSurvivePowerCutsAtEverySync(t *testing.T) {
	d := powercut.Mount(t, nil)
	ctx := context.Background()
	t0 := time.Date(2026, 6, 1, 6, 0, 0, 0, time.UTC)
	table, err := fare.Parse([]byte(`{"version":1,"currency":"EUR","timezone":"UTC","fares":{"*":{"adult":250,"child":120,"senior":120,"student":180}}}`))
	if err != nil {
		t.Fatal(err)
	}
	const accounts = 3
	open := func(path string, now time.Time) (*ledger.Store, error) {
		return ledger.Open(ctx, "sqlite:"+path, &ledger.Options{Now: func() time.Time { return now }})
	}
	// setup makes a fresh ledger in dir: the fare table, three funded
	// accounts with their credentials; all of it synced.
	var ids []uint64 // the accounts, the same in every fresh ledger
	setup := func(dir string) string {
		t.Helper()
		if err := durable.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "ledger.db")
		s, err := open(path, t0)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.PutFareTable(ctx, table); err != nil {
			t.Fatal(err)
		}
		for i := range accounts {
			a, err := s.CreateAccount(ctx, ledger.AccountSpec{Profile: paycode.Adult, Name: "rider", SecretHash: []byte("hash")})
			if err != nil {
				t.Fatal(err)
			}
			if len(ids) < accounts {
				ids = append(ids, a.ID)
			} else if a.ID != ids[i] {
				t.Fatalf("account %d, want %d as in the first ledger", a.ID, ids[i])
			}
			if _, err := s.TopUp(ctx, a.ID, 5000, "initial-"+strconv.Itoa(i)); err != nil {
				t.Fatal(err)
			}
			if _, err := s.IssueCredentialSerial(ctx, a.ID, t0.Add(72*time.Hour), riderPub(a.ID)); err != nil {
				t.Fatal(err)
			}
		}
		return path
	}
	setup(d.Path("srv-first"))
	// The batches: two validators, 12 taps each batch; batch 3 is batch 0
	// sent again.
	var batches [][]ledger.Tap
	for b := range 3 {
		dev := fmt.Sprintf("bus-%d", b%2+1)
		var taps []ledger.Tap
		for i := range 12 {
			seq := uint64(b/2*12 + i + 1)
			acct := ids[(b*12+i)%accounts]
			when := t0.Add(time.Hour + time.Duration(b*12+i)*7*time.Minute)
			id := ledger.TapID(dev, "e1", seq)
			key := paycode.ID{Account: acct, Serial: 1, Time: uint32(when.Unix()), Counter: uint16(b*12 + i + 1)}.Key()
			taps = append(taps, ledger.Tap{
				ID: id, DeviceID: dev, Seq: seq, Epoch: "e1", Time: when, Account: acct, Serial: 1, RiderKey: riderPub(acct),
				CodeKey: key, CodeHash: hex.EncodeToString(key[:6]), Profile: paycode.Adult, ClaimedProfile: paycode.Adult,
				BaseFare: 250, Currency: "EUR", FareVersion: 1, Route: "42", Vehicle: dev, Record: []byte("record " + id),
			})
		}
		batches = append(batches, taps)
	}
	batches = append(batches, batches[0])
	later := t0.Add(12 * time.Hour)

	// outcome is what a ledger holds: its taps and every balance.
	type outcome struct {
		taps     int64
		balances [accounts]int64
	}
	look := func(s *ledger.Store, what string) outcome {
		t.Helper()
		if err := s.CheckInvariants(ctx); err != nil {
			t.Fatalf("%s: the ledger's invariants: %v", what, err)
		}
		var o outcome
		var err error
		if o.taps, err = s.TapCount(ctx); err != nil {
			t.Fatal(err)
		}
		for i := range accounts {
			a, err := s.Account(ctx, ids[i])
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			o.balances[i] = a.Balance
		}
		return o
	}
	// sendAll is every device sending every batch it holds (again).
	sendAll := func(s *ledger.Store, what string) {
		t.Helper()
		for b, taps := range batches {
			res, err := s.CommitTaps(ctx, taps)
			if err != nil {
				t.Fatalf("%s: batch %d sent again: %v", what, b, err)
			}
			for _, r := range res {
				if r.Conflict {
					t.Fatalf("%s: batch %d sent again: tap %s in conflict with the one stored", what, b, r.ID)
				}
			}
		}
	}

	var want *outcome
	var cur *ledger.Store // open after a cut: closed before the disk if the test fails
	t.Cleanup(func() {
		if cur != nil {
			cur.Close()
		}
	})
	// finals are the ledgers the cuts left, each with its cut.
	var finals []struct{ path, what string }
	cuts, torn, pages, entries := 0, 0, 0, 0
	var cutOff int64
	for n := int64(0); ; n++ {
		if n > 300 {
			t.Fatal("the batches still sync after 300 syncs")
		}
		path := setup(d.Path(fmt.Sprintf("srv-%d", n)))
		if err := d.FreezeAfterSyncs(n); err != nil {
			t.Fatal(err)
		}
		acked := 0 // batches whose commit returned
		if s, err := open(path, later); err == nil {
			for _, taps := range batches {
				if _, err := s.CommitTaps(ctx, taps); err != nil {
					break
				}
				acked++
			}
			s.Close()
		}
		st, err := d.Stats()
		if err != nil {
			t.Fatal(err)
		}
		if !st.Frozen {
			if acked != len(batches) {
				t.Fatalf("with the power on throughout %d of %d batches committed", acked, len(batches))
			}
			if err := d.FreezeAfterSyncs(-1); err != nil {
				t.Fatal(err)
			}
			s, err := open(path, later)
			if err != nil {
				t.Fatal(err)
			}
			o := look(s, "without a cut")
			s.Close()
			want = &o
			t.Logf("%d syncs from the ledger's open to the last batch; %d taps", n, o.taps)
			break
		}
		tear := cuts%2 == 1
		rep, err := d.Cut(tear)
		if err != nil {
			t.Fatal(err)
		}
		cuts++
		if rep.Torn {
			torn++
		}
		pages += rep.PagesDiscarded
		cutOff += rep.BytesCutOff
		entries += rep.EntriesDiscarded
		what := fmt.Sprintf("cut before sync %d (tear %v, %d batches acked)", n, tear, acked)
		s, err := open(path, later)
		if err != nil {
			t.Fatalf("%s: the ledger does not open: %v", what, err)
		}
		cur = s
		after := look(s, what)
		// Every acked batch is there: its taps, sent again, are duplicates.
		for b := range min(acked, 3) {
			res, err := s.CommitTaps(ctx, batches[b])
			if err != nil {
				t.Fatalf("%s: batch %d: %v", what, b, err)
			}
			for _, r := range res {
				if !r.Duplicate {
					t.Fatalf("%s: tap %s of batch %d, acked before the cut, was not in the ledger after it", what, r.ID, b)
				}
			}
		}
		if got := look(s, what); got != after {
			t.Fatalf("%s: acked batches sent again changed the ledger: %+v then %+v", what, after, got)
		}
		sendAll(s, what)
		s.Close()
		cur = nil
		finals = append(finals, struct{ path, what string }{path, what})
	}
	// Each ledger left by a cut, once every batch was sent again, is the
	// one without a cut.
	for _, f := range finals {
		s, err := open(f.path, later)
		if err != nil {
			t.Fatalf("%s: %v", f.what, err)
		}
		if got := look(s, f.what); got != *want {
			t.Errorf("%s, every batch sent again: %+v, want %+v (no cut)", f.what, got, *want)
		}
		s.Close()
		os.RemoveAll(filepath.Dir(f.path))
	}
	t.Logf("%d power cuts of a SQLite ledger committing batches (%d tearing a page; %d unsynced pages put back, %d unsynced bytes cut off, "+
		"%d unsynced entries undone): every acked batch kept, invariants clean, each tap once after the batches were sent again",
		cuts, torn, pages, cutOff, entries)
}

// riderPub is the rider public key of an account's credential.
func riderPub(account uint64) []byte {
	seed := sha256.Sum256([]byte("rider " + strconv.FormatUint(account, 10)))
	return slices.Clone([]byte(ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)))
}

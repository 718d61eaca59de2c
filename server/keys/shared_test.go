package keys

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/farego/farego/server/ledger"
)

// TestSyncWithLedger: two copies of one key directory share their keyring
// through a real ledger (SQLite). The first Sync stores the directory's
// keyring in an empty ledger; a rotation of one copy reaches the other at
// its next Sync, written to its keyring.json; a key directory rotated
// while apart (a ledger restored from an older backup) stores its newer
// keyring.
func TestSyncWithLedger(t *testing.T) {
	ctx := context.Background()
	l := openLedger(t)
	a, b := twoCopies(t)
	if changed, err := a.Sync(ctx, l); changed || err != nil {
		t.Fatalf("first Sync = %v, %v; want the directory's keyring stored", changed, err)
	}
	if v, _, _ := l.LatestKeyring(ctx); v != 1 {
		t.Fatalf("the ledger's keyring is version %d; want 1", v)
	}
	kr, err := a.RotateShared(ctx, l, time.Now(), 0, time.Hour, 0)
	if err != nil || kr.Version() != 2 {
		t.Fatalf("RotateShared = %v, %v; want version 2", kr, err)
	}
	if changed, err := b.Sync(ctx, l); !changed || err != nil || b.Keyring().Version() != 2 {
		t.Fatalf("the other copy's Sync = %v, %v, version %d; want version 2 taken", changed, err, b.Keyring().Version())
	}
	if reopened, err := Open(b.Path()); err != nil || reopened.Keyring().Version() != 2 {
		t.Errorf("the other copy's keyring.json: %v; want version 2", err)
	}
	if changed, err := b.Sync(ctx, l); changed || err != nil {
		t.Errorf("a second Sync = %v, %v; want nothing to do", changed, err)
	}
	// Rotated apart from the ledger: the directory's newer keyring is stored.
	if _, err := b.Rotate(time.Now(), 0, time.Hour); err != nil {
		t.Fatal(err)
	}
	if changed, err := b.Sync(ctx, l); changed || err != nil {
		t.Fatalf("Sync of a newer directory = %v, %v", changed, err)
	}
	if v, _, _ := l.LatestKeyring(ctx); v != 3 {
		t.Errorf("the ledger's keyring is version %d; want the directory's 3", v)
	}
}

// TestRotationRace: of two rotations at once, the one stored second fails
// with ErrRotationRace and changes nothing but taking the winner's
// keyring. The other copy rotates between this one's Sync and its store
// (a fault injected into a real ledger).
func TestRotationRace(t *testing.T) {
	ctx := context.Background()
	l := openLedger(t)
	a, b := twoCopies(t)
	racing := &raceLedger{Store: l, before: func() {
		if _, err := b.RotateShared(ctx, l, time.Now(), 0, time.Hour, 0); err != nil {
			t.Fatal(err)
		}
	}}
	if _, err := a.RotateShared(ctx, racing, time.Now(), 0, time.Hour, 0); !errors.Is(err, ErrRotationRace) {
		t.Fatalf("the losing rotation: %v; want ErrRotationRace", err)
	}
	if a.Keyring().Version() != 2 || !sameKeyring(a.Keyring(), b.Keyring()) {
		t.Errorf("the loser holds version %d; want the winner's keyring", a.Keyring().Version())
	}
	if v, _, _ := l.LatestKeyring(ctx); v != 2 {
		t.Errorf("the ledger's keyring is version %d; want 2", v)
	}
}

// raceLedger runs before once, before the first StoreKeyring of a newer
// version than 1.
type raceLedger struct {
	*ledger.Store
	before func()
}

func (r *raceLedger) StoreKeyring(ctx context.Context, v uint64, b []byte) (bool, error) {
	if v > 1 && r.before != nil {
		r.before()
		r.before = nil
	}
	return r.Store.StoreKeyring(ctx, v, b)
}

func openLedger(t *testing.T) *ledger.Store {
	t.Helper()
	l, err := ledger.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "ledger.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// twoCopies makes a key directory and a copy of it (two instances').
func twoCopies(t *testing.T) (*Dir, *Dir) {
	t.Helper()
	dirA, dirB := filepath.Join(t.TempDir(), "keys"), filepath.Join(t.TempDir(), "keys")
	a, err := Init(dirA, InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dirB, 0o700); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dirA)
	for _, e := range ents {
		data, err := os.ReadFile(filepath.Join(dirA, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dirB, e.Name()), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b, err := Open(dirB)
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}

// TestRotationActivation: a rotation with an activation delay publishes
// the new key at once but signs with the old one until the delay is over;
// the old key stays valid the keep after that. A key made a year ago is
// due for renewal a month before its window ends.
func TestRotationActivation(t *testing.T) {
	ctx := context.Background()
	l := openLedger(t)
	d, _ := twoCopies(t)
	now := time.Now().UTC().Truncate(time.Second)
	kr, err := d.RotateShared(ctx, l, now, 0, 25*time.Hour, 24*time.Hour)
	if err != nil || kr.Version() != 2 || len(kr.Keys()) != 2 {
		t.Fatalf("RotateShared = %v, %v", kr, err)
	}
	for _, tc := range []struct {
		at   time.Time
		want uint32
	}{{now, 1}, {now.Add(23 * time.Hour), 1}, {now.Add(24*time.Hour + time.Minute), 2}} {
		if id, _, err := d.SigningKey(tc.at); err != nil || id != tc.want {
			t.Errorf("SigningKey at +%v = %d, %v; want %d", tc.at.Sub(now), id, err, tc.want)
		}
	}
	if end, want := d.KeyEnd(1), now.Add(49*time.Hour); !end.Equal(want) {
		t.Errorf("key 1 ends %s; want %s (activation + keep)", end, want)
	}
	if d.Due(now) {
		t.Error("a keyring with a key of a year is due for renewal")
	}
	if !d.Due(now.Add(24*time.Hour + DefaultKeyValidity - RenewBefore + time.Hour)) {
		t.Error("a key whose window ends within a month is not due for renewal")
	}
}

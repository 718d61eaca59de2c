package keys

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
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
	if res, err := a.Sync(ctx, l); res.Changed || err != nil {
		t.Fatalf("first Sync = %+v, %v; want the directory's keyring stored", res, err)
	}
	if v, _, _ := l.LatestKeyring(ctx); v != 1 {
		t.Fatalf("the ledger's keyring is version %d; want 1", v)
	}
	kr, err := a.RotateShared(ctx, l, time.Now(), 0, time.Hour, 0)
	if err != nil || kr.Version() != 2 {
		t.Fatalf("RotateShared = %v, %v; want version 2", kr, err)
	}
	if res, err := b.Sync(ctx, l); !res.Changed || err != nil || b.Keyring().Version() != 2 {
		t.Fatalf("the other copy's Sync = %+v, %v, version %d; want version 2 taken", res, err, b.Keyring().Version())
	}
	if reopened, err := Open(b.Path()); err != nil || reopened.Keyring().Version() != 2 {
		t.Errorf("the other copy's keyring.json: %v; want version 2", err)
	}
	if res, err := b.Sync(ctx, l); res.Changed || err != nil {
		t.Errorf("a second Sync = %+v, %v; want nothing to do", res, err)
	}
	// Rotated apart from the ledger: the directory's newer keyring is stored.
	if _, err := b.Rotate(time.Now(), 0, time.Hour); err != nil {
		t.Fatal(err)
	}
	if res, err := b.Sync(ctx, l); res.Changed || err != nil {
		t.Fatalf("Sync of a newer directory = %+v, %v", res, err)
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

// TestRotationAfterAnotherInstances: instance b is asked to rotate a
// moment after a rotated, before its poll took a's keyring: it takes a's
// and refuses (ErrRotationRace), as when two rotations are stored at once
// — it made a second version before (a review). Asked again, it rotates.
func TestRotationAfterAnotherInstances(t *testing.T) {
	ctx := context.Background()
	l := openLedger(t)
	a, b := twoCopies(t)
	if _, err := b.Sync(ctx, l); err != nil {
		t.Fatal(err)
	}
	if _, err := a.RotateShared(ctx, l, time.Now(), 0, time.Hour, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.RotateShared(ctx, l, time.Now(), 0, time.Hour, 0); !errors.Is(err, ErrRotationRace) || b.Keyring().Version() != 2 {
		t.Fatalf("b's rotation just after a's: %v, b at version %d; want ErrRotationRace and a's version 2", err, b.Keyring().Version())
	}
	if kr, err := b.RotateShared(ctx, l, time.Now(), 0, time.Hour, 0); err != nil || kr.Version() != 3 {
		t.Errorf("b's rotation asked again: %v, %v; want version 3", kr, err)
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
func twoCopies(t testing.TB) (*Dir, *Dir) {
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

// TestSyncRefusesUnsealed: keyrings written into the ledger by someone who
// can write to the database but holds no issuer root are not taken — the
// installation's own keys with every window ended, at a version no
// rotation can pass (every rider refused everywhere, for good), stored as
// plain JSON, under a made-up seal, or sealed by another installation's
// root. The directory keeps its keyring, Sync reports the rows, a rotation
// another instance stored before them is still taken, and a rotation above
// them is refused with ErrForgedKeyring (not reported as a race).
func TestSyncRefusesUnsealed(t *testing.T) {
	ctx := context.Background()
	l := openLedger(t)
	a, b := twoCopies(t)
	if _, err := a.Sync(ctx, l); err != nil {
		t.Fatal(err)
	}
	if _, err := b.RotateShared(ctx, l, time.Now(), 0, time.Hour, 0); err != nil {
		t.Fatal(err)
	}
	ended := func(v uint64) *paycode.Keyring {
		keys := b.Keyring().Keys()
		for i := range keys {
			keys[i].NotBefore, keys[i].NotAfter = time.Now().Add(-2*time.Hour).Truncate(time.Second), time.Now().Add(-time.Hour).Truncate(time.Second)
		}
		kr, err := paycode.NewKeyring(v, keys)
		if err != nil {
			t.Fatal(err)
		}
		return kr
	}
	plain := func(kr *paycode.Keyring) []byte {
		body, err := kr.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		return body
	}
	other, err := Init(filepath.Join(t.TempDir(), "keys"), InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sealedByOther, err := other.seal(ended(12))
	if err != nil {
		t.Fatal(err)
	}
	madeUp, _ := json.Marshal(sealedKeyring{Keyring: plain(ended(11)), Seal: strings.Repeat("00", 32)})
	for _, row := range []struct {
		v    uint64
		body []byte
	}{{10, plain(ended(10))}, {11, madeUp}, {12, sealedByOther}, {math.MaxInt64, plain(ended(math.MaxInt64))}} {
		if ok, err := l.StoreKeyring(ctx, row.v, row.body); !ok || err != nil {
			t.Fatalf("writing the forged row %d: %v, %v", row.v, ok, err)
		}
	}
	res, err := a.Sync(ctx, l)
	if err != nil || !res.Changed || !slices.Equal(res.Refused, []uint64{math.MaxInt64, 12, 11, 10}) {
		t.Fatalf("Sync = %+v, %v; want version 2 taken and the four forged rows refused", res, err)
	}
	if !sameKeyring(a.Keyring(), b.Keyring()) {
		t.Errorf("the directory holds version %d; want the sealed rotation's keyring", a.Keyring().Version())
	}
	if _, err := a.RotateShared(ctx, l, time.Now(), 0, time.Hour, 0); !errors.Is(err, ErrForgedKeyring) {
		t.Errorf("a rotation under a forged row: %v; want ErrForgedKeyring", err)
	}
	if reopened, err := Open(a.Path()); err != nil || !sameKeyring(reopened.Keyring(), b.Keyring()) {
		t.Errorf("keyring.json after the refusals: %v", err)
	}

	// More forged rows than Sync passes over: an error, nothing taken.
	l3 := openLedger(t)
	for v := uint64(100); v < 100+maxForged+1; v++ {
		if ok, err := l3.StoreKeyring(ctx, v, plain(ended(v))); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	if _, err := a.Sync(ctx, l3); !errors.Is(err, ErrForgedKeyring) || a.Keyring().Version() != 2 {
		t.Errorf("Sync under %d forged rows: %v, version %d; want ErrForgedKeyring and version 2", maxForged+1, err, a.Keyring().Version())
	}

}

// TestSyncUpgradeSealsPlainKeyrings: an installation upgraded from the
// release that stored keyrings as plain JSON. Instance a rotated to version
// 2 (stored plain) before the upgrade; instance b had not taken it yet.
// After the upgrade b refuses a's plain version 2 (it cannot tell it from
// one written into the database) and says it was stored without a seal,
// not that it was forged; a, whose own keyring it is, stores it again
// sealed as version 3 (the same keys); b takes that and rotates again (a
// review: b stayed behind and could not rotate).
func TestSyncUpgradeSealsPlainKeyrings(t *testing.T) {
	ctx := context.Background()
	l := openLedger(t)
	a, b := twoCopies(t)
	plain1, _ := a.Keyring().MarshalJSON()
	if ok, err := l.StoreKeyring(ctx, 1, plain1); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if _, err := a.Rotate(time.Now(), 0, time.Hour); err != nil { // the old release's rotation
		t.Fatal(err)
	}
	plain2, _ := a.Keyring().MarshalJSON()
	if ok, err := l.StoreKeyring(ctx, 2, plain2); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if res, err := b.Sync(ctx, l); err != nil || res.Changed || !slices.Equal(res.Refused, []uint64{2}) || res.Unsealed != 1 {
		t.Fatalf("b.Sync before a is upgraded = %+v, %v; want version 2 refused as unsealed", res, err)
	}
	if _, err := b.RotateShared(ctx, l, time.Now(), 0, time.Hour, 0); !errors.Is(err, ErrForgedKeyring) || !strings.Contains(err.Error(), "without a seal") {
		t.Errorf("b's rotation under the plain version 2: %v; want refused, saying it has no seal", err)
	}
	keys2 := a.Keyring().Keys()
	if res, err := a.Sync(ctx, l); err != nil || !res.Changed || a.Keyring().Version() != 3 || !slices.EqualFunc(a.Keyring().Keys(), keys2, sameKey) {
		t.Fatalf("a.Sync = %+v, %v, version %d; want its version 2 sealed again as version 3, the same keys", res, err, a.Keyring().Version())
	}
	if _, body, _ := l.LatestKeyring(ctx); !bytes.Contains(body, []byte(`"seal"`)) {
		t.Errorf("version 3 was stored without a seal: %.80s", body)
	}
	if res, err := b.Sync(ctx, l); err != nil || !res.Changed || !sameKeyring(a.Keyring(), b.Keyring()) || len(res.Refused) != 0 {
		t.Errorf("b.Sync after a sealed it = %+v, %v, version %d; want version 3 taken", res, err, b.Keyring().Version())
	}
	if kr, err := b.RotateShared(ctx, l, time.Now(), 0, time.Hour, 0); err != nil || kr.Version() != 4 {
		t.Errorf("b's rotation after the upgrade = %v, %v; want version 4", kr, err)
	}
	if res, err := a.Sync(ctx, l); err != nil || !res.Changed || a.Keyring().Version() != 4 {
		t.Errorf("a.Sync after b's rotation = %+v, %v", res, err)
	}
}

func sameKey(x, y paycode.Key) bool {
	return x.ID == y.ID && x.Public.Equal(y.Public) && x.NotBefore.Equal(y.NotBefore) && x.NotAfter.Equal(y.NotAfter)
}

// FuzzOpenKeyring: a keyring row read from the ledger is outside input
// (anyone who can write to the database). Whatever it holds, open does not
// panic, and takes only a keyring of the row's version that the root
// sealed (here: the directory's own).
func FuzzOpenKeyring(f *testing.F) {
	d, _ := twoCopies(f)
	own, err := d.seal(d.Keyring())
	if err != nil {
		f.Fatal(err)
	}
	plain, _ := d.Keyring().MarshalJSON()
	f.Add(uint64(1), own)
	f.Add(uint64(1), plain)
	f.Add(uint64(2), []byte(`{"keyring":{"version":2},"seal":"00"}`))
	f.Add(uint64(1), []byte(`{"keyring":null}`))
	f.Fuzz(func(t *testing.T, v uint64, body []byte) {
		kr, _, err := d.open(v, body)
		if err != nil {
			return
		}
		// Only the seeds carry a seal of this root, and they hold the
		// directory's keyring: nothing else can be taken.
		if kr.Version() != v || !sameKeyring(kr, d.Keyring()) {
			t.Fatalf("open took keyring version %d for row %d: %q", kr.Version(), v, body)
		}
	})
}

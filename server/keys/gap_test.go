package keys

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
)

// TestRotationLeavesNoGap: a rotation whose activation delay runs past
// the end of the key signing now (a 720 h activation asked for with the
// key ending in 10 days; the renewal at a start after the server was off
// for weeks, its key ending within the default 24 h delay) starts the new
// key when the old one ends, not later: in between no key signed a
// credential ("no issuer key is valid") and no validator held a key valid
// at all (every rider refused, no_valid_key, fleet-wide).
func TestRotationLeavesNoGap(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name           string
		left, activate time.Duration // the signing key's window left; the delay asked for
	}{
		{"720h activation, 10 days left", 10 * 24 * time.Hour, 720 * time.Hour},
		{"default activation, 12 hours left", 12 * time.Hour, DefaultKeyActivation},
		{"key already ended", -time.Hour, DefaultKeyActivation},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Now().UTC().Truncate(time.Second)
			d, err := Init(filepath.Join(t.TempDir(), "keys"), InitOptions{
				Now: func() time.Time { return now.Add(-DefaultKeyValidity + tc.left) }})
			if err != nil {
				t.Fatal(err)
			}
			l := openLedger(t)
			kr, err := d.RotateShared(ctx, l, now, 0, 25*time.Hour, tc.activate)
			if err != nil {
				t.Fatal(err)
			}
			// Every minute from the rotation until the new key would
			// have signed has a key that signs and a key validators hold
			// valid.
			for at := now; at.Before(now.Add(tc.activate + time.Hour)); at = at.Add(time.Minute) {
				if _, _, err := d.SigningKey(at); err != nil {
					t.Fatalf("SigningKey %v after the rotation: %v", at.Sub(now), err)
				}
				if !kr.ValidAt(at, paycode.Policy{}) {
					t.Fatalf("the keyring holds no key valid %v after the rotation", at.Sub(now))
				}
			}
		})
	}
}

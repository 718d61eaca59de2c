package server_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/server"
	"github.com/farego/farego/server/keys"
	"github.com/farego/farego/server/servertest"
)

// TestKeyRenewedBeforeItsEnd: a server started with its issuer key ending
// in 12 hours (it was off for weeks) renews it at once with its 24 h
// activation delay; the new key signs from the old one's end, not after
// the delay: in between no credential was issued and every validator
// refused every rider (no_valid_key). The audit entry says when it signs.
func TestKeyRenewedBeforeItsEnd(t *testing.T) {
	dir := t.TempDir()
	if _, err := keys.Init(filepath.Join(dir, "keys"), keys.InitOptions{KeyValidity: 12 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	u := "http://" + servertest.RunConfig(t, server.Config{DataDir: dir, KeyActivation: 24 * time.Hour}).HTTP
	c := &client{t: t, token: operatorToken(t, dir)}
	waitVersion(t, c, u, 2)
	kr := keyringOf(t, c, u)
	k1, ok1 := kr.Lookup(1)
	k2, ok2 := kr.Lookup(2)
	if !ok1 || !ok2 {
		t.Fatalf("keyring version %d without keys 1 and 2", kr.Version())
	}
	if k2.NotBefore.After(k1.NotAfter) {
		t.Errorf("key 1 ends %s, key 2 begins %s: no key in between", k1.NotAfter, k2.NotBefore)
	}
	for at := time.Now(); at.Before(time.Now().Add(25 * time.Hour)); at = at.Add(time.Minute) {
		if !kr.ValidAt(at, paycode.Policy{}) {
			t.Fatalf("no issuer key valid at %s", at)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		audit := mustJSONAny(t, c.do("GET", u+"/v1/audit", "", 200))
		if strings.Contains(audit, "rotate_keyring") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the audit trail does not show the server's rotation: %s", audit)
		}
	}
}

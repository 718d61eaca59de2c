// Package paycodetest makes issuers, riders and codes for tests of the
// packages that consume payment codes (agent, sync, server). It is test
// support only: nothing in a production binary imports it.
package paycodetest

import (
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"github.com/farego/farego/agent/paycode"
)

// Issuer is an issuer root secret with one key id and the keyring that
// trusts it.
type Issuer struct {
	Root    []byte
	KeyID   uint32
	Key     ed25519.PrivateKey
	Keyring *paycode.Keyring
}

// NewIssuer makes an issuer with a random root secret whose key is valid
// from a year before to a year after now.
func NewIssuer(tb testing.TB, keyID uint32, now time.Time) *Issuer {
	tb.Helper()
	root := make([]byte, paycode.SecretSize)
	if _, err := rand.Read(root); err != nil {
		tb.Fatal(err)
	}
	return IssuerFromRoot(tb, root, keyID, now)
}

// IssuerFromRoot is NewIssuer with a given root secret.
func IssuerFromRoot(tb testing.TB, root []byte, keyID uint32, now time.Time) *Issuer {
	tb.Helper()
	k, err := paycode.IssuerKey(root, keyID)
	if err != nil {
		tb.Fatal(err)
	}
	kr, err := paycode.NewKeyring(1, []paycode.Key{{
		ID: keyID, Public: k.Public().(ed25519.PublicKey),
		NotBefore: now.AddDate(-1, 0, 0), NotAfter: now.AddDate(1, 0, 0),
	}})
	if err != nil {
		tb.Fatal(err)
	}
	return &Issuer{Root: root, KeyID: keyID, Key: k, Keyring: kr}
}

// Rider is a rider's credential and key, as the app holds them.
type Rider struct {
	Seed       []byte
	Key        ed25519.PrivateKey
	Credential []byte
	Account    uint64
	Serial     uint32
	counter    uint16
}

// Rider issues a credential for account (serial 1, adult) valid from a day
// before to a day after now, with a random token seed.
func (is *Issuer) Rider(tb testing.TB, account uint64, now time.Time) *Rider {
	tb.Helper()
	return is.RiderWith(tb, paycode.Credential{
		Account: account, Serial: 1, Profile: paycode.Adult,
		NotBefore: uint32(now.Add(-24 * time.Hour).Unix()), NotAfter: uint32(now.Add(24 * time.Hour).Unix()),
	})
}

// RiderWith issues a credential with the given fields (KeyID and RiderKey are
// filled in) and a random token seed.
func (is *Issuer) RiderWith(tb testing.TB, c paycode.Credential) *Rider {
	tb.Helper()
	seed := make([]byte, paycode.SecretSize)
	if _, err := rand.Read(seed); err != nil {
		tb.Fatal(err)
	}
	rk, err := paycode.RiderKey(seed)
	if err != nil {
		tb.Fatal(err)
	}
	c.KeyID = is.KeyID
	copy(c.RiderKey[:], rk.Public().(ed25519.PublicKey))
	cred, err := paycode.IssueCredential(is.Key, c)
	if err != nil {
		tb.Fatal(err)
	}
	return &Rider{Seed: seed, Key: rk, Credential: cred, Account: c.Account, Serial: c.Serial}
}

// Code makes the rider's next code at time t (the counter increments).
func (r *Rider) Code(tb testing.TB, t time.Time) string {
	tb.Helper()
	r.counter++
	b, err := paycode.MakeCode(r.Credential, r.Key, t, r.counter)
	if err != nil {
		tb.Fatal(err)
	}
	return paycode.EncodeText(b)
}

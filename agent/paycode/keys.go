package paycode

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"

	"filippo.io/edwards25519"
	"golang.org/x/crypto/hkdf"
)

// SecretSize is the size of an issuer root secret and of a token seed.
const SecretSize = 32

const (
	issuerKeyInfo = "farego issuer key v1"
	riderKeyInfo  = "farego rider key v1"
)

// IssuerKey derives the Ed25519 private key of issuer key id from the issuer
// root secret: seed = HKDF-SHA256(root, salt = empty, info = "farego issuer
// key v1" ‖ uint32(id)), 32 bytes.
func IssuerKey(rootSecret []byte, id uint32) (ed25519.PrivateKey, error) {
	if len(rootSecret) < SecretSize {
		return nil, fmt.Errorf("%w: issuer root secret is %d bytes, want at least %d", ErrBadKey, len(rootSecret), SecretSize)
	}
	info := binary.BigEndian.AppendUint32([]byte(issuerKeyInfo), id)
	return deriveKey(rootSecret, string(info))
}

// RiderKey derives the rider's Ed25519 private key from a token seed:
// seed' = HKDF-SHA256(token seed, salt = empty, info = "farego rider key
// v1"), 32 bytes.
func RiderKey(tokenSeed []byte) (ed25519.PrivateKey, error) {
	if len(tokenSeed) != SecretSize {
		return nil, fmt.Errorf("%w: token seed is %d bytes, want %d", ErrBadKey, len(tokenSeed), SecretSize)
	}
	return deriveKey(tokenSeed, riderKeyInfo)
}

// deriveKey is HKDF-SHA256 (RFC 5869, golang.org/x/crypto/hkdf) with an
// empty salt, expanded to an Ed25519 seed.
func deriveKey(secret []byte, info string) (ed25519.PrivateKey, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := io.ReadFull(hkdf.New(sha256.New, secret, nil, []byte(info)), seed); err != nil {
		return nil, fmt.Errorf("paycode: hkdf: %w", err)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// CheckPublicKey checks an Ed25519 public key that came from outside (a
// device registration, a rider's own key, a keyring or fleet key): it must
// be 32 bytes, the canonical encoding of a curve point, and that point must
// not be of small order. Ed25519 verification accepts small-order keys, for
// which a signature can be made without any private key (the all-zero "R"
// with s = 0 verifies for 01‖00…00, the identity), so such a key would let
// anyone sign as its holder. The point arithmetic is filippo.io/edwards25519.
func CheckPublicKey(pub []byte) error {
	if len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: public key is %d bytes, want %d", ErrBadKey, len(pub), ed25519.PublicKeySize)
	}
	p, err := new(edwards25519.Point).SetBytes(pub)
	if err != nil {
		return fmt.Errorf("%w: public key is not a point of the curve", ErrBadKey)
	}
	if !bytes.Equal(p.Bytes(), pub) {
		return fmt.Errorf("%w: public key is not canonically encoded", ErrBadKey)
	}
	if new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) == 1 {
		return fmt.Errorf("%w: public key is a point of small order", ErrBadKey)
	}
	return nil
}

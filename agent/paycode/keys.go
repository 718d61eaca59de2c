package paycode

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"

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

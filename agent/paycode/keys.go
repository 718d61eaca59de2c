package paycode

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
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

func deriveKey(secret []byte, info string) (ed25519.PrivateKey, error) {
	seed, err := hkdf.Key(sha256.New, secret, nil, info, ed25519.SeedSize)
	if err != nil {
		return nil, fmt.Errorf("paycode: hkdf: %w", err)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

package paycode

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"time"
)

// Sizes of the version 1 binary forms.
const (
	Version        = 1
	CredentialSize = 124
	CodeSize       = 194
	// TextSize is the length of a code's text form: "FG1:" + Base45 of 194 bytes.
	TextSize = len(TextPrefix) + CodeSize/2*3
)

// Signature domain separators.
const (
	credentialContext = "farego-cred-v1"
	codeContext       = "farego-code-v1"
)

// Profile is the rider's fare profile.
type Profile uint8

// The rider profiles of version 1; other values are reserved.
const (
	Adult   Profile = 0
	Child   Profile = 1
	Senior  Profile = 2
	Student Profile = 3
)

var profileNames = [...]string{"adult", "child", "senior", "student"}

// String returns the profile's name, or "reserved(N)".
func (p Profile) String() string {
	if int(p) < len(profileNames) {
		return profileNames[p]
	}
	return fmt.Sprintf("reserved(%d)", uint8(p))
}

// Valid reports whether p is one of the version 1 profiles.
func (p Profile) Valid() bool { return int(p) < len(profileNames) }

// ParseProfile returns the profile with the given name ("adult", "child",
// "senior", "student").
func ParseProfile(s string) (Profile, error) {
	for i, n := range profileNames {
		if n == s {
			return Profile(i), nil
		}
	}
	return 0, fmt.Errorf("%w: unknown rider profile %q", ErrInvalidField, s)
}

// Credential is the part of a code issued online by the settlement server:
// who the rider is, for how long, and the rider's public key, all signed by
// an issuer key.
type Credential struct {
	KeyID     uint32 // issuer key id
	Account   uint64 // account id
	Serial    uint32 // credential serial, per account, increasing
	NotBefore uint32 // unix seconds
	NotAfter  uint32 // unix seconds
	Profile   Profile
	Flags     uint16 // 0 in version 1, ignored by readers
	RiderKey  [ed25519.PublicKeySize]byte
	Signature [ed25519.SignatureSize]byte
}

// ValidFrom returns NotBefore as a time.
func (c *Credential) ValidFrom() time.Time { return time.Unix(int64(c.NotBefore), 0).UTC() }

// ValidUntil returns NotAfter as a time.
func (c *Credential) ValidUntil() time.Time { return time.Unix(int64(c.NotAfter), 0).UTC() }

// marshal writes the credential into b (CredentialSize bytes).
func (c *Credential) marshal(b []byte) {
	_ = b[CredentialSize-1]
	b[0] = Version
	binary.BigEndian.PutUint32(b[1:], c.KeyID)
	binary.BigEndian.PutUint64(b[5:], c.Account)
	binary.BigEndian.PutUint32(b[13:], c.Serial)
	binary.BigEndian.PutUint32(b[17:], c.NotBefore)
	binary.BigEndian.PutUint32(b[21:], c.NotAfter)
	b[25] = byte(c.Profile)
	binary.BigEndian.PutUint16(b[26:], c.Flags)
	copy(b[28:60], c.RiderKey[:])
	copy(b[60:124], c.Signature[:])
}

// Bytes returns the 124-byte binary form of the credential.
func (c *Credential) Bytes() []byte {
	b := make([]byte, CredentialSize)
	c.marshal(b)
	return b
}

// signedPart returns the message the issuer signs: "farego-cred-v1" ‖ bytes 0..59.
func credentialMessage(b []byte) []byte {
	return append([]byte(credentialContext), b[:60]...)
}

// IssueCredential fills in c.Signature with the issuer's signature and
// returns the 124-byte credential. The issuer key must be the one with id
// c.KeyID (see [IssuerKey]).
func IssueCredential(issuer ed25519.PrivateKey, c Credential) ([]byte, error) {
	if len(issuer) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: issuer private key is %d bytes", ErrBadKey, len(issuer))
	}
	if !c.Profile.Valid() {
		return nil, fmt.Errorf("%w: rider profile %d is reserved", ErrInvalidField, c.Profile)
	}
	if c.NotAfter <= c.NotBefore {
		return nil, fmt.Errorf("%w: not after (%d) must be later than not before (%d)", ErrInvalidField, c.NotAfter, c.NotBefore)
	}
	if c.Flags != 0 {
		return nil, fmt.Errorf("%w: flags must be 0 in version 1", ErrInvalidField)
	}
	b := make([]byte, CredentialSize)
	c.marshal(b)
	copy(b[60:], ed25519.Sign(issuer, credentialMessage(b)))
	return b, nil
}

// ParseCredential reads a 124-byte credential. It checks the size and
// version only; signatures are checked by [Verifier].
func ParseCredential(b []byte) (Credential, error) {
	var c Credential
	if len(b) != CredentialSize {
		return c, fmt.Errorf("%w: credential is %d bytes, want %d", ErrMalformed, len(b), CredentialSize)
	}
	if b[0] != Version {
		return c, fmt.Errorf("%w: credential version %d", ErrUnsupportedVersion, b[0])
	}
	c.KeyID = binary.BigEndian.Uint32(b[1:])
	c.Account = binary.BigEndian.Uint64(b[5:])
	c.Serial = binary.BigEndian.Uint32(b[13:])
	c.NotBefore = binary.BigEndian.Uint32(b[17:])
	c.NotAfter = binary.BigEndian.Uint32(b[21:])
	c.Profile = Profile(b[25])
	c.Flags = binary.BigEndian.Uint16(b[26:])
	copy(c.RiderKey[:], b[28:60])
	copy(c.Signature[:], b[60:124])
	return c, nil
}

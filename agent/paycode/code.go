package paycode

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// TextPrefix starts the text form of every version 1 code.
const TextPrefix = "FG1:"

// Code is a parsed payment code: a credential plus the rider's offline part.
type Code struct {
	Credential
	Time     uint32 // code time, unix seconds
	Counter  uint16 // increments per code shown
	RiderSig [ed25519.SignatureSize]byte
	raw      [CodeSize]byte
}

// Bytes returns the code's 194-byte binary form.
func (c *Code) Bytes() []byte { return append([]byte(nil), c.raw[:]...) }

// CredentialBytes returns the 124-byte credential inside the code.
func (c *Code) CredentialBytes() []byte { return append([]byte(nil), c.raw[:CredentialSize]...) }

// Text returns the code's text form ("FG1:" + Base45).
func (c *Code) Text() string { return EncodeText(c.raw[:]) }

// Issued returns the code time as a time.
func (c *Code) Issued() time.Time { return time.Unix(int64(c.Time), 0).UTC() }

// ID identifies this exact code: account, credential serial, code time and
// counter. Two taps with the same ID are the same code shown twice.
type ID struct {
	Account uint64
	Serial  uint32
	Time    uint32
	Counter uint16
}

// ID returns the code's identity.
func (c *Code) ID() ID {
	return ID{Account: c.Account, Serial: c.Serial, Time: c.Time, Counter: c.Counter}
}

// Key returns a compact 18-byte binary form of the ID, for use as a map or
// database key.
func (id ID) Key() []byte {
	b := make([]byte, 0, 18)
	b = binary.BigEndian.AppendUint64(b, id.Account)
	b = binary.BigEndian.AppendUint32(b, id.Serial)
	b = binary.BigEndian.AppendUint32(b, id.Time)
	return binary.BigEndian.AppendUint16(b, id.Counter)
}

// IDFromKey reads an ID back from its Key form; ok is false when key is
// not 18 bytes.
func IDFromKey(key []byte) (id ID, ok bool) {
	if len(key) != 18 {
		return ID{}, false
	}
	return ID{Account: binary.BigEndian.Uint64(key), Serial: binary.BigEndian.Uint32(key[8:]),
		Time: binary.BigEndian.Uint32(key[12:]), Counter: binary.BigEndian.Uint16(key[16:])}, true
}

// ShortHash returns the first 12 hex digits of SHA-256 of a code's text: enough
// to correlate log lines, useless for paying. Log this, never the code.
func ShortHash(text string) string {
	h := sha256.Sum256([]byte(text))
	return hex.EncodeToString(h[:6])
}

func codeMessage(b []byte) []byte {
	return append([]byte(codeContext), b[:130]...)
}

// MakeCode builds and signs a code (the rider app's offline step) from a
// 124-byte credential, the rider's private key, the code time and counter.
// It returns the 194 bytes; see [EncodeText] for the text form.
func MakeCode(credential []byte, rider ed25519.PrivateKey, t time.Time, counter uint16) ([]byte, error) {
	if len(credential) != CredentialSize {
		return nil, fmt.Errorf("%w: credential is %d bytes, want %d", ErrMalformed, len(credential), CredentialSize)
	}
	if len(rider) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: rider private key is %d bytes", ErrBadKey, len(rider))
	}
	if credential[0] != Version {
		return nil, fmt.Errorf("%w: credential version %d", ErrUnsupportedVersion, credential[0])
	}
	if !rider.Public().(ed25519.PublicKey).Equal(ed25519.PublicKey(credential[28:60])) {
		return nil, fmt.Errorf("%w: rider key does not match the credential", ErrBadKey)
	}
	sec := t.Unix()
	if sec < 0 || sec > 0xffffffff {
		return nil, fmt.Errorf("%w: code time %v out of range", ErrInvalidField, t)
	}
	b := make([]byte, CodeSize)
	copy(b, credential)
	binary.BigEndian.PutUint32(b[124:], uint32(sec))
	binary.BigEndian.PutUint16(b[128:], counter)
	copy(b[130:], ed25519.Sign(rider, codeMessage(b)))
	return b, nil
}

// EncodeText returns the text form of a 194-byte code: "FG1:" + Base45.
func EncodeText(code []byte) string {
	return TextPrefix + Base45Encode(code)
}

// ParseCode reads a 194-byte code. It checks size and version only.
func ParseCode(b []byte) (*Code, error) {
	if len(b) != CodeSize {
		return nil, fmt.Errorf("%w: code is %d bytes, want %d", ErrMalformed, len(b), CodeSize)
	}
	cred, err := ParseCredential(b[:CredentialSize])
	if err != nil {
		return nil, err
	}
	c := &Code{Credential: cred}
	copy(c.raw[:], b)
	c.Time = binary.BigEndian.Uint32(b[124:])
	c.Counter = binary.BigEndian.Uint16(b[128:])
	copy(c.RiderSig[:], b[130:])
	return c, nil
}

// ParseText reads a code's text form. The text must be exactly "FG1:" +
// Base45 of 194 bytes, with no terminator or padding. Another format version
// ("FG2:" …) gives [ErrUnsupportedVersion]; anything else that is not a code
// gives [ErrMalformed].
func ParseText(text string) (*Code, error) {
	if !strings.HasPrefix(text, TextPrefix) {
		if len(text) >= 4 && text[0] == 'F' && text[1] == 'G' && text[2] >= '0' && text[2] <= '9' && text[3] == ':' {
			return nil, fmt.Errorf("%w: format %q", ErrUnsupportedVersion, text[:4])
		}
		return nil, fmt.Errorf("%w: missing %q prefix", ErrMalformed, TextPrefix)
	}
	body := text[len(TextPrefix):]
	if len(body) != Base45EncodedLen(CodeSize) {
		return nil, fmt.Errorf("%w: text is %d characters, want %d", ErrMalformed, len(text), TextSize)
	}
	b, err := Base45Decode(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return ParseCode(b)
}

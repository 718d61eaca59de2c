package paycode

import (
	"bytes"
	"cmp"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/farego/farego/queue/durable"
)

// MaxKeyringFileSize bounds a keyring file; a real one is a few hundred bytes
// per key.
const MaxKeyringFileSize = 1 << 20

// Key is one issuer public key a validator trusts, with its validity window.
type Key struct {
	ID        uint32
	Public    ed25519.PublicKey
	NotBefore time.Time
	NotAfter  time.Time
}

// Keyring is a versioned set of issuer public keys. It is immutable once
// made and safe for concurrent use.
type Keyring struct {
	version uint64
	keys    []Key // sorted by id
}

// NewKeyring checks the keys (unique ids, 32-byte public keys, a non-empty
// window) and returns a keyring.
func NewKeyring(version uint64, keys []Key) (*Keyring, error) {
	ks := make([]Key, len(keys))
	copy(ks, keys)
	slices.SortFunc(ks, func(a, b Key) int { return cmp.Compare(a.ID, b.ID) })
	for i, k := range ks {
		if len(k.Public) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: key %d: public key is %d bytes, want %d", ErrKeyring, k.ID, len(k.Public), ed25519.PublicKeySize)
		}
		if !k.NotAfter.After(k.NotBefore) {
			return nil, fmt.Errorf("%w: key %d: not_after %s is not after not_before %s", ErrKeyring, k.ID,
				k.NotAfter.Format(time.RFC3339), k.NotBefore.Format(time.RFC3339))
		}
		if i > 0 && ks[i-1].ID == k.ID {
			return nil, fmt.Errorf("%w: key id %d appears twice", ErrKeyring, k.ID)
		}
		ks[i].Public = slices.Clone(k.Public)
	}
	return &Keyring{version: version, keys: ks}, nil
}

// Version returns the keyring's version. A device refuses a keyring older
// than the one it has.
func (k *Keyring) Version() uint64 { return k.version }

// Keys returns a copy of the keys, sorted by id.
func (k *Keyring) Keys() []Key {
	out := make([]Key, len(k.keys))
	for i, key := range k.keys {
		out[i] = key
		out[i].Public = slices.Clone(key.Public)
	}
	return out
}

// ValidAt reports whether a key of the keyring verifies codes at now,
// within its window give or take the policy's skew, as VerifyCode takes
// it: false when every key has ended (a device shelved, or offline past a
// key rotation) or none has begun, and every code would be refused.
func (k *Keyring) ValidAt(now time.Time, p Policy) bool {
	if k == nil {
		return false
	}
	_, skew := p.seconds()
	t := now.Unix()
	for _, key := range k.keys {
		if t >= key.NotBefore.Unix()-skew && t <= key.NotAfter.Unix()+skew {
			return true
		}
	}
	return false
}

// Len returns how many keys the keyring holds.
func (k *Keyring) Len() int {
	if k == nil {
		return 0
	}
	return len(k.keys)
}

// Span returns when the keyring's first key becomes valid and its last
// ends: zero times for an empty keyring. Keys may leave gaps between them;
// ValidAt tells whether one holds a given time.
func (k *Keyring) Span() (from, to time.Time) {
	for i, key := range k.keys {
		if i == 0 || key.NotBefore.Before(from) {
			from = key.NotBefore
		}
		if key.NotAfter.After(to) {
			to = key.NotAfter
		}
	}
	return from, to
}

// ValidUntil returns the end of the unbroken run of key windows that
// holds now: the latest end of a key valid at now, carried on by each key
// that begins before the run ends (a renewed key not active yet). Zero if
// no key is valid at now. From then on every code is refused, unless a
// newer keyring arrives; a key that begins after a gap does not count.
func (k *Keyring) ValidUntil(now time.Time) time.Time {
	if k == nil {
		return time.Time{}
	}
	var until time.Time
	for _, key := range k.keys {
		if !now.Before(key.NotBefore) && !now.After(key.NotAfter) && key.NotAfter.After(until) {
			until = key.NotAfter
		}
	}
	if until.IsZero() {
		return until
	}
	for range k.keys { // each pass that extends it ends at another key's end
		extended := false
		for _, key := range k.keys {
			if !key.NotBefore.After(until) && key.NotAfter.After(until) {
				until, extended = key.NotAfter, true
			}
		}
		if !extended {
			break
		}
	}
	return until
}

// Lookup returns the key with the given id.
func (k *Keyring) Lookup(id uint32) (Key, bool) {
	if k == nil {
		return Key{}, false
	}
	i, ok := slices.BinarySearchFunc(k.keys, id, func(key Key, id uint32) int { return cmp.Compare(key.ID, id) })
	if !ok {
		return Key{}, false
	}
	return k.keys[i], true
}

// keyringFile is the JSON form of DESIGN.md's keyring file.
type keyringFile struct {
	Version *uint64       `json:"version"`
	Keys    []keyringJSON `json:"keys"`
}

type keyringJSON struct {
	ID        *uint32 `json:"id"`
	PublicKey string  `json:"public_key"`
	NotBefore string  `json:"not_before"`
	NotAfter  string  `json:"not_after"`
}

// ParseKeyring reads the keyring JSON format:
//
//	{"version": N, "keys": [{"id": 7, "public_key": "<64 hex>",
//	  "not_before": "RFC 3339", "not_after": "RFC 3339"}]}
//
// Unknown fields, a missing field, trailing data or an invalid key is an
// error that says where the problem is.
func ParseKeyring(data []byte) (*Keyring, error) {
	if len(data) > MaxKeyringFileSize {
		return nil, fmt.Errorf("%w: %d bytes is larger than the limit of %d", ErrKeyring, len(data), MaxKeyringFileSize)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f keyringFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKeyring, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrKeyring)
	}
	if f.Version == nil {
		return nil, fmt.Errorf("%w: missing \"version\"", ErrKeyring)
	}
	keys := make([]Key, 0, len(f.Keys))
	for i, kj := range f.Keys {
		if kj.ID == nil {
			return nil, fmt.Errorf("%w: keys[%d]: missing \"id\"", ErrKeyring, i)
		}
		pub, err := hex.DecodeString(kj.PublicKey)
		if err != nil || len(pub) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: keys[%d] (id %d): public_key must be %d hex digits", ErrKeyring, i, *kj.ID, 2*ed25519.PublicKeySize)
		}
		if err := CheckPublicKey(pub); err != nil {
			return nil, fmt.Errorf("%w: keys[%d] (id %d): %w", ErrKeyring, i, *kj.ID, err)
		}
		nb, err := time.Parse(time.RFC3339, kj.NotBefore)
		if err != nil {
			return nil, fmt.Errorf("%w: keys[%d] (id %d): not_before: want RFC 3339, got %q", ErrKeyring, i, *kj.ID, kj.NotBefore)
		}
		na, err := time.Parse(time.RFC3339, kj.NotAfter)
		if err != nil {
			return nil, fmt.Errorf("%w: keys[%d] (id %d): not_after: want RFC 3339, got %q", ErrKeyring, i, *kj.ID, kj.NotAfter)
		}
		keys = append(keys, Key{ID: *kj.ID, Public: pub, NotBefore: nb, NotAfter: na})
	}
	return NewKeyring(*f.Version, keys)
}

// MarshalJSON writes the keyring file format (see [ParseKeyring]).
func (k *Keyring) MarshalJSON() ([]byte, error) {
	v := k.version
	f := keyringFile{Version: &v, Keys: make([]keyringJSON, 0, len(k.keys))}
	for _, key := range k.keys {
		id := key.ID
		f.Keys = append(f.Keys, keyringJSON{
			ID:        &id,
			PublicKey: hex.EncodeToString(key.Public),
			NotBefore: key.NotBefore.UTC().Format(time.RFC3339),
			NotAfter:  key.NotAfter.UTC().Format(time.RFC3339),
		})
	}
	return json.MarshalIndent(f, "", "  ")
}

// LoadKeyring reads a keyring file.
func LoadKeyring(path string) (*Keyring, error) {
	f, err := os.Open(path)
	if err != nil {
		// Not an invalid keyring: none to read. *PathError names the file.
		return nil, fmt.Errorf("keyring: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxKeyringFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", ErrKeyring, path, err)
	}
	k, err := ParseKeyring(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// WriteFile writes the keyring file atomically: a temporary file in the same
// directory, fsync, rename, fsync of the directory. A crash leaves either the
// old file or the new one.
func (k *Keyring) WriteFile(path string) error {
	data, err := k.MarshalJSON()
	if err != nil {
		return err
	}
	return durable.WriteFile(path, append(data, '\n'), 0o644)
}

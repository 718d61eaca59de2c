// Package keys keeps the settlement server's secrets on disk and the issuer
// keyring derived from them.
//
// A key directory holds:
//
//	issuer-root.secret  32 random bytes (hex): every issuer key derives from it (0600)
//	fleet.key           the operator's fleet signing key, Ed25519 PKCS #8 PEM (0600)
//	fleet.pub           its public half, provisioned on every validator
//	operator.token      the bearer token of the operator API (0600)
//	broker.secret       derives the MQTT passwords of devices and servers (0600)
//	keyring.json        the issuer keyring: key ids, public keys, windows, version
//
// [Init] creates them and refuses to overwrite any. [Dir.Rotate] adds a new
// issuer key id, keeps the previous key valid long enough for the
// credentials it signed, and bumps the keyring version; the server then
// publishes the new keyring to the fleet. Nothing here logs a secret.
package keys

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/queue/durable"
	"github.com/farego/farego/sync/keyfile"
)

// File names inside a key directory.
const (
	RootFile     = "issuer-root.secret"
	FleetKeyFile = "fleet.key"
	FleetPubFile = "fleet.pub"
	TokenFile    = "operator.token"
	BrokerFile   = "broker.secret"
	KeyringFile  = "keyring.json"
)

// DefaultKeyValidity is how long a new issuer key may sign credentials.
const DefaultKeyValidity = 365 * 24 * time.Hour

// ErrExists is returned by Init when a key file already exists.
var ErrExists = errors.New("keys: key file already exists")

// ErrMissing is returned (wrapped) by Open when a key file is missing or unreadable.
var ErrMissing = errors.New("keys: key file missing or unreadable")

// Dir is an opened key directory.
type Dir struct {
	path   string
	root   []byte
	fleet  ed25519.PrivateKey
	token  string
	broker []byte

	mu      sync.Mutex
	keyring *paycode.Keyring
}

// InitOptions configure Init.
type InitOptions struct {
	// FleetKey, if set, is an existing fleet key file to use (e.g. made by
	// farego-provision init-fleet); it is copied into the directory.
	FleetKey string
	// Now and KeyValidity set the first issuer key's window (defaults:
	// time.Now, DefaultKeyValidity).
	Now         func() time.Time
	KeyValidity time.Duration
}

// Init creates a key directory: a random issuer root secret, a fleet key
// (or a copy of opts.FleetKey), an operator token, and a keyring with issuer
// key 1. It refuses to overwrite any existing file.
func Init(dir string, opts InitOptions) (*Dir, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.KeyValidity <= 0 {
		opts.KeyValidity = DefaultKeyValidity
	}
	// Durably, the directory and every file in it (the last SyncDir
	// below): a power cut after init must not take the keys back.
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	for _, f := range []string{RootFile, FleetKeyFile, FleetPubFile, TokenFile, BrokerFile, KeyringFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return nil, fmt.Errorf("%w: %s (remove the directory to start over: it holds the money's keys)", ErrExists, filepath.Join(dir, f))
		}
	}
	root, tok, brk := make([]byte, paycode.SecretSize), make([]byte, 32), make([]byte, 32)
	for _, b := range [][]byte{root, tok, brk} {
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
	}
	var fleet ed25519.PrivateKey
	if opts.FleetKey != "" {
		k, err := keyfile.ReadPrivate(opts.FleetKey)
		if err != nil {
			return nil, err
		}
		fleet = k
	} else {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		fleet = k
	}
	if err := writeSecret(filepath.Join(dir, RootFile), hex.EncodeToString(root)+"\n"); err != nil {
		return nil, err
	}
	if err := keyfile.WritePrivate(filepath.Join(dir, FleetKeyFile), fleet); err != nil {
		return nil, err
	}
	if err := keyfile.WritePublic(filepath.Join(dir, FleetPubFile), fleet.Public().(ed25519.PublicKey)); err != nil {
		return nil, err
	}
	if err := writeSecret(filepath.Join(dir, TokenFile), hex.EncodeToString(tok)+"\n"); err != nil {
		return nil, err
	}
	if err := writeSecret(filepath.Join(dir, BrokerFile), hex.EncodeToString(brk)+"\n"); err != nil {
		return nil, err
	}
	k1, err := paycode.IssuerKey(root, 1)
	if err != nil {
		return nil, err
	}
	now := opts.Now().UTC().Truncate(time.Second)
	kr, err := paycode.NewKeyring(1, []paycode.Key{{ID: 1, Public: k1.Public().(ed25519.PublicKey),
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(opts.KeyValidity)}})
	if err != nil {
		return nil, err
	}
	if err := kr.WriteFile(filepath.Join(dir, KeyringFile)); err != nil {
		return nil, err
	}
	if err := durable.SyncDir(dir); err != nil {
		return nil, err
	}
	return Open(dir)
}

// writeSecret creates a secret file, owner-only, durably; it never
// overwrites one.
func writeSecret(path, content string) error {
	return durable.Create(path, []byte(content), 0o600)
}

func readSecret(path string, size int) ([]byte, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMissing, err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s is readable by others (mode %v): chmod 600 it", ErrMissing, path, info.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMissing, err)
	}
	b, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(b) != size {
		return nil, fmt.Errorf("%w: %s must hold %d hex digits", ErrMissing, path, 2*size)
	}
	return b, nil
}

// Open reads a key directory made by Init.
func Open(dir string) (*Dir, error) {
	root, err := readSecret(filepath.Join(dir, RootFile), paycode.SecretSize)
	if err != nil {
		return nil, err
	}
	tok, err := readSecret(filepath.Join(dir, TokenFile), 32)
	if err != nil {
		return nil, err
	}
	brk, err := readSecret(filepath.Join(dir, BrokerFile), 32)
	if err != nil {
		return nil, err
	}
	fleet, err := keyfile.ReadPrivate(filepath.Join(dir, FleetKeyFile))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMissing, err)
	}
	kr, err := paycode.LoadKeyring(filepath.Join(dir, KeyringFile))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMissing, err)
	}
	if err := checkDerived(root, kr); err != nil {
		return nil, fmt.Errorf("keys: %s: %w", KeyringFile, err)
	}
	return &Dir{path: dir, root: root, fleet: fleet, token: hex.EncodeToString(tok), broker: brk, keyring: kr}, nil
}

// Path returns the directory.
func (d *Dir) Path() string { return d.path }

// Fingerprint names this key set (its issuer root and fleet key) without
// telling anything of them: 32 hex digits of a hash of both. The ledger
// keeps the fingerprint of the key set it was made with, so a server
// started with another one (a second init on the same database) is
// refused instead of calling its riders' codes forged.
func (d *Dir) Fingerprint() string {
	h := sha256.New()
	h.Write([]byte("farego key set v1\x00"))
	h.Write(d.root)
	h.Write(d.FleetPublic())
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// FleetKey returns the fleet signing key.
func (d *Dir) FleetKey() ed25519.PrivateKey { return d.fleet }

// FleetPublic returns the fleet public key.
func (d *Dir) FleetPublic() ed25519.PublicKey { return d.fleet.Public().(ed25519.PublicKey) }

// BrokerSecret returns the secret the MQTT passwords derive from.
func (d *Dir) BrokerSecret() []byte { return d.broker }

// CheckToken reports whether tok is the operator token (in constant time).
func (d *Dir) CheckToken(tok string) bool {
	return subtle.ConstantTimeCompare([]byte(tok), []byte(d.token)) == 1
}

// Keyring returns the current issuer keyring.
func (d *Dir) Keyring() *paycode.Keyring {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.keyring
}

// DefaultKeyActivation is how long after a rotation the new issuer key
// starts signing credentials: the keyring is published at once, and a
// validator offline for up to a day (a bus in the depot) has it before it
// meets a credential of the new key.
const DefaultKeyActivation = 24 * time.Hour

// RenewBefore is how long before the newest issuer key's window ends the
// server rotates on its own (Dir.Due).
const RenewBefore = 30 * 24 * time.Hour

// Due reports whether the keyring needs a new issuer key at now: its
// newest key's window ends within RenewBefore (a key made a year ago), so
// that credentials never run out of a key to be signed with.
func (d *Dir) Due(now time.Time) bool {
	var newest *paycode.Key
	keys := d.Keyring().Keys()
	for i := range keys {
		if newest == nil || keys[i].ID > newest.ID {
			newest = &keys[i]
		}
	}
	return newest == nil || newest.NotAfter.Sub(now) < RenewBefore
}

// SigningKey returns the issuer key that signs new credentials at now: the
// newest key whose window holds now. A credential it signs must not
// outlive the key's window (KeyEnd).
func (d *Dir) SigningKey(now time.Time) (uint32, ed25519.PrivateKey, error) {
	kr := d.Keyring()
	var best *paycode.Key
	keys := kr.Keys()
	for i := range keys {
		k := &keys[i]
		if !now.Before(k.NotBefore) && now.Before(k.NotAfter) && (best == nil || k.ID > best.ID) {
			best = k
		}
	}
	if best == nil {
		return 0, nil, fmt.Errorf("keys: no issuer key is valid at %s: rotate", now.UTC().Format(time.RFC3339))
	}
	priv, err := paycode.IssuerKey(d.root, best.ID)
	return best.ID, priv, err
}

// KeyEnd returns the end of issuer key id's window (the zero time for a
// key the keyring does not hold).
func (d *Dir) KeyEnd(id uint32) time.Time {
	k, _ := d.Keyring().Lookup(id)
	return k.NotAfter
}

// Rotate adds issuer key max(id)+1, valid from now for validity, and cuts
// the older keys' windows to end at now + keep (long enough for the
// credentials they signed, e.g. the credential lifetime). It writes the new
// keyring (version + 1) atomically and returns it. A server with other
// instances rotates with [Dir.RotateShared].
func (d *Dir) Rotate(now time.Time, validity, keep time.Duration) (*paycode.Keyring, error) {
	kr, err := d.next(now, validity, keep, 0)
	if err != nil {
		return nil, err
	}
	if _, err := d.adopt(kr); err != nil {
		return nil, err
	}
	return kr, nil
}

// next is the keyring a rotation at now makes of the current one: the new
// key signs from now + activateIn (the keyring reaches the fleet first),
// the older keys sign until then and stay valid keep after it.
func (d *Dir) next(now time.Time, validity, keep, activateIn time.Duration) (*paycode.Keyring, error) {
	if validity <= 0 {
		validity = DefaultKeyValidity
	}
	cur := d.Keyring()
	now = now.UTC().Truncate(time.Second).Add(max(activateIn, 0).Truncate(time.Second))
	keys := cur.Keys()
	var next uint32 = 1
	for i, k := range keys {
		if k.ID >= next {
			next = k.ID + 1
		}
		if end := now.Add(keep); k.NotAfter.After(end) {
			keys[i].NotAfter = end
			if !keys[i].NotAfter.After(keys[i].NotBefore) {
				keys[i].NotAfter = keys[i].NotBefore.Add(time.Second)
			}
		}
	}
	priv, err := paycode.IssuerKey(d.root, next)
	if err != nil {
		return nil, err
	}
	keys = append(keys, paycode.Key{ID: next, Public: priv.Public().(ed25519.PublicKey), NotBefore: now.Add(-time.Minute), NotAfter: now.Add(validity)})
	return paycode.NewKeyring(cur.Version()+1, keys)
}

// adopt makes kr the directory's keyring, written to keyring.json, unless
// the current one is newer or the same; it reports whether it did. Every
// key of kr must derive from the directory's root secret.
func (d *Dir) adopt(kr *paycode.Keyring) (bool, error) {
	if err := checkDerived(d.root, kr); err != nil {
		return false, fmt.Errorf("keys: %w", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if kr.Version() < d.keyring.Version() || sameKeyring(kr, d.keyring) {
		return false, nil
	}
	if err := kr.WriteFile(filepath.Join(d.path, KeyringFile)); err != nil {
		return false, err
	}
	d.keyring = kr
	return true, nil
}

func sameKeyring(a, b *paycode.Keyring) bool {
	ja, err1 := a.MarshalJSON()
	jb, err2 := b.MarshalJSON()
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

// checkDerived makes sure every key of kr derives from root: a keyring of
// another installation would make every credential unverifiable.
func checkDerived(root []byte, kr *paycode.Keyring) error {
	for _, k := range kr.Keys() {
		priv, err := paycode.IssuerKey(root, k.ID)
		if err != nil || !priv.Public().(ed25519.PublicKey).Equal(k.Public) {
			return fmt.Errorf("issuer key %d of keyring version %d does not derive from %s", k.ID, kr.Version(), RootFile)
		}
	}
	return nil
}

// Shared is where the settlement instances of one ledger agree on the
// issuer keyring: the ledger (ledger.Store). StoreKeyring stores a version
// only if none as new is stored, and reports whether it did.
type Shared interface {
	LatestKeyring(ctx context.Context) (uint64, []byte, error)
	StoreKeyring(ctx context.Context, version uint64, keyring []byte) (bool, error)
}

// ErrRotationRace is returned by RotateShared when another rotation (on
// another instance, or a request beside this one) was stored first.
var ErrRotationRace = errors.New("keys: another rotation of the keyring was stored first")

// Sync brings the directory's keyring and the shared one together, and
// reports whether the directory's changed. A newer shared keyring (another
// instance rotated) becomes the directory's, checked (every key must
// derive from this root) and written to keyring.json; a shared keyring of
// the same version but other content is taken too (the shared one is the
// instances' reference). A newer keyring of the directory's own (the ledger
// was restored from a backup older than the key directory, or was made
// before keyrings were shared) is stored.
func (d *Dir) Sync(ctx context.Context, sh Shared) (bool, error) {
	for range 3 {
		v, body, err := sh.LatestKeyring(ctx)
		if err != nil {
			return false, err
		}
		cur := d.Keyring()
		if v < cur.Version() {
			b, err := cur.MarshalJSON()
			if err != nil {
				return false, err
			}
			stored, err := sh.StoreKeyring(ctx, cur.Version(), b)
			if err != nil || stored {
				return false, err
			}
			continue // a newer one was stored meanwhile: take it
		}
		kr, err := paycode.ParseKeyring(body)
		if err != nil {
			return false, fmt.Errorf("keys: the ledger's keyring (version %d): %w", v, err)
		}
		if kr.Version() != v {
			return false, fmt.Errorf("keys: the ledger's keyring of version %d says version %d", v, kr.Version())
		}
		return d.adopt(kr)
	}
	return false, errors.New("keys: the ledger's keyring changed three times while it was read")
}

// RotateShared is Rotate for a server with other instances, whose new key
// signs only from now + activateIn (0: at once): the keyring goes to the
// fleet at once, and validators that were offline get it before they meet
// a credential of the new key. It takes the shared keyring first, stores the rotated one there (the first of two
// rotations at once wins; the other gets ErrRotationRace and changes
// nothing), then writes it to the directory. The other instances take it
// at their next Sync.
func (d *Dir) RotateShared(ctx context.Context, sh Shared, now time.Time, validity, keep, activateIn time.Duration) (*paycode.Keyring, error) {
	if _, err := d.Sync(ctx, sh); err != nil {
		return nil, err
	}
	kr, err := d.next(now, validity, keep, activateIn)
	if err != nil {
		return nil, err
	}
	b, err := kr.MarshalJSON()
	if err != nil {
		return nil, err
	}
	stored, err := sh.StoreKeyring(ctx, kr.Version(), b)
	if err != nil {
		return nil, err
	}
	if !stored {
		d.Sync(ctx, sh) // best effort: the caller sees the race either way
		return nil, fmt.Errorf("%w (the keyring is at version %d): look at it before rotating again", ErrRotationRace, d.Keyring().Version())
	}
	// Stored: it is the keyring now, whatever happens to the file (a
	// failed write is taken again from the ledger at the next Sync).
	if _, err := d.adopt(kr); err != nil {
		return nil, err
	}
	return kr, nil
}

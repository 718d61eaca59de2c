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
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/farego/farego/agent/paycode"
	"github.com/farego/farego/agent/record"
	"github.com/farego/farego/queue/durable"
	"github.com/farego/farego/sync/keyfile"
	"golang.org/x/crypto/hkdf"
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
	broker []byte

	mu      sync.Mutex
	keyring *paycode.Keyring

	// Logger, if set, is where a token file that cannot be read is said
	// (see CheckToken); slog's default otherwise.
	Logger *slog.Logger

	// The operator token, as the file held it when last read, and when
	// the file was last looked at (see CheckToken).
	tokMu      sync.Mutex
	token      string
	tokFile    os.FileInfo
	tokChecked time.Time
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
	if !info.Mode().IsRegular() {
		// A FIFO read waits for a writer: every token check (each
		// bearer request, each console sign-in) hung on one.
		return nil, fmt.Errorf("%w: %s is not a regular file (%v)", ErrMissing, path, info.Mode().Type())
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
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		// Not "(or --keys)": only some commands take that flag (run and
		// restored say so themselves).
		return nil, fmt.Errorf("%w: no key directory %s: check --data", ErrMissing, dir)
	}
	root, err := readSecret(filepath.Join(dir, RootFile), paycode.SecretSize)
	if err != nil {
		return nil, err
	}
	// The token file's identity before its content: replaced in between
	// (token revoke init while this server starts), the next CheckToken
	// sees a file other than the one noted and reads it again. Noted
	// after, the old token would pass for the file's until it changed
	// again, and the new one be refused.
	tokInfo, err := os.Stat(filepath.Join(dir, TokenFile))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMissing, err)
	}
	tok, err := readSecret(filepath.Join(dir, TokenFile), 32)
	if err != nil {
		return nil, err
	}
	if afterTokenRead != nil {
		afterTokenRead()
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
	return &Dir{path: dir, root: root, fleet: fleet, token: hex.EncodeToString(tok), tokFile: tokInfo, tokChecked: time.Now(),
		broker: brk, keyring: kr}, nil
}

// afterTokenRead, if set (by tests only), is called by Open once it has
// read the operator token.
var afterTokenRead func()

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

// TokenRecheck is how often CheckToken looks at the operator token file.
const TokenRecheck = time.Second

// CheckToken reports whether tok is the operator token (in constant time).
// The file is looked at again at most once every TokenRecheck, and read
// again when it changed: a token replaced (ReplaceToken, farego-settlement
// token revoke init) stops working on a running server within a second. A
// file that cannot be read then (removed, made readable by others, not 64
// hex digits) lets no operator token in until it can: the server's log
// says why once.
func (d *Dir) CheckToken(tok string) bool {
	cur := d.currentToken()
	return cur != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(cur)) == 1
}

// TokenFingerprint is a short digest (16 hex digits of its SHA-256) of
// an operator token: what a console session signed in with the operator
// token file keeps, to end when the file holds another token.
func TokenFingerprint(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:8])
}

// CurrentTokenFingerprint is TokenFingerprint of the operator token the
// file holds now (as CheckToken reads it), "" if it cannot be read.
func (d *Dir) CurrentTokenFingerprint() string {
	cur := d.currentToken()
	if cur == "" {
		return ""
	}
	return TokenFingerprint(cur)
}

func (d *Dir) currentToken() string {
	d.tokMu.Lock()
	defer d.tokMu.Unlock()
	if time.Since(d.tokChecked) < TokenRecheck {
		return d.token
	}
	d.tokChecked = time.Now()
	path := filepath.Join(d.path, TokenFile)
	info, err := os.Stat(path)
	if err == nil && d.tokFile != nil && os.SameFile(info, d.tokFile) && info.ModTime().Equal(d.tokFile.ModTime()) &&
		info.Size() == d.tokFile.Size() && info.Mode() == d.tokFile.Mode() {
		return d.token
	}
	tok, err := readSecret(path, 32)
	if err != nil {
		if d.token != "" {
			log := d.Logger
			if log == nil {
				log = slog.Default()
			}
			log.Error("keys: the operator token file cannot be read: no operator token is taken until it can", "err", err)
		}
		d.token, d.tokFile = "", nil
		return ""
	}
	d.token, d.tokFile = hex.EncodeToString(tok), info
	return d.token
}

// ReplaceToken writes a new operator token into the key directory dir,
// atomically and durably (the old one stops working on a server using dir
// within a second: CheckToken), and returns the file's path. The token is
// not returned: it is read from the file, as init's.
func ReplaceToken(dir string) (string, error) {
	path := filepath.Join(dir, TokenFile)
	if _, err := readSecret(path, 32); err != nil {
		return "", fmt.Errorf("%w (is %s a server's key directory?)", err, dir)
	}
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		return "", err
	}
	// The new file is the old one's owner's: run as root (a plain sudo,
	// not sudo -u the service's user), it was root's, 0600, which the
	// service cannot read: no operator token was taken at all.
	if err := durable.WriteFileKeepOwner(path, []byte(hex.EncodeToString(tok)+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("keys: replace %s: %w", path, err)
	}
	return path, nil
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
	kr, err := d.next(now, validity, keep, 0, 0)
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
// the older keys sign until then and stay valid keep after it. Its version
// is the current one's next, or above fleet. The new key signs no later
// than the older keys' windows end (at once if none holds now): a delay
// running past them left a time in which no key signed a credential and
// validators held none valid, every rider refused (a 720 h activation
// with the key ending in 10 days; the renewal at the start of a server
// that was off for weeks, its key ending within the 24 h delay).
func (d *Dir) next(now time.Time, validity, keep, activateIn time.Duration, fleet uint64) (*paycode.Keyring, error) {
	if validity <= 0 {
		validity = DefaultKeyValidity
	}
	cur := d.Keyring()
	keys := cur.Keys()
	now = now.UTC().Truncate(time.Second)
	if at, end := now.Add(max(activateIn, 0).Truncate(time.Second)), coveredUntil(keys, now); at.After(end) {
		now = end
	} else {
		now = at
	}
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
	if fleet > cur.Version()+MaxFleetKeyringAhead {
		fleet = 0 // a false report (a validator's, revoke it), not lost rotations
	}
	return paycode.NewKeyring(max(cur.Version(), fleet)+1, keys)
}

// SignsFrom returns when the newest key of kr (the one a rotation made)
// starts signing credentials (SigningKey): its activation.
func SignsFrom(kr *paycode.Keyring) time.Time {
	var newest *paycode.Key
	keys := kr.Keys()
	for i := range keys {
		if newest == nil || keys[i].ID > newest.ID {
			newest = &keys[i]
		}
	}
	if newest == nil {
		return time.Time{}
	}
	return newest.NotBefore.Add(time.Minute) // next makes it valid a minute before
}

// coveredUntil returns until when, from at, the windows of keys hold
// every instant without a break (at itself if none holds at).
func coveredUntil(keys []paycode.Key, at time.Time) time.Time {
	until := at
	for range keys { // each pass that extends it ends at another key's end
		extended := false
		for _, k := range keys {
			if !k.NotBefore.After(until) && k.NotAfter.After(until) {
				until, extended = k.NotAfter, true
			}
		}
		if !extended {
			break
		}
	}
	return until
}

// MaxFleetKeyringAhead bounds how far above the current keyring a
// validator's reported keyring version lifts a rotation's
// (RotateShared): lost rotations are a few; a version further ahead
// is a false report and is not followed.
const MaxFleetKeyringAhead = 1000

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
// issuer keyring: the ledger (ledger.Store). KeyringAtMost returns the
// newest stored keyring of version at most most (0 and nil: none);
// StoreKeyring stores a version only if none as new is stored, and reports
// whether it did. What is stored is sealed by the issuer root (seal): a
// row written into the database by anyone else is not taken.
type Shared interface {
	KeyringAtMost(ctx context.Context, most uint64) (uint64, []byte, error)
	StoreKeyring(ctx context.Context, version uint64, keyring []byte) (bool, error)
	// FleetVersion is the highest version of a device document (here
	// record.DocKeyring) a validator not revoked reports applied.
	FleetVersion(ctx context.Context, kind string) (uint64, string, error)
}

// ErrRotationRace is returned by RotateShared when another rotation (on
// another instance, or a request beside this one) was stored first.
var ErrRotationRace = errors.New("keys: another rotation of the keyring was stored first")

// ErrForgedKeyring is returned (wrapped) by RotateShared while the ledger
// holds a keyring not sealed by this directory's root at or above the
// version a rotation would store.
var ErrForgedKeyring = errors.New("keys: the ledger holds an issuer keyring this installation did not seal")

// maxForged bounds how many unauthenticated keyrings Sync passes over
// looking for the newest sealed one.
const maxForged = 16

// SyncResult is what Sync did: whether the directory's keyring changed,
// and the versions of keyrings in the ledger it refused (not sealed by
// this installation's issuer root: someone wrote them into the database),
// newest first.
type SyncResult struct {
	Changed bool
	Refused []uint64
	// Unsealed is how many of Refused were stored without a seal: by an
	// instance of a release before keyrings were sealed (its own keyring,
	// which it seals again once upgraded), or by someone else.
	Unsealed int
}

// sealedKeyring is a keyring as the ledger stores it: its JSON and an
// HMAC-SHA256 of that JSON under a key derived from the issuer root. Only
// a holder of the root (a settlement instance) can make one: a keyring
// the database holds is not believed because it is there. A keyring of
// valid public keys is no secret; what the seal stops is a database
// writer choosing the windows and version the fleet gets (every window
// ended at a version no rotation can pass: every rider refused
// everywhere).
type sealedKeyring struct {
	Keyring json.RawMessage `json:"keyring"`
	Seal    string          `json:"seal"`
}

// sealInfo is the HKDF info of the sealing key (HKDF-SHA256 of the issuer
// root, empty salt, 32 bytes).
const sealInfo = "farego keyring seal v1"

func (d *Dir) sealMAC(body []byte) []byte {
	key := make([]byte, sha256.Size)
	if _, err := io.ReadFull(hkdf.New(sha256.New, d.root, nil, []byte(sealInfo)), key); err != nil {
		panic("keys: hkdf: " + err.Error()) // 32 bytes of HKDF-SHA256 cannot fail
	}
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return m.Sum(nil)
}

// seal returns kr as the ledger stores it.
func (d *Dir) seal(kr *paycode.Keyring) ([]byte, error) {
	body, err := kr.MarshalJSON()
	if err != nil {
		return nil, err
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, body); err != nil {
		return nil, err
	}
	return json.Marshal(sealedKeyring{Keyring: compact.Bytes(), Seal: hex.EncodeToString(d.sealMAC(compact.Bytes()))})
}

// open returns the keyring of version v the ledger stored as body, if this
// directory's root sealed it and its keys derive from the root. A keyring
// stored before keyrings were sealed (plain keyring JSON: plain) is taken
// only if it is the directory's own.
func (d *Dir) open(v uint64, body []byte) (kr *paycode.Keyring, plain bool, err error) {
	var sk sealedKeyring
	if err := json.Unmarshal(body, &sk); err != nil || sk.Keyring == nil {
		kr, err := paycode.ParseKeyring(body)
		if err == nil && sameKeyring(kr, d.Keyring()) && kr.Version() == v {
			return kr, true, nil
		}
		return nil, true, fmt.Errorf("keys: the ledger's keyring version %d is not sealed", v)
	}
	mac, err := hex.DecodeString(sk.Seal)
	if err != nil || !hmac.Equal(mac, d.sealMAC(sk.Keyring)) {
		return nil, false, fmt.Errorf("keys: the ledger's keyring version %d is not sealed by this installation's %s", v, RootFile)
	}
	if kr, err = paycode.ParseKeyring(sk.Keyring); err != nil {
		return nil, false, fmt.Errorf("keys: the ledger's keyring (version %d): %w", v, err)
	}
	if kr.Version() != v {
		return nil, false, fmt.Errorf("keys: the ledger's keyring of version %d says version %d", v, kr.Version())
	}
	if err := checkDerived(d.root, kr); err != nil {
		return nil, false, fmt.Errorf("keys: %w", err)
	}
	return kr, false, nil
}

// ledgerKeyrings is what latest read of the ledger's keyrings.
type ledgerKeyrings struct {
	newest *paycode.Keyring // the newest the directory can take (nil: none)
	plain  bool             // newest was stored before keyrings were sealed
	SyncResult
}

// latest reads the newest keyring in sh this directory can take, and the
// versions above it that it refused, newest first.
func (d *Dir) latest(ctx context.Context, sh Shared) (ledgerKeyrings, error) {
	var lk ledgerKeyrings
	most := uint64(math.MaxInt64)
	for range maxForged {
		v, body, err := sh.KeyringAtMost(ctx, most)
		if err != nil || v == 0 {
			return lk, err
		}
		kr, plain, err := d.open(v, body)
		if err == nil {
			lk.newest, lk.plain = kr, plain
			return lk, nil
		}
		lk.Refused = append(lk.Refused, v)
		if plain {
			lk.Unsealed++
		}
		most = v - 1
	}
	return lk, fmt.Errorf("%w: %d of them, versions %d down to %d", ErrForgedKeyring, len(lk.Refused), lk.Refused[0], lk.Refused[len(lk.Refused)-1])
}

// Sync brings the directory's keyring and the shared one together. The
// newest keyring in the ledger this installation sealed, if newer (another
// instance rotated), becomes the directory's, written to keyring.json; one
// of the same version but other content is taken too (the shared one is
// the instances' reference). A newer keyring of the directory's own (the
// ledger was restored from a backup older than the key directory, or was
// made before keyrings were shared) is stored. Keyrings in the ledger not
// sealed by this root are passed over and reported: the directory's
// keyring stays what it was. The directory's own keyring stored before
// keyrings were sealed is stored again sealed, as the next version (the
// same keys): an instance that had not taken it yet takes that.
func (d *Dir) Sync(ctx context.Context, sh Shared) (SyncResult, error) {
	for range 3 {
		lk, err := d.latest(ctx, sh)
		res := lk.SyncResult
		if err != nil {
			return res, err
		}
		cur := d.Keyring()
		if lk.newest != nil && lk.plain && len(lk.Refused) == 0 {
			kr, err := paycode.NewKeyring(cur.Version()+1, cur.Keys())
			if err != nil {
				return res, err
			}
			stored, err := d.store(ctx, sh, kr)
			if err != nil {
				return res, err
			}
			if stored {
				res.Changed, err = d.adopt(kr)
				return res, err
			}
			continue // another instance sealed it first: take that
		}
		if lk.newest == nil || lk.newest.Version() < cur.Version() {
			stored, err := d.store(ctx, sh, cur)
			if err != nil || stored {
				return res, err
			}
			if len(lk.Refused) > 0 {
				return res, nil // a refused row's version is at least ours
			}
			continue // a newer one was stored meanwhile: take it
		}
		res.Changed, err = d.adopt(lk.newest)
		return res, err
	}
	return SyncResult{}, errors.New("keys: the ledger's keyring changed three times while it was read")
}

// store seals kr and stores it in sh, reporting whether it was stored.
func (d *Dir) store(ctx context.Context, sh Shared, kr *paycode.Keyring) (bool, error) {
	b, err := d.seal(kr)
	if err != nil {
		return false, err
	}
	return sh.StoreKeyring(ctx, kr.Version(), b)
}

// RotateShared is Rotate for a server with other instances, whose new key
// signs only from now + activateIn (0: at once): the keyring goes to the
// fleet at once, and validators that were offline get it before they meet
// a credential of the new key. It takes the shared keyring first — if
// another instance rotated since this one last looked, that rotation is
// the one asked for: ErrRotationRace — then stores the rotated one there
// (the first of two rotations at once wins; the other gets
// ErrRotationRace and changes nothing), then writes it to the directory.
// The other instances take it at their next Sync.
//
// The new keyring's version is also above the highest one validators
// report applied (Shared.FleetVersion): after a restore of both the ledger
// and the key directory, the fleet may hold a keyring of a rotation made
// after the backup; the next one under the same version would be taken
// for it (or refused as older) and never reach the buses, and credentials
// of its new key would be refused on every one.
func (d *Dir) RotateShared(ctx context.Context, sh Shared, now time.Time, validity, keep, activateIn time.Duration) (*paycode.Keyring, error) {
	fleet, _, err := sh.FleetVersion(ctx, record.DocKeyring)
	if err != nil {
		return nil, err
	}
	res, err := d.Sync(ctx, sh)
	if err != nil {
		return nil, err
	}
	if res.Changed {
		// Another instance rotated since this one last looked (within a
		// poll): its rotation is the one asked for, as when two are
		// stored at once.
		return nil, fmt.Errorf("%w (the keyring is at version %d): look at it before rotating again", ErrRotationRace, d.Keyring().Version())
	}
	kr, err := d.next(now, validity, keep, activateIn, fleet)
	if err != nil {
		return nil, err
	}
	if len(res.Refused) > 0 && res.Refused[0] >= kr.Version() {
		if res.Unsealed > 0 {
			return nil, fmt.Errorf("%w (version %d, stored without a seal: by an instance not yet upgraded, which seals it again when it is, or by someone else): "+
				"no rotation can be stored above it (README, Key rotation)", ErrForgedKeyring, res.Refused[0])
		}
		return nil, fmt.Errorf("%w (version %d): no rotation can be stored above it; remove it (README, Key rotation)", ErrForgedKeyring, res.Refused[0])
	}
	stored, err := d.store(ctx, sh, kr)
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

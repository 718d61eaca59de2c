// Package release keeps the validator software releases the operator
// publishes and the rollout that tells the fleet which one to run.
//
// Releases are files under a directory (DATA/releases), not ledger rows:
// binaries are large, and a release is written once.
//
//	VERSION/ARCH/binary         the validator binary
//	VERSION/ARCH/manifest.json  its manifest (wire.Manifest: version, arch, size, SHA-256, date)
//	VERSION/ARCH/manifest.sig   the fleet key's signature of manifest.json
//	rollout.json                the current rollout (version, devices, percent, sequence)
//
// [Store.Add] streams a binary in (bounded), hashes it, signs its manifest
// with the fleet key and writes everything durably; a version and
// architecture is written once. [Store.SetRollout] checks the stored
// manifests against the fleet key and bumps the rollout sequence;
// [Store.Document] is the wire.DocRelease downlink's body, which the
// server's publisher sends to the fleet retained. [Store.ServeBinary]
// serves a binary with HTTP Range support (resumable downloads: one range
// a request, a header of several is ignored).
//
// The binaries are served without authentication: they hold no secret,
// and a device installs one only if its size and SHA-256 are those of a
// manifest signed with the fleet key. Several settlement instances must
// share the directory (or each be given the same releases).
package release

import (
	"cmp"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/farego/farego/queue/durable"
	"github.com/farego/farego/sync/wire"
)

// File names inside a release directory.
const (
	BinaryFile   = "binary"
	ManifestFile = "manifest.json"
	SigFile      = "manifest.sig"
	RolloutFile  = "rollout.json"
)

// ErrExists is returned by Add for a version and architecture already
// published.
var ErrExists = errors.New("release: already published")

// ErrNotFound is returned for a release that is not published.
var ErrNotFound = errors.New("release: not published")

// ErrInvalid is returned (wrapped) for a bad version, architecture,
// binary or rollout.
var ErrInvalid = errors.New("invalid release")

// ErrDamaged is returned (wrapped, with ErrInvalid) by SetRollout for a
// stored binary whose size or SHA-256 is no longer its manifest's: the
// file was changed on disk after Add, and every device would download it
// and refuse it.
var ErrDamaged = errors.New("release: binary damaged on disk")

// Release is one published binary.
type Release struct {
	wire.Manifest
}

// Rollout is the current rollout as the operator set it.
type Rollout struct {
	Seq            uint64    `json:"seq"` // the downlink version: bumped by every SetRollout
	Version        string    `json:"version"`
	Devices        []string  `json:"devices,omitempty"`
	Percent        int       `json:"percent"`
	AllowDowngrade bool      `json:"allow_downgrade,omitempty"`
	At             time.Time `json:"at"`
}

// Store is a release directory.
type Store struct {
	dir string
	key ed25519.PrivateKey
	mu  sync.Mutex // serializes writes within this process
}

// Open returns the store in dir (created on the first Add) signing with
// the fleet key.
func Open(dir string, fleetKey ed25519.PrivateKey) *Store {
	return &Store{dir: dir, key: fleetKey}
}

func (s *Store) relDir(version, arch string) string { return filepath.Join(s.dir, version, arch) }

// Add reads a binary from r (at most wire.MaxBinarySize bytes), signs its
// manifest and stores both. It refuses a binary that is not a Go program
// for linux and arch (see checkBinary), a version and architecture that
// exist, a version stored under another spelling ("v1.4.0" beside
// "1.4.0": they compare equal), and more than wire.MaxRolloutBuilds
// architectures of a version (a rollout carries them all). A build added
// to the version being rolled out moves the rollout's sequence number, so
// that devices take the new document.
func (s *Store) Add(r io.Reader, version, arch string, now time.Time) (rel *Release, err error) {
	if err := wire.ValidVersion(version); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := wire.ValidArch(arch); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := checkArch(arch); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	dir := s.relDir(version, arch)
	if _, err := os.Stat(filepath.Join(dir, SigFile)); err == nil {
		return nil, fmt.Errorf("%w: %s for %s", ErrExists, version, arch)
	}
	if err := s.checkRoom(version); err != nil {
		return nil, err
	}
	if err := durable.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil { // leave no empty directory to be taken for a stored version
			os.Remove(dir)
			os.Remove(filepath.Dir(dir))
			os.Remove(s.dir) // made for this build, if nothing else is in it
		}
	}()
	removeDeadTemps(dir)
	tmp, err := os.CreateTemp(dir, tempPattern)
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	// Locked while written: removeDeadTemps passes it over meanwhile (on
	// a file system without flock neither locks, and nothing is removed).
	_ = syscall.Flock(int(tmp.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, wire.MaxBinarySize+1))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	if n == 0 || n > wire.MaxBinarySize {
		return nil, fmt.Errorf("%w: binary of %d bytes (1 to %d)", ErrInvalid, n, wire.MaxBinarySize)
	}
	if err := checkBinary(tmp.Name(), version, arch); err != nil {
		return nil, err
	}
	m := &wire.Manifest{Version: version, Arch: arch, Size: n, SHA256: hex.EncodeToString(h.Sum(nil)), Date: now.UTC().Truncate(time.Second)}
	mb, sig, err := wire.SignManifest(m, s.key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := durable.Rename(tmp.Name(), filepath.Join(dir, BinaryFile)); err != nil {
		return nil, err
	}
	if err := durable.WriteFile(filepath.Join(dir, ManifestFile), mb, 0o644); err != nil {
		return nil, err
	}
	// The signature last: a release is published once it is there.
	if err := durable.WriteFile(filepath.Join(dir, SigFile), sig, 0o644); err != nil {
		return nil, err
	}
	if ro, err := s.Rollout(); err == nil && ro != nil && ro.Version == version {
		ro.Seq++
		if err := s.writeRollout(ro); err != nil {
			return nil, err
		}
	}
	return &Release{*m}, nil
}

// checkRoom refuses a new build of version when another spelling of it is
// stored or it has wire.MaxRolloutBuilds builds already.
func (s *Store) checkRoom(version string) error {
	versions, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, v := range versions {
		if c, ok := wire.CompareVersions(v.Name(), version); v.IsDir() && ok && c == 0 && v.Name() != version {
			return fmt.Errorf("%w: %s is stored as %s", ErrExists, version, v.Name())
		}
	}
	archs, err := os.ReadDir(filepath.Join(s.dir, version))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	n := 0
	for _, a := range archs {
		if _, err := os.Stat(filepath.Join(s.dir, version, a.Name(), SigFile)); err == nil {
			n++
		}
	}
	if n >= wire.MaxRolloutBuilds {
		return fmt.Errorf("%w: %s has %d architectures already, the most a rollout carries", ErrInvalid, version, n)
	}
	return nil
}

// tempPattern names the copy of a binary Add writes before its checks.
const tempPattern = ".binary.tmp*"

// deadTempAge is how long a copy must have gone unwritten before
// removeDeadTemps takes an unlocked one for dead.
const deadTempAge = time.Minute

// removeDeadTemps removes the copies in dir that Adds killed mid-way
// left: a power cut or a kill (SIGKILL, Ctrl-C of farego-settlement
// release add, the server stopped during an upload) runs no deferred
// removal, and each left up to wire.MaxBinarySize there for good — also
// keeping the directory of a release never stored. A copy still being
// written is locked (flock) by its Add, in this process or another (the
// CLI beside the server's API), and is passed over; a dead one's lock
// went with its process. A copy written to within deadTempAge is passed
// over too: one just made by another Add, not locked yet, is not taken
// for dead.
func removeDeadTemps(dir string) {
	names, _ := filepath.Glob(filepath.Join(dir, tempPattern))
	for _, name := range names {
		if info, err := os.Stat(name); err != nil || time.Since(info.ModTime()) < deadTempAge {
			continue
		}
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			os.Remove(name)
		}
		f.Close()
	}
}

// manifest reads and checks a stored manifest.
func (s *Store) manifest(version, arch string) (mb, sig []byte, m *wire.Manifest, err error) {
	if wire.ValidVersion(version) != nil || wire.ValidArch(arch) != nil {
		return nil, nil, nil, fmt.Errorf("%w: %s for %s", ErrNotFound, version, arch)
	}
	dir := s.relDir(version, arch)
	if sig, err = os.ReadFile(filepath.Join(dir, SigFile)); errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil, fmt.Errorf("%w: %s for %s", ErrNotFound, version, arch)
	} else if err != nil {
		return nil, nil, nil, err
	}
	if mb, err = os.ReadFile(filepath.Join(dir, ManifestFile)); err != nil {
		return nil, nil, nil, err
	}
	m, err = wire.VerifyManifest(mb, sig, s.key.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: stored manifest of %s for %s: %w", ErrInvalid, version, arch, err)
	}
	if m.Version != version || m.Arch != arch {
		return nil, nil, nil, fmt.Errorf("%w: stored manifest of %s for %s names %s for %s", ErrInvalid, version, arch, m.Version, m.Arch)
	}
	return mb, sig, m, nil
}

// List returns the published releases, newest version first.
func (s *Store) List() ([]Release, error) {
	versions, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Release
	for _, v := range versions {
		if !v.IsDir() || wire.ValidVersion(v.Name()) != nil {
			continue
		}
		archs, err := os.ReadDir(filepath.Join(s.dir, v.Name()))
		if err != nil {
			return nil, err
		}
		for _, a := range archs {
			if _, _, m, err := s.manifest(v.Name(), a.Name()); err == nil {
				out = append(out, Release{*m})
			}
		}
	}
	slices.SortFunc(out, func(a, b Release) int {
		if c, _ := wire.CompareVersions(b.Version, a.Version); c != 0 {
			return c
		}
		return cmp.Compare(a.Arch, b.Arch)
	})
	return out, nil
}

// Rollout returns the current rollout (nil if none).
func (s *Store) Rollout() (*Rollout, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, RolloutFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var r Rollout
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrInvalid, RolloutFile, err)
	}
	return &r, nil
}

// SetRollout makes version the release the fleet should run: the devices
// listed and the percent of the fleet chosen by wire.RolloutBucket. Every
// architecture published for version goes out; the manifests are checked
// against the fleet key first, and, unless it reaches no device (a stop),
// each stored binary against its manifest (ErrDamaged): a binary changed
// on disk after Add went out, and the operator learnt of it only from
// every device's failed update.
func (s *Store) SetRollout(version string, devices []string, percent int, allowDowngrade bool, now time.Time) (*Rollout, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev, err := s.Rollout()
	if err != nil {
		return nil, err
	}
	r := &Rollout{Seq: 1, Version: version, Devices: devices, Percent: percent, AllowDowngrade: allowDowngrade, At: now.UTC().Truncate(time.Second)}
	if prev != nil {
		r.Seq = prev.Seq + 1
	}
	if _, err := s.document(r); err != nil {
		return nil, err
	}
	if percent > 0 || len(devices) > 0 { // a stop (nobody) installs nothing: always allowed
		if err := s.checkStored(version); err != nil {
			return nil, err
		}
	}
	if err := s.writeRollout(r); err != nil {
		return nil, err
	}
	return r, nil
}

// checkStored checks each stored binary of version (with a verified
// manifest) against its manifest's size and SHA-256.
func (s *Store) checkStored(version string) error {
	archs, err := os.ReadDir(filepath.Join(s.dir, version))
	if err != nil {
		return err
	}
	for _, a := range archs {
		_, _, m, err := s.manifest(version, a.Name())
		if errors.Is(err, ErrNotFound) {
			continue // being added
		}
		if err != nil {
			return err
		}
		name := filepath.Join(s.relDir(version, a.Name()), BinaryFile)
		f, err := os.Open(name)
		if err != nil {
			return fmt.Errorf("%w: %w: %s for %s: %w (remove %s and release add it again)", ErrInvalid, ErrDamaged, version, a.Name(), err, filepath.Dir(name))
		}
		sum, err := m.Sum(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s for %s: read %s: %w", version, a.Name(), name, err)
		}
		if !m.Matches(sum) {
			size := fmt.Sprintf("%d bytes with SHA-256 %.16s…", sum.Size, sum.SHA256)
			if sum.Size > m.Size {
				size = fmt.Sprintf("more than %d bytes", m.Size) // read no further
			}
			return fmt.Errorf("%w: %w: %s for %s: %s is %s, its signed manifest says %d bytes with %.16s…: "+
				"the file changed on disk after release add, and every device would download it and refuse it; nothing rolled out "+
				"(remove %s and release add the binary again)",
				ErrInvalid, ErrDamaged, version, a.Name(), name, size, m.Size, m.SHA256, filepath.Dir(name))
		}
	}
	return nil
}

// writeRollout stores the current rollout durably.
func (s *Store) writeRollout(r *Rollout) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := durable.MkdirAll(s.dir, 0o755); err != nil {
		return err
	}
	return durable.WriteFile(filepath.Join(s.dir, RolloutFile), append(b, '\n'), 0o644)
}

// document builds the downlink body of a rollout.
func (s *Store) document(r *Rollout) ([]byte, error) {
	if err := wire.ValidVersion(r.Version); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	archs, err := os.ReadDir(filepath.Join(s.dir, r.Version))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s (release add it first)", ErrNotFound, r.Version)
	}
	if err != nil {
		return nil, err
	}
	w := &wire.Rollout{Version: r.Version, Devices: r.Devices, Percent: r.Percent, AllowDowngrade: r.AllowDowngrade}
	for _, a := range archs {
		if !a.IsDir() {
			continue
		}
		mb, sig, _, err := s.manifest(r.Version, a.Name())
		if errors.Is(err, ErrNotFound) {
			continue // being added
		}
		if err != nil {
			return nil, err
		}
		w.Builds = append(w.Builds, wire.Build{Manifest: mb, Signature: sig})
	}
	if len(w.Builds) == 0 {
		return nil, fmt.Errorf("%w: %s has no build", ErrNotFound, r.Version)
	}
	b, err := w.Marshal()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return b, nil
}

// Document returns the rollout downlink (its version and body), or
// version 0 when there is no rollout.
func (s *Store) Document() (uint64, []byte, error) {
	r, err := s.Rollout()
	if err != nil || r == nil {
		return 0, nil, err
	}
	b, err := s.document(r)
	if err != nil {
		return 0, nil, err
	}
	return r.Seq, b, nil
}

// ServeBinary serves the binary of release version for arch (an HTTP
// Range request of one range included; several are served whole), or 404.
func (s *Store) ServeBinary(w http.ResponseWriter, r *http.Request, version, arch string) {
	_, _, m, err := s.manifest(version, arch)
	if err != nil {
		http.Error(w, "no such release", http.StatusNotFound)
		return
	}
	f, err := os.Open(filepath.Join(s.relDir(version, arch), BinaryFile))
	if err != nil {
		http.Error(w, "no such release", http.StatusNotFound)
		return
	}
	defer f.Close()
	if strings.Contains(r.Header.Get("Range"), ",") {
		// One range at most, which a validator resuming its download
		// asks for (bytes=N-). The binaries are anyone's to download,
		// and 3,500 one-byte ranges in one header made a multipart
		// answer of 500 KB that took 45 ms of CPU (the whole 10 MB,
		// sent from the file, takes 10): several are served as none.
		r = r.Clone(r.Context())
		r.Header.Del("Range")
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("ETag", `"`+m.SHA256+`"`)
	http.ServeContent(w, r, "", m.Date, f)
}

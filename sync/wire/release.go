package wire

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/mod/semver"

	"github.com/farego/farego/agent/record"
)

// DocRelease is the kind of the fleet downlink that announces a software
// rollout (PREFIX/fleet/release, retained). Its body is a Rollout (JSON).
// It is not in record.DocKinds: the device hands it to its updater, not to
// the agent's state.
const DocRelease = "release"

// Limits of release documents.
const (
	// MaxManifestSize bounds a manifest.
	MaxManifestSize = 4 << 10
	// MaxRolloutSize bounds a rollout document.
	MaxRolloutSize = 192 << 10
	// MaxRolloutDevices bounds a rollout's device list (a canary list: use
	// Percent for the fleet).
	MaxRolloutDevices = 2000
	// MaxRolloutBuilds bounds the architectures of one rollout.
	MaxRolloutBuilds = 8
	// MaxBinarySize bounds a release binary.
	MaxBinarySize = 256 << 20
)

// releaseSigContext starts the message a manifest signature covers.
const releaseSigContext = "farego-release-v1"

// Manifest describes one release binary: a version for one architecture.
// The operator signs it with the fleet key; the device installs a binary
// only if its size and SHA-256 are the manifest's and the manifest's
// signature verifies with the fleet public key.
type Manifest struct {
	Version string    `json:"version"` // semantic version, "1.4.0" or "v1.4.0-rc.1"
	Arch    string    `json:"arch"`    // armv7, arm64, amd64, …
	Size    int64     `json:"size"`    // bytes
	SHA256  string    `json:"sha256"`  // hex, lower case
	Date    time.Time `json:"date"`    // when the operator published it
}

var archRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_]{0,15}$`)

// ValidVersion checks a release version: a semantic version (with or
// without the leading "v"), at most 64 bytes.
func ValidVersion(v string) error {
	if len(v) == 0 || len(v) > 64 || !semver.IsValid(canonical(v)) {
		return fmt.Errorf("%w: release version %q is not a semantic version (like 1.4.0)", ErrMalformed, cut(v, 80))
	}
	return nil
}

// ValidArch checks an architecture name (lower-case letters, digits and
// "_", up to 16).
func ValidArch(a string) error {
	if !archRE.MatchString(a) {
		return fmt.Errorf("%w: architecture %q", ErrMalformed, a)
	}
	return nil
}

// devVersionRE is what a development build's version may look like: "dev"
// (a build without the Makefile's LDFLAGS) or what `git describe --tags
// --always --dirty` gives (a tag, commits since, a commit hash, "-dirty").
var devVersionRE = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$`)

// ValidSoftwareVersion checks the version a device reports of the software
// it runs (Status.Software): a release version (ValidVersion), or a
// development build's, which need not be one: 1 to 64 bytes of ASCII
// letters, digits, ".", "_", "+" and "-", beginning with a letter or a
// digit. Only release versions can be ordered (CompareVersions).
func ValidSoftwareVersion(v string) error {
	if ValidVersion(v) == nil || devVersionRE.MatchString(v) {
		return nil
	}
	return fmt.Errorf("%w: software version %q is neither a release version (like 1.4.0) nor a development build's "+
		"(up to 64 letters, digits, '.', '_', '+' and '-')", ErrMalformed, cut(v, 80))
}

// cut shortens s to at most n bytes for an error message (%q shows what
// is not printable).
func cut(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func canonical(v string) string {
	if !strings.HasPrefix(v, "v") {
		return "v" + v
	}
	return v
}

// CompareVersions compares two release versions as semantic versions: -1,
// 0 or +1. ok is false when either is not one (a development build,
// "dev"): then they cannot be ordered.
func CompareVersions(a, b string) (cmp int, ok bool) {
	ca, cb := canonical(a), canonical(b)
	if !semver.IsValid(ca) || !semver.IsValid(cb) {
		return 0, false
	}
	return semver.Compare(ca, cb), true
}

// A BinarySum is what a binary read against its manifest came to: how
// many bytes were read (at most one past the manifest's size: a longer
// binary is not read to its end) and their SHA-256 in hex.
type BinarySum struct {
	Size   int64
	SHA256 string
}

// Sum reads a binary from r, at most one byte past m.Size, for Matches.
// The server checks a stored binary with it before rolling it out, the
// device its download before installing it.
func (m *Manifest) Sum(r io.Reader) (BinarySum, error) {
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(r, m.Size+1))
	if err != nil {
		return BinarySum{Size: n}, err
	}
	return BinarySum{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// Matches reports whether s is the binary m describes: its size and its
// SHA-256.
func (m *Manifest) Matches(s BinarySum) bool {
	return s.Size == m.Size && s.SHA256 == m.SHA256
}

func (m *Manifest) validate() error {
	if err := ValidVersion(m.Version); err != nil {
		return err
	}
	if err := ValidArch(m.Arch); err != nil {
		return err
	}
	if m.Size <= 0 || m.Size > MaxBinarySize {
		return fmt.Errorf("%w: manifest size %d (1 to %d bytes)", ErrMalformed, m.Size, MaxBinarySize)
	}
	if b, err := hex.DecodeString(m.SHA256); err != nil || len(b) != sha256.Size || strings.ToLower(m.SHA256) != m.SHA256 {
		return fmt.Errorf("%w: manifest sha256 %q", ErrMalformed, m.SHA256)
	}
	if m.Date.IsZero() {
		return fmt.Errorf("%w: manifest without a date", ErrMalformed)
	}
	return nil
}

// Marshal checks the manifest and encodes it (JSON).
func (m *Manifest) Marshal() ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, err
	}
	return json.Marshal(m)
}

// strictJSON decodes exactly one JSON value into v, refusing unknown
// fields and trailing data.
func strictJSON(p []byte, v any, what string) error {
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrMalformed, what, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: %s: trailing data", ErrMalformed, what)
	}
	return nil
}

// ParseManifest decodes a manifest strictly.
func ParseManifest(p []byte) (*Manifest, error) {
	if len(p) > MaxManifestSize {
		return nil, fmt.Errorf("%w: manifest of %d bytes", ErrTooLarge, len(p))
	}
	var m Manifest
	if err := strictJSON(p, &m, "manifest"); err != nil {
		return nil, err
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

func manifestMessage(manifest []byte) []byte {
	return append([]byte(releaseSigContext), manifest...)
}

// SignManifest encodes m and signs it with the fleet key.
func SignManifest(m *Manifest, key ed25519.PrivateKey) (manifest, sig []byte, err error) {
	b, err := m.Marshal()
	if err != nil {
		return nil, nil, err
	}
	return b, ed25519.Sign(key, manifestMessage(b)), nil
}

// VerifyManifest checks a manifest's signature with the fleet public key,
// then decodes it.
func VerifyManifest(manifest, sig []byte, pub ed25519.PublicKey) (*Manifest, error) {
	if len(manifest) > MaxManifestSize {
		return nil, fmt.Errorf("%w: manifest of %d bytes", ErrTooLarge, len(manifest))
	}
	if len(pub) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize ||
		!ed25519.Verify(pub, manifestMessage(manifest), sig) {
		return nil, fmt.Errorf("%w: release manifest", ErrBadSignature)
	}
	return ParseManifest(manifest)
}

// Build is one signed manifest in a rollout.
type Build struct {
	Manifest  []byte `json:"manifest"`  // the manifest as signed (JSON, base64 in the rollout)
	Signature []byte `json:"signature"` // fleet signature of the manifest
}

// Rollout tells the fleet which release to run: the body of the
// DocRelease downlink. A device is in the rollout if its id is in Devices
// or its bucket (RolloutBucket) is below Percent; it then installs the
// build for its architecture. The downlink's own fleet signature makes
// AllowDowngrade the operator's word.
type Rollout struct {
	Version        string   `json:"version"`                   // the release version
	Builds         []Build  `json:"builds"`                    // one per architecture
	Devices        []string `json:"devices,omitempty"`         // device ids in the rollout
	Percent        int      `json:"percent,omitempty"`         // 0..100 of the fleet, by RolloutBucket
	AllowDowngrade bool     `json:"allow_downgrade,omitempty"` // devices on a newer version install it too
}

// Marshal checks the rollout and encodes it.
func (r *Rollout) Marshal() ([]byte, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxRolloutSize {
		return nil, fmt.Errorf("%w: rollout of %d bytes, limit %d (use a percentage, not a long device list)", ErrTooLarge, len(b), MaxRolloutSize)
	}
	return b, nil
}

func (r *Rollout) validate() error {
	if err := ValidVersion(r.Version); err != nil {
		return err
	}
	if len(r.Builds) == 0 || len(r.Builds) > MaxRolloutBuilds {
		return fmt.Errorf("%w: rollout with %d builds (1 to %d)", ErrMalformed, len(r.Builds), MaxRolloutBuilds)
	}
	if len(r.Devices) > MaxRolloutDevices {
		return fmt.Errorf("%w: rollout to %d listed devices, limit %d (use a percentage)", ErrTooLarge, len(r.Devices), MaxRolloutDevices)
	}
	for _, id := range r.Devices {
		if err := record.ValidDeviceID(id); err != nil {
			return fmt.Errorf("%w: rollout device: %w", ErrMalformed, err)
		}
	}
	if r.Percent < 0 || r.Percent > 100 {
		return fmt.Errorf("%w: rollout percent %d (0 to 100)", ErrMalformed, r.Percent)
	}
	for _, b := range r.Builds {
		if len(b.Manifest) > MaxManifestSize || len(b.Signature) != ed25519.SignatureSize {
			return fmt.Errorf("%w: rollout build", ErrMalformed)
		}
	}
	return nil
}

// ParseRollout decodes a rollout strictly. The manifests in it are not
// checked here: Build.Verify does, with the fleet key.
func ParseRollout(p []byte) (*Rollout, error) {
	if len(p) > MaxRolloutSize {
		return nil, fmt.Errorf("%w: rollout of %d bytes", ErrTooLarge, len(p))
	}
	var r Rollout
	if err := strictJSON(p, &r, "rollout"); err != nil {
		return nil, err
	}
	if err := r.validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// Includes reports whether a device is in the rollout.
func (r *Rollout) Includes(deviceID string) bool {
	return slices.Contains(r.Devices, deviceID) || RolloutBucket(r.Version, deviceID) < r.Percent
}

// For returns the verified manifest of the build for arch, whose version
// must be the rollout's.
func (r *Rollout) For(arch string, pub ed25519.PublicKey) (*Manifest, error) {
	for _, b := range r.Builds {
		m, err := VerifyManifest(b.Manifest, b.Signature, pub)
		if err != nil {
			return nil, err
		}
		if m.Arch != arch {
			continue
		}
		if m.Version != r.Version {
			return nil, fmt.Errorf("%w: a manifest of version %s in the rollout of %s", ErrMalformed, m.Version, r.Version)
		}
		return m, nil
	}
	return nil, &NoBuildError{Version: r.Version, Arch: arch}
}

// RolloutBucket places a device in 0..99 for a release's percentage
// rollout: stable for a device and version (raising the percentage keeps
// the devices already in), different from one release to the next (the
// same devices are not always first).
func RolloutBucket(version, deviceID string) int {
	h := sha256.Sum256([]byte("farego-rollout-v1\x00" + version + "\x00" + deviceID))
	return int(binary.BigEndian.Uint64(h[:8]) % 100)
}

// UpdateStatus is the device's report of its software update, in its
// status: the update waiting for its health check, and the last one that
// failed (rolled back or refused).
//
// Pending and Failed are release versions (ValidVersion: they come from a
// signed rollout and manifest). A reason and a time come only with a
// failed version; the reason is at most MaxFailedReason bytes of any text
// (the device's error: the server makes it printable and cuts it to what
// it keeps).
type UpdateStatus struct {
	Pending      string    `json:"pending,omitempty"`       // version installed, not yet confirmed healthy
	Failed       string    `json:"failed,omitempty"`        // version of the last failed update
	FailedReason string    `json:"failed_reason,omitempty"` // why, in a sentence
	FailedAt     time.Time `json:"failed_at,omitzero"`
}

// MaxFailedReason bounds UpdateStatus.FailedReason.
const MaxFailedReason = 1024

// check checks an update report as UpdateStatus describes it.
func (u *UpdateStatus) check() error {
	for _, v := range []struct{ name, v string }{{"pending", u.Pending}, {"failed", u.Failed}} {
		if v.v == "" {
			continue
		}
		if err := ValidVersion(v.v); err != nil {
			return fmt.Errorf("%s update: %w", v.name, err)
		}
	}
	if u.Failed == "" && (u.FailedReason != "" || !u.FailedAt.IsZero()) {
		return fmt.Errorf("%w: a failure reason or time without a failed version", ErrMalformed)
	}
	if len(u.FailedReason) > MaxFailedReason {
		return fmt.Errorf("%w: failure reason of %d bytes, limit %d", ErrMalformed, len(u.FailedReason), MaxFailedReason)
	}
	if !u.FailedAt.IsZero() && !validTime(u.FailedAt) {
		return fmt.Errorf("%w: failure time %v out of range", ErrMalformed, u.FailedAt)
	}
	return nil
}

// validTime reports whether t is after 1970 and within int64 nanoseconds
// (what the ledger stores).
func validTime(t time.Time) bool {
	return t.After(time.Unix(0, 0)) && !t.After(time.Unix(0, math.MaxInt64))
}

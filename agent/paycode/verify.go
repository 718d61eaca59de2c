package paycode

import (
	"container/list"
	"crypto/ed25519"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Reason is the stable, machine-readable reason a code was refused. The
// strings are API: logs, metrics, the check command and the server use them.
type Reason string

// The verification reasons, in the order they are checked. The agent adds
// its own (denied, duplicate, passback, …) after these.
const (
	ReasonMalformed              Reason = "malformed"
	ReasonUnsupportedVersion     Reason = "unsupported_version"
	ReasonUnknownIssuerKey       Reason = "unknown_issuer_key"
	ReasonBadCredentialSignature Reason = "bad_credential_signature"
	ReasonCredentialNotYetValid  Reason = "credential_not_yet_valid"
	ReasonCredentialExpired      Reason = "credential_expired"
	ReasonBadCodeSignature       Reason = "bad_code_signature"
	ReasonCodeFromFuture         Reason = "code_from_future"
	ReasonCodeExpired            Reason = "code_expired"
)

// Reasons lists every reason Verify can return, in checking order.
var Reasons = []Reason{
	ReasonMalformed, ReasonUnsupportedVersion, ReasonUnknownIssuerKey,
	ReasonBadCredentialSignature, ReasonCredentialNotYetValid, ReasonCredentialExpired,
	ReasonBadCodeSignature, ReasonCodeFromFuture, ReasonCodeExpired,
}

// Policy defaults.
const (
	DefaultMaxAge = 120 * time.Second
	DefaultSkew   = 30 * time.Second
)

// MaxPolicyAge and MaxPolicySkew bound a configured policy, the server's
// and the validators': "2h" for "120s" is a typo to refuse, not codes that
// pay for hours (a replaced secret deny-lists the passes that ended within
// the hour, longer than any skew allowed here).
const (
	MaxPolicyAge  = 10 * time.Minute
	MaxPolicySkew = 5 * time.Minute
)

// Policy sets how old a code may be and how much clock difference between
// phone, validator and issuer is tolerated. Durations are whole seconds
// (fractions are dropped). A zero field means its default; a negative Skew
// means no tolerance at all.
type Policy struct {
	MaxAge time.Duration // how long after its code time a code is accepted; default 120 s
	Skew   time.Duration // clock tolerance; default 30 s
}

// seconds returns the policy as whole seconds with defaults applied.
func (p Policy) seconds() (maxAge, skew int64) {
	maxAge, skew = int64(p.MaxAge/time.Second), int64(p.Skew/time.Second)
	if p.MaxAge <= 0 {
		maxAge = int64(DefaultMaxAge / time.Second)
	}
	switch {
	case p.Skew == 0:
		skew = int64(DefaultSkew / time.Second)
	case p.Skew < 0:
		skew = 0
	}
	return maxAge, skew
}

// Decision is the outcome of verifying one code.
type Decision struct {
	Accepted bool
	Reason   Reason // empty when accepted
	// Code is the parsed code, nil when it could not be parsed (malformed or
	// unsupported version). When Accepted is false its fields are unverified.
	Code *Code
}

// DefaultCacheSize is the number of credentials a [Verifier] remembers by
// default. An entry costs about 300 bytes.
const DefaultCacheSize = 4096

// Verifier checks codes. It remembers, per credential, that the issuer
// signature was valid, so a rider seen before costs one Ed25519 verification
// instead of two. It is safe for concurrent use.
//
// The cache is keyed by all 124 credential bytes (signature included) and
// the issuer public key that verified them: a credential with any byte
// changed, or checked against a different key, is verified afresh.
type Verifier struct {
	max int

	mu    sync.Mutex
	lru   *list.List // of *cacheEntry, front = most recent
	index map[string]*list.Element

	hits, misses atomic.Uint64
}

type cacheEntry struct {
	cred   string // the 124 credential bytes
	issuer [ed25519.PublicKeySize]byte
}

// NewVerifier returns a verifier caching up to cacheSize credentials: zero
// means [DefaultCacheSize], negative disables the cache.
func NewVerifier(cacheSize int) *Verifier {
	if cacheSize == 0 {
		cacheSize = DefaultCacheSize
	}
	v := &Verifier{max: cacheSize}
	if cacheSize > 0 {
		v.lru = list.New()
		v.index = make(map[string]*list.Element, min(cacheSize, 1024))
	}
	return v
}

// CacheStats returns the number of credential cache hits and misses so far.
func (v *Verifier) CacheStats() (hits, misses uint64) { return v.hits.Load(), v.misses.Load() }

// Verify checks a code text at time now against the keyring, in the order of
// the design; the first failure wins. See the package documentation for what
// acceptance means.
func Verify(text string, now time.Time, kr *Keyring, p Policy) Decision {
	return uncached.Verify(text, now, kr, p)
}

var uncached = NewVerifier(-1)

// Verify checks a code text at time now against the keyring; see the
// package-level [Verify].
func (v *Verifier) Verify(text string, now time.Time, kr *Keyring, p Policy) Decision {
	c, err := ParseText(text)
	if err != nil {
		if errors.Is(err, ErrUnsupportedVersion) {
			return Decision{Reason: ReasonUnsupportedVersion}
		}
		return Decision{Reason: ReasonMalformed}
	}
	return v.VerifyCode(c, now, kr, p)
}

// VerifyCode is Verify for an already parsed code.
func (v *Verifier) VerifyCode(c *Code, now time.Time, kr *Keyring, p Policy) Decision {
	maxAge, skew := p.seconds()
	t := now.Unix()
	reject := func(r Reason) Decision { return Decision{Reason: r, Code: c} }

	// 2. Issuer key known and within its window ± skew.
	key, ok := kr.Lookup(c.KeyID)
	if !ok || t < key.NotBefore.Unix()-skew || t > key.NotAfter.Unix()+skew {
		return reject(ReasonUnknownIssuerKey)
	}
	// 3. Issuer signature (cached per credential).
	if !v.credentialValid(c, key.Public) {
		return reject(ReasonBadCredentialSignature)
	}
	// 4. Credential validity window.
	if t+skew < int64(c.NotBefore) {
		return reject(ReasonCredentialNotYetValid)
	}
	if t > int64(c.NotAfter)+skew {
		return reject(ReasonCredentialExpired)
	}
	// 5. Rider signature.
	if !verifySig(c.RiderKey[:], codeMessage(c.raw[:]), c.RiderSig[:]) {
		return reject(ReasonBadCodeSignature)
	}
	// 6. Freshness.
	if int64(c.Time) > t+skew {
		return reject(ReasonCodeFromFuture)
	}
	if t > int64(c.Time)+maxAge {
		return reject(ReasonCodeExpired)
	}
	return Decision{Accepted: true, Code: c}
}

// RiderSigned reports whether the rider's key in the code's credential
// signed the code. It says nothing of the credential (whose issuer
// signature VerifyCode checks): a settlement server asks it of a code that
// failed on the credential's window, to tell a rider's own code shown at
// the wrong time from one a device made up around a credential it saw.
func (c *Code) RiderSigned() bool {
	return verifySig(c.RiderKey[:], codeMessage(c.raw[:]), c.RiderSig[:])
}

// credentialValid checks the issuer signature over the code's credential,
// consulting and filling the cache.
func (v *Verifier) credentialValid(c *Code, issuer ed25519.PublicKey) bool {
	cred := c.raw[:CredentialSize]
	if v.lru == nil {
		return verifySig(issuer, credentialMessage(cred), c.Signature[:])
	}
	v.mu.Lock()
	if e, ok := v.index[string(cred)]; ok {
		ce := e.Value.(*cacheEntry)
		if ed25519.PublicKey(ce.issuer[:]).Equal(issuer) {
			v.lru.MoveToFront(e)
			v.mu.Unlock()
			v.hits.Add(1)
			return true
		}
	}
	v.mu.Unlock()
	v.misses.Add(1)
	if !verifySig(issuer, credentialMessage(cred), c.Signature[:]) {
		return false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if e, ok := v.index[string(cred)]; ok {
		copy(e.Value.(*cacheEntry).issuer[:], issuer)
		v.lru.MoveToFront(e)
		return true
	}
	ce := &cacheEntry{cred: string(cred)}
	copy(ce.issuer[:], issuer)
	v.index[ce.cred] = v.lru.PushFront(ce)
	for v.lru.Len() > v.max {
		old := v.lru.Back()
		v.lru.Remove(old)
		delete(v.index, old.Value.(*cacheEntry).cred)
	}
	return true
}

package api

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/farego/farego/server/internal/clientaddr"
)

// limiter is a token bucket per client address, one per IPv6 site (the
// /48 around the client's /64) and one for everyone, refilling perMinute
// tokens a minute up to burst (a site: clientaddr.SiteShare times as
// many). It holds at most maxClients buckets (the fullest are dropped first: a full bucket
// is what a new one would be), so a flood of addresses cannot grow it.
type limiter struct {
	mu        sync.Mutex
	now       func() time.Time
	perMinute float64
	burst     float64
	total     bucket
	clients   buckets
	disabled  bool
	proxies   []netip.Prefix // see Config.TrustedProxies
}

type bucket struct {
	tokens         float64
	at             time.Time
	rate, capacity float64 // tokens a minute, and the most it holds
}

const maxClients = 10_000

func newLimiter(perMinute, burst, totalPerMinute int, now func() time.Time, proxies []netip.Prefix) *limiter {
	l := &limiter{now: now, perMinute: float64(perMinute), burst: float64(burst),
		clients: buckets{}, proxies: proxies}
	l.disabled = perMinute < 0 || burst < 0 || totalPerMinute < 0
	l.total = bucket{tokens: float64(totalPerMinute), at: now(), rate: float64(totalPerMinute), capacity: float64(totalPerMinute)}
	return l
}

// refill adds what the bucket earned since it was last looked at.
func (b *bucket) refill(now time.Time) {
	b.tokens = min(b.capacity, b.tokens+now.Sub(b.at).Minutes()*b.rate)
	b.at = now
}

// wait is how long until the bucket holds a token again.
func (b *bucket) wait() time.Duration {
	if b.rate <= 0 {
		return time.Minute
	}
	return time.Duration(max(1-b.tokens, 0) / b.rate * float64(time.Minute))
}

// buckets are a limiter's buckets by key.
type buckets map[string]*bucket

// get returns the bucket of key, refilled (a new one full).
func (m buckets) get(key string, now time.Time, rate, capacity float64) *bucket {
	b := m[key]
	if b == nil {
		b = &bucket{tokens: capacity, at: now, rate: rate, capacity: capacity}
		m[key] = b
	}
	b.refill(now)
	return b
}

// prune drops the buckets that have refilled (they are what a new bucket
// would be), or all of them if limit or more are left.
func (m buckets) prune(now time.Time, limit int) {
	for k, b := range m {
		if b.tokens+now.Sub(b.at).Minutes()*b.rate >= b.capacity {
			delete(m, k)
		}
	}
	if len(m) >= limit {
		clear(m)
	}
}

// allow reports whether a request from r may go ahead now. A request
// refused takes nothing from any bucket: a client over its limit (or its
// site's) does not use up everyone's, and its bucket stays full, the first
// to be dropped.
func (l *limiter) allow(r *http.Request) bool {
	if l.disabled {
		return true
	}
	addr := clientAddr(r, l.proxies)
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	// Room for the request's buckets (an address's and its site's) before
	// either is made: pruning between the two dropped the first, new and
	// full, and its token was taken from a bucket no longer kept.
	if len(l.clients) >= maxClients-1 {
		l.clients.prune(now, maxClients)
	}
	bs := []*bucket{l.clients.get(ClientKey(addr), now, l.perMinute, l.burst)}
	if site := clientaddr.Site(addr); site != "" {
		bs = append(bs, l.clients.get(site, now, l.perMinute*clientaddr.SiteShare, l.burst*clientaddr.SiteShare))
	}
	l.total.refill(now)
	bs = append(bs, &l.total)
	for _, b := range bs {
		if b.tokens < 1 {
			return false
		}
	}
	for _, b := range bs {
		b.tokens--
	}
	return true
}

// maxForwarded bounds the X-Forwarded-For entries read: a longer chain
// (or one padded by the client) is read from its nearest hops only.
const maxForwarded = 32

// clientAddr is the address a request is counted against: its peer, or,
// when the peer is a trusted proxy, the nearest address in X-Forwarded-For
// that is not one (read from the right: the entries to its left are the
// client's own to write). A malformed entry there stops the walk at the
// last trusted hop.
func clientAddr(r *http.Request, proxies []netip.Prefix) string {
	peer := r.RemoteAddr
	if len(proxies) == 0 || !trusted(peer, proxies) {
		return peer
	}
	// Walked from the right without splitting the whole header: a client
	// can pad it to the header limit (32 KiB of commas were 2.6 MB of
	// entries a request).
	values := r.Header.Values("X-Forwarded-For")
	read := 0
	for v := len(values) - 1; v >= 0; v-- {
		h := values[v]
		for {
			if read == maxForwarded {
				return peer
			}
			read++
			i := strings.LastIndexByte(h, ',')
			ip, err := netip.ParseAddr(strings.TrimSpace(h[i+1:]))
			if err != nil {
				return peer
			}
			if !trusted(ip.String(), proxies) {
				return ip.String()
			}
			peer = ip.String()
			if i < 0 {
				break
			}
			h = h[:i]
		}
	}
	return peer
}

// trusted reports whether the address (host or host:port) is in proxies.
func trusted(addr string, proxies []netip.Prefix) bool { return clientaddr.In(addr, proxies) }

// ClientKey is what a limit per client address counts a remote address
// (host or host:port) as (clientaddr.Key: an IPv4 address, or the /64 of
// an IPv6 one). The account-creation limit and the server's HTTP
// connection limit both count by it.
func ClientKey(remote string) string { return clientaddr.Key(remote) }

// DefaultMerchantPerMinute and DefaultMerchantBurst bound the payments and
// refunds one merchant API token (one till) makes: a busy till takes a
// sale every few seconds with bursts of a few a second (a queue at the
// counter, a retry storm after a network hiccup), never a thousand a
// minute. Without a bound a dishonest shop with a rider account of its own,
// or anyone holding a stolen till token, grew the ledger for free with
// pay-and-refund pairs (some 570 bytes a pair, as fast as the ledger
// writes), each a write the fleet's taps wait behind.
const (
	DefaultMerchantPerMinute = 120
	DefaultMerchantBurst     = 20
)

// maxTokenBuckets bounds the buckets a TokenLimiter keeps: one per API
// token that paid, refunded or signed in to the console lately (only
// tokens the ledger issued get this far; a made-up one is refused
// before).
const maxTokenBuckets = 10_000

// TokenLimiter is a token bucket per API token id, refilling perMinute a
// minute up to burst: the merchant tokens' payments and refunds here, the
// console's sign-ins there. A request refused takes nothing; a full bucket
// is dropped first (it is what a new one would be), so its memory is
// bounded by maxTokenBuckets whatever comes.
type TokenLimiter struct {
	mu        sync.Mutex
	now       func() time.Time
	perMinute float64
	burst     float64
	buckets   buckets
	disabled  bool
}

// NewTokenLimiter returns a TokenLimiter of perMinute a minute in bursts
// of burst; either below zero: no limit.
func NewTokenLimiter(perMinute, burst int, now func() time.Time) *TokenLimiter {
	return &TokenLimiter{now: now, perMinute: float64(perMinute), burst: float64(burst),
		buckets: buckets{}, disabled: perMinute < 0 || burst < 0}
}

// Allow takes one from key's bucket and reports true, or, when it is
// empty, reports false and how long until it holds one again.
func (l *TokenLimiter) Allow(key string) (bool, time.Duration) {
	if l.disabled {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	if _, ok := l.buckets[key]; !ok && len(l.buckets) >= maxTokenBuckets {
		l.buckets.prune(now, maxTokenBuckets)
	}
	b := l.buckets.get(key, now, l.perMinute, l.burst)
	if b.tokens < 1 {
		return false, b.wait()
	}
	b.tokens--
	return true, 0
}

// RetryAfter is a Retry-After header's value for d: whole seconds, at
// least 1.
func RetryAfter(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	return strconv.FormatInt(max(s, 1), 10)
}

package console

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/farego/farego/agent/fare"
)

// The fleet page's query: whatever comes in, a known state and sort, a
// bounded filter and page, and links that read back the same.
func FuzzFleetQuery(f *testing.F) {
	for _, s := range []string{"", "state=offline&sort=heard&dir=desc&page=3&q=bus", "state=x&sort=y&page=-1", "q=" + strings.Repeat("a", 100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q := parseFleetQuery(v)
		if len(q.Q) > 64 || q.Page < 1 {
			t.Fatalf("query %+v out of bounds", q)
		}
		if again := parseFleetQuery(q.values()); again != q {
			t.Fatalf("links read back %+v, want %+v", again, q)
		}
		q.apply([]deviceRow{{State: StateOnline}, {State: StateRevoked, Problems: []string{"x"}}})
	})
}

// A session cookie is 32 bytes in base64url or nothing.
func FuzzParseCookie(f *testing.F) {
	f.Add("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("")
	f.Add(strings.Repeat("_", 43))
	f.Fuzz(func(t *testing.T, v string) {
		secret, hash, err := parseCookie(v)
		if err != nil {
			return
		}
		if len(secret) != 32 || len(hash) != 32 {
			t.Fatalf("cookie %q gave a %d-byte secret", v, len(secret))
		}
	})
}

// The origin check passes only a same-host http(s) origin and a
// same-origin fetch.
func FuzzCheckOrigin(f *testing.F) {
	f.Add("http://console.example", "", "same-origin")
	f.Add("", "https://console.example/console/", "")
	f.Add("null", "http://evil.example/", "cross-site")
	f.Fuzz(func(t *testing.T, origin, referer, site string) {
		r, _ := http.NewRequest("POST", "http://console.example/console/act/x", nil)
		r.Header.Set("Origin", origin)
		r.Header.Set("Referer", referer)
		r.Header.Set("Sec-Fetch-Site", site)
		if checkOrigin(r) != nil {
			return
		}
		o := origin
		if o == "" || o == "null" {
			o = referer
		}
		u, err := url.Parse(o)
		if err != nil || u.Host != "console.example" || (site != "" && site != "same-origin") {
			t.Fatalf("passed: Origin %q Referer %q Sec-Fetch-Site %q", origin, referer, site)
		}
	})
}

// The fare preview lists what differs, and nothing when the tables are
// the same.
func FuzzDiffTables(f *testing.F) {
	f.Add(testFares, strings.Replace(testFares, `"version":1`, `"version":2`, 1))
	f.Add(testFares, `{"version":9,"currency":"USD","timezone":"UTC","fares":{"*":{"adult":1}}}`)
	f.Fuzz(func(t *testing.T, a, b string) {
		ta, err := fare.Parse([]byte(a))
		if err != nil {
			return
		}
		tb, err := fare.Parse([]byte(b))
		if err != nil {
			return
		}
		if d := diffTables(ta, ta); len(d) != 0 {
			t.Fatalf("a table differs from itself: %+v", d)
		}
		for _, c := range diffTables(ta, tb) {
			if c.Old == c.New {
				t.Fatalf("a change that changes nothing: %+v", c)
			}
		}
	})
}

func TestFleetQueryLongFilter(t *testing.T) {
	q := parseFleetQuery(url.Values{"q": {strings.Repeat("a", 63) + " b"}})
	if again := parseFleetQuery(q.values()); again != q {
		t.Fatalf("a filter cut at a space reads back %q, want %q", again.Q, q.Q)
	}
}

func TestFmtDur(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "0s", 850 * time.Millisecond: "850ms", 3800 * time.Millisecond: "3.8s",
		10 * time.Second: "10s", 5*time.Minute + 3*time.Second: "5m 3s", 5 * time.Minute: "5m", 2 * time.Hour: "2h",
		2*time.Hour + 5*time.Minute: "2h 5m", -45 * time.Second: "-45s", 50 * time.Hour: "2d 2h", 48 * time.Hour: "2d"} {
		if got := fmtDur(d); got != want {
			t.Errorf("fmtDur(%v) = %q, want %q", d, got, want)
		}
	}
}

// The tokens page's query: whatever comes in, a known role or none, a
// bounded cursor and merchant id, or a sentence saying what is wrong.
func FuzzTokensQuery(f *testing.F) {
	for _, s := range []string{"", "role=merchant&merchant=shop-1&in_force=1&after=abcd1234", "role=root", "after=" + strings.Repeat("a", 100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, bad := parseTokensQuery(v)
		if bad != "" {
			if !strings.HasPrefix(bad, "?") {
				t.Fatalf("refusal %q does not name the parameter", bad)
			}
			return
		}
		if len(q.After) > 64 || len(q.Merchant) > 256 || q.Limit != tokensPerPage || (q.Role != "" && !slices.Contains(tokenRoles, q.Role)) {
			t.Fatalf("query %+v out of bounds", q)
		}
	})
}

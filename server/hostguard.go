package server

import (
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/farego/farego/server/internal/clientaddr"
)

// hostGuard refuses a request whose Host names this server by a name it
// is not served under: the DNS rebinding guard. A page of any site whose
// name the attacker makes resolve, a moment after it loaded, to
// 127.0.0.1 (or to the monitoring network's address) is, to the browser,
// of the same origin as the server: it reads /metrics (every validator,
// its state and software), and its POSTs pass the cross-site check
// (Sec-Fetch-Site says same-origin), so POST /v1/accounts, which needs no
// login, made accounts from each visitor's address (an attack review did
// both through a loopback server, with Host: evil.example). The browser
// sends the attacker's name as Host; the names the server is served under
// are the allowed ones.
//
// Always allowed: an IP address (a page of that origin is the server's
// own), localhost and *.localhost (browsers resolve them to loopback
// themselves), and the names in allowed ("*": any). With allowed empty,
// a listener beyond loopback takes any name, as before (a server on
// 0.0.0.0 is reached by names this one cannot know: set --allowed-hosts
// to close it), and so does a request from a trusted proxy (it passes the
// name the rider's browser asked for, over TLS); a listener on loopback
// takes no other name from anyone else, since only this machine's browsers
// reach it, and they reach it by its address or as localhost. (Its trusted
// proxy, if any, is on this machine too, and so are those browsers, from
// the same address: the guard is off for them then, which newHostGuard
// warns of.)
type hostGuard struct {
	next    http.Handler
	names   map[string]bool // lower case, no port
	any     bool            // "*", or allowed empty beyond loopback
	proxies []netip.Prefix  // with allowed empty: their requests may name any host
	listen  string          // the listen address, for the message
	log     *slog.Logger

	mu     sync.Mutex
	logged time.Time // the last refusal logged: at most one a minute
}

func newHostGuard(next http.Handler, allowed []string, listen string, proxies []netip.Prefix, log *slog.Logger) *hostGuard {
	g := &hostGuard{next: next, names: map[string]bool{}, listen: listen, log: log}
	for _, n := range allowed {
		if n == "*" {
			g.any = true
		}
		g.names[strings.ToLower(strings.TrimSuffix(n, "."))] = true
	}
	if len(allowed) == 0 {
		g.any = !onLoopback(listen)
		g.proxies = proxies
		if !g.any && slices.ContainsFunc(proxies, func(p netip.Prefix) bool {
			return slices.ContainsFunc(loopbackPeers(listen), p.Contains)
		}) {
			// A loopback listener is reached only from this machine: its
			// trusted proxy is here, and so is every browser that
			// reaches it, from the same address. The proxy's any name
			// is then every page's any name, and a rebound page read
			// /metrics and made accounts as if there were no guard.
			log.Warn("the DNS rebinding guard is off: a --trusted-proxy on this machine may name any host, and a browser "+
				"on this machine comes from the same address: set --allowed-hosts to the names the proxy passes "+
				"(its public names)", "listen", listen)
		}
	}
	return g
}

func (g *hostGuard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if g.allowed(r) {
		g.next.ServeHTTP(w, r)
		return
	}
	host := hostName(r.Host)
	g.mu.Lock()
	logIt := time.Since(g.logged) >= time.Minute
	if logIt {
		g.logged = time.Now()
	}
	g.mu.Unlock()
	if logIt {
		g.log.Warn("refused a request for a host name this server is not served under (DNS rebinding guard; "+
			"a reverse proxy passing its public name needs --allowed-hosts NAME)", "host", cut(host, 64), "listen", g.listen,
			"remote", r.RemoteAddr)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusMisdirectedRequest)
	// The name is not echoed: the page asking is the attacker's.
	_, _ = w.Write([]byte(`{"error":{"code":"misdirected","message":"this server is not served under the host name ` +
		`this request names: open it by its address or as localhost, or have the operator add the name to --allowed-hosts"}}` + "\n"))
}

func (g *hostGuard) allowed(r *http.Request) bool {
	if g.any {
		return true
	}
	host := hostName(r.Host)
	if host == "" { // HTTP/1.0 without Host: no browser sends it
		return true
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") || g.names[host] {
		return true
	}
	return clientaddr.In(r.RemoteAddr, g.proxies)
}

// loopbackPeers are the addresses a connection to the loopback address
// listen comes from: its own, and the family's 127.0.0.1 or ::1.
func loopbackPeers(listen string) []netip.Addr {
	ap, err := netip.ParseAddrPort(listen)
	if err != nil {
		return nil
	}
	ip := ap.Addr().Unmap()
	if ip.Is4() {
		return []netip.Addr{ip, netip.AddrFrom4([4]byte{127, 0, 0, 1})}
	}
	return []netip.Addr{ip, netip.IPv6Loopback()}
}

// hostName is the Host header's name, lower case, without port, brackets
// or a final dot.
func hostName(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	h = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSuffix(h, "]"), "["), ".")
	if i := strings.IndexByte(h, '%'); i >= 0 { // an IPv6 zone
		h = h[:i]
	}
	return strings.ToLower(h)
}

func cut(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

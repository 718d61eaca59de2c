// Package clientaddr says which client a remote address is, for the limits
// per client address: the HTTP API's (account creation, connections) and
// the embedded broker's (connections not yet logged in).
package clientaddr

import (
	"net"
	"net/netip"
)

// Host is the IP address of addr (host or host:port), unmapped and
// without zone, and the host part it was read from.
func Host(addr string) (netip.Addr, string, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip, err := netip.ParseAddr(host)
	return ip.Unmap().WithZone(""), host, err
}

// In reports whether addr (host or host:port) is in one of prefixes: a
// request from a trusted reverse proxy (the API's limits, the server's
// host-name guard).
func In(addr string, prefixes []netip.Prefix) bool {
	ip, _, err := Host(addr)
	if err != nil {
		return false
	}
	for _, p := range prefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Key is what a limit per client address counts a remote address (host or
// host:port) as: an IPv4 address, or the /64 of an IPv6 one (a single
// subscriber is given a whole /64, so keying on the address would give it
// 2^64 places).
func Key(remote string) string {
	ip, host, err := Host(remote)
	if err != nil {
		return host
	}
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// SiteShare is how many times one client's allowance an IPv6 site (a /48:
// what an ISP hands a household or an office, 65,536 /64s; a /56, 256 of
// them) may take together, under every limit per client address. Without
// it one home connection's /56 was 256 clients: it took the allowance for
// everyone of account creation (600 a minute), every HTTP connection place
// and, connecting from 140 of its /64s, 300 MB of the broker (attack
// reviews).
const SiteShare = 4

// Site is the site of an IPv6 remote address (host or host:port): its /48,
// written "site PREFIX". It is "" for an IPv4 address (or one that does
// not parse), whose client is the address itself (Key).
func Site(remote string) string {
	ip, _, err := Host(remote)
	if err != nil || !ip.Is6() {
		return ""
	}
	p, _ := ip.Prefix(48)
	return "site " + p.String()
}

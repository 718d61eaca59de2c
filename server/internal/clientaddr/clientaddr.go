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

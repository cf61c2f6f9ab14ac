package ratelimit

import (
	"fmt"
	"net/netip"
	"strings"
)

// Proxies are the reverse proxies whose X-Forwarded-For is believed
// (serve.trusted_proxies). Any other peer's X-Forwarded-For is ignored: a
// client could write anything there, and take someone else's address or a
// fresh one for every request.
type Proxies struct {
	prefixes []netip.Prefix
}

// ParseProxies reads addresses and CIDR ranges; setting names the list in
// errors. A /0 range is refused: trusting every peer would let anyone
// choose their address.
func ParseProxies(setting string, list []string) (Proxies, error) {
	var p Proxies
	for i, s := range list {
		where := fmt.Sprintf("%s[%d]", setting, i)
		pfx, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			a, aerr := netip.ParseAddr(strings.TrimSpace(s))
			if aerr != nil {
				return Proxies{}, fmt.Errorf("%s must be an IP address or CIDR range, got %q", where, s)
			}
			a = a.Unmap()
			pfx = netip.PrefixFrom(a, a.BitLen())
		}
		if pfx.Addr().Is4In6() {
			pfx = netip.PrefixFrom(pfx.Addr().Unmap(), max(0, pfx.Bits()-96))
		}
		if pfx.Bits() == 0 {
			return Proxies{}, fmt.Errorf("%s must not be a /0 range: every peer's X-Forwarded-For would be believed, got %q", where, s)
		}
		p.prefixes = append(p.prefixes, pfx.Masked())
	}
	return p, nil
}

// ClientAddr is the address a request comes from: its peer's, or, when the
// peer is a trusted proxy, the nearest X-Forwarded-For hop no trusted proxy
// vouches for (walking from the right, as each proxy appends the address it
// saw). forwardedFor are all the request's X-Forwarded-For header values in
// order. An unparsable hop ends the walk at the last trusted address.
func (p Proxies) ClientAddr(remoteAddr string, forwardedFor []string) string {
	peer := parseAddr(remoteAddr)
	if !peer.IsValid() {
		return remoteAddr
	}
	if !p.trusted(peer) || len(forwardedFor) == 0 {
		return peer.String()
	}
	hops := strings.Split(strings.Join(forwardedFor, ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a := parseAddr(strings.TrimSpace(hops[i]))
		if !a.IsValid() {
			break
		}
		if !p.trusted(a) {
			return a.String()
		}
		peer = a
	}
	return peer.String()
}

func (p Proxies) trusted(a netip.Addr) bool {
	for _, pfx := range p.prefixes {
		if pfx.Contains(a) {
			return true
		}
	}
	return false
}

func parseAddr(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone("")
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap().WithZone("")
}

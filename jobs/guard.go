package jobs

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"
	"tollgate/webhook"
)

// Guard is the policy for callback URLs: https only, and never to an
// address that is loopback, private, link-local, unique-local, shared
// (CGNAT), unspecified, multicast or a cloud metadata address, unless the
// operator allowed its network (serve --callback-allow-net), which also
// permits plain http to it. The address is checked when the connection is
// made, after DNS resolution (a net.Dialer Control function), so a name
// that resolves to a public address when the job is submitted and to a
// private one later (DNS rebinding) is still refused.
type Guard struct {
	allow []netip.Prefix
}

// NewGuard returns a Guard allowing the networks in allow.
func NewGuard(allow []netip.Prefix) *Guard { return &Guard{allow: allow} }

// ParseNets parses a comma list of CIDRs (or single addresses).
func ParseNets(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if pre, err := netip.ParsePrefix(p); err == nil {
			out = append(out, pre.Masked())
			continue
		}
		a, err := netip.ParseAddr(p)
		if err != nil {
			return nil, fmt.Errorf("%q is neither a CIDR like 10.0.0.0/8 nor an IP address", p)
		}
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

var (
	sharedNet   = netip.MustParsePrefix("100.64.0.0/10") // CGNAT; Alibaba's metadata is 100.100.100.200
	nat64Net    = netip.MustParsePrefix("64:ff9b::/96")
	compatNet   = netip.MustParsePrefix("::/96") // deprecated IPv4-compatible IPv6
	sixToFour   = netip.MustParsePrefix("2002::/16")
	benchNet    = netip.MustParsePrefix("198.18.0.0/15")
	thisNet     = netip.MustParsePrefix("0.0.0.0/8")
	ietfNet     = netip.MustParsePrefix("192.0.0.0/24") // IETF protocol assignments; 192.0.0.192 was Oracle's metadata
	reservedNet = netip.MustParsePrefix("240.0.0.0/4")
)

// Blocked reports whether a is an address callbacks may not reach unless
// allowed: anything but a public unicast address. An IPv4 address wrapped
// in IPv6 (mapped, NAT64, IPv4-compatible, 6to4) is judged as itself.
func Blocked(a netip.Addr) bool {
	a = a.Unmap()
	switch b := a.As16(); {
	case nat64Net.Contains(a) || (compatNet.Contains(a) && !a.IsUnspecified() && !a.IsLoopback()):
		a = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	case sixToFour.Contains(a):
		a = netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})
	}
	return !a.IsGlobalUnicast() || a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast() ||
		sharedNet.Contains(a) || benchNet.Contains(a) || thisNet.Contains(a) || ietfNet.Contains(a) || reservedNet.Contains(a)
	// IsPrivate covers 10/8, 172.16/12, 192.168/16 and fc00::/7 (with
	// fd00:ec2::254, AWS's IPv6 metadata); IsLinkLocalUnicast 169.254/16
	// (169.254.169.254, the metadata address of most clouds) and fe80::/10.
}

func (g *Guard) allowed(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range g.allow {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// CheckURL checks a callback URL when it is submitted: absolute, https
// (or http when the operator allowed some networks), no user info, and an
// IP-literal host not refused. Names are checked at connect time.
func (g *Guard) CheckURL(raw string) error {
	u, err := webhook.ParseURL(raw)
	if err != nil {
		return err
	}
	if u.Scheme == "http" && len(g.allow) == 0 {
		return errors.New("must be https://")
	}
	if a, err := netip.ParseAddr(u.Hostname()); err == nil {
		if err := g.check(a, u.Scheme == "http"); err != nil {
			return err
		}
	}
	return nil
}

func (g *Guard) check(a netip.Addr, plain bool) error {
	switch {
	case g.allowed(a):
		return nil
	case plain:
		return fmt.Errorf("plain http:// is allowed only to the networks of --callback-allow-net, not %s", a)
	case Blocked(a):
		return fmt.Errorf("%s is a loopback, private, link-local or metadata address; callbacks may not go there", a)
	}
	return nil
}

// control refuses a connection to a refused address, after resolution.
func (g *Guard) control(plain bool) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("callback: unexpected address %q", address)
		}
		if err := g.check(ap.Addr(), plain); err != nil {
			return fmt.Errorf("callback refused: %w", err)
		}
		return nil
	}
}

// Client returns an HTTP client for callbacks that enforces g at connect
// time, uses no proxy (which would connect for it, unchecked) and follows
// no redirects (a 3xx is a failed attempt).
func (g *Guard) Client(timeout time.Duration) *http.Client {
	return webhook.NewClient(timeout, g.control)
}

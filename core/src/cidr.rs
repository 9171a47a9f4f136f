//! CIDR ranges: parse and test membership.
use std::net::IpAddr;

/// An address range: a network address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// An IPv4 range, usable in constants.
    pub const fn v4(a: [u8; 4], prefix: u8) -> Cidr {
        Cidr { addr: IpAddr::V4(std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3])), prefix }
    }

    /// An IPv6 range from its eight 16-bit segments, usable in constants.
    pub const fn v6(segs: [u16; 8], prefix: u8) -> Cidr {
        let s = segs;
        Cidr { addr: IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7])), prefix }
    }

    /// `10.0.0.0/8`, `fd00::/8`, or a bare address (a /32 or /128).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 3 => p.parse().ok()?,
            Some(_) => return None,
            None => max,
        };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    /// Is `ip` inside the range? (An address of the other family never is: callers `unmap`
    /// IPv4-mapped IPv6 first.)
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
                (u32::from(n) & mask) == (u32::from(*a) & mask)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                (u128::from(n) & mask) == (u128::from(*a) & mask)
            }
            _ => false,
        }
    }
}

/// Tailscale's CGNAT range and ULA prefix: always tailnet destinations.
pub const TAILNET: [Cidr; 2] = [Cidr::v4([100, 64, 0, 0], 10), Cidr::v6([0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0], 48)];

/// An IPv4-mapped IPv6 address is its IPv4 address for every routing decision.
pub fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_contains() {
        let c = Cidr::parse("100.64.0.0/10").unwrap();
        assert!(c.contains(&"100.64.0.1".parse().unwrap()));
        assert!(c.contains(&"100.127.255.255".parse().unwrap()));
        assert!(!c.contains(&"100.128.0.0".parse().unwrap()));
        assert!(!c.contains(&"100.63.255.255".parse().unwrap()));
        assert!(!c.contains(&"fd7a:115c:a1e0::1".parse().unwrap()));
        let v6 = Cidr::parse("fd7a:115c:a1e0::/48").unwrap();
        assert!(v6.contains(&"fd7a:115c:a1e0:ab12::1".parse().unwrap()));
        assert!(!v6.contains(&"fd7a:115c:a1e1::1".parse().unwrap()));
        assert_eq!(Cidr::parse("10.1.2.3"), Cidr::parse("10.1.2.3/32"));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(&"8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("::/0").unwrap().contains(&"::1".parse().unwrap()));
        assert_eq!(TAILNET[0], c);
        assert_eq!(TAILNET[1], v6);
    }

    #[test]
    fn parse_rejects() {
        for bad in ["", "10.0.0.0/33", "::/129", "10.0.0/8", "10.0.0.0/", "10.0.0.0/-1", "host", "10.0.0.0/8/8", "1.2.3.4/ 8"] {
            assert_eq!(Cidr::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn unmap_mapped() {
        assert_eq!(unmap("::ffff:100.64.0.1".parse().unwrap()), "100.64.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(unmap("::1".parse().unwrap()), "::1".parse::<IpAddr>().unwrap());
    }
}

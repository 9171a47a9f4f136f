//! The routing policy: where a connection to `dest` goes. One function, used by the preload
//! library (`src/net`) and by the seccomp supervisor (`wrapper/`), so both layers decide alike.
use crate::config::{Config, IpClass};
use crate::errno::codes::ECONNREFUSED;
use crate::{cidr, names, Errno, Target};
use std::net::SocketAddr;

/// Why a destination goes straight to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bypass {
    /// Loopback, LAN, public: outside the tailnet ranges and TSPROXY_ROUTES.
    NotTailnet,
    /// A tailnet address that NO_PROXY lists: the user asked for a direct dial.
    NoProxy,
}

/// The decision for one destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Not ours: the kernel dials it, untouched.
    Direct(Bypass),
    /// Through the proxy, asking it for this target.
    Proxy(Target),
    /// Never dial, never proxy: the errno to report and why.
    Refuse(Errno, &'static str),
}

/// Decide for `dest`. A few compares for everything that is not ours. An IPv4-mapped IPv6
/// address is decided as its IPv4 address (and a proxied one is asked for as IPv4).
pub fn decide(cfg: &Config, dest: SocketAddr) -> Route {
    let ip = cidr::unmap(dest.ip());
    match cfg.classify_ip(ip) {
        IpClass::Direct => Route::Direct(Bypass::NotTailnet),
        IpClass::NoProxy => Route::Direct(Bypass::NoProxy),
        IpClass::Tailnet => Route::Proxy(Target::Ip(SocketAddr::new(ip, dest.port()))),
        IpClass::Placeholder => match names::slot_of(&ip).and_then(names::name) {
            Some(n) => Route::Proxy(Target::Name(n.to_string(), dest.port())),
            None => Route::Refuse(ECONNREFUSED, "placeholder address of a name this process never resolved"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn cfg(env: &[(&str, &str)]) -> Config {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())).unwrap()
    }

    fn d(c: &Config, a: &str) -> Route {
        decide(c, a.parse().unwrap())
    }

    #[test]
    fn direct_tailnet_and_no_proxy() {
        let c = cfg(&[("NO_PROXY", "100.100.0.0/16"), ("TSPROXY_ROUTES", "10.9.0.0/16")]);
        for a in ["127.0.0.1:80", "[::1]:80", "192.168.1.1:22", "8.8.8.8:53", "100.128.0.1:1", "[fd7a:115c:a1e1::1]:1", "[::ffff:127.0.0.1]:9"] {
            assert_eq!(d(&c, a), Route::Direct(Bypass::NotTailnet), "{a}");
        }
        assert_eq!(d(&c, "100.100.1.1:80"), Route::Direct(Bypass::NoProxy));
        assert_eq!(d(&c, "[::ffff:100.100.1.1]:80"), Route::Direct(Bypass::NoProxy));
        let ip = |a: &str| Route::Proxy(Target::Ip(a.parse().unwrap()));
        assert_eq!(d(&c, "100.64.0.2:80"), ip("100.64.0.2:80"));
        assert_eq!(d(&c, "[fd7a:115c:a1e0::2]:443"), ip("[fd7a:115c:a1e0::2]:443"));
        assert_eq!(d(&c, "10.9.3.4:5"), ip("10.9.3.4:5"));
        // v4-mapped: decided, and asked for, as IPv4.
        assert_eq!(d(&c, "[::ffff:100.64.0.2]:80"), ip("100.64.0.2:80"));
    }

    #[test]
    fn placeholders() {
        let c = cfg(&[]);
        let slot = names::try_intern("route-test-peer").unwrap();
        let name = |p| Route::Proxy(Target::Name("route-test-peer".into(), p));
        assert_eq!(decide(&c, SocketAddr::new(IpAddr::V4(names::v4(slot)), 80)), name(80));
        assert_eq!(decide(&c, SocketAddr::new(IpAddr::V6(names::v6(slot)), 81)), name(81));
        assert_eq!(decide(&c, SocketAddr::new(IpAddr::V6(names::v4(slot).to_ipv6_mapped()), 82)), name(82));
        // A placeholder nobody resolved: refused, never dialled.
        let free = (0..names::SLOTS as u32).rev().find(|s| names::name(*s).is_none()).unwrap();
        match decide(&c, SocketAddr::new(IpAddr::V4(names::v4(free)), 80)) {
            Route::Refuse(e, why) => {
                assert_eq!(e, ECONNREFUSED);
                assert!(!why.is_empty());
            }
            r => panic!("{r:?}"),
        }
        // 240.0.0.0 itself is not a slot address (slots start at 240.0.0.1): not ours.
        assert_eq!(d(&c, "240.0.0.0:80"), Route::Direct(Bypass::NotTailnet));
    }
}

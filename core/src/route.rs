//! The routing policy: where a connection to `dest` goes. One function, used by the preload
//! library (`src/net`) and by the seccomp supervisor (`wrapper/`), so both layers decide alike.
use crate::config::{Config, IpClass};
use crate::errno::codes::ECONNREFUSED;
use crate::{cidr, dns, names, Errno, Target};
use std::net::{IpAddr, SocketAddr};

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
            None => Route::Refuse(
                ECONNREFUSED,
                if crate::registry::state().is_ok() {
                    "placeholder address that no process of this user resolved (another user's, or from another machine or registry: README, Names)"
                } else {
                    "placeholder address of a name this process never resolved (no per-user name registry here: README, Names)"
                },
            ),
        },
    }
}

/// The port of DNS: a datagram sent to it is checked with [`tailnet_question`].
pub const DNS_PORT: u16 = 53;

/// QTYPEs asked of zones, not hosts: NS, SOA, RRSIG, NSEC, DNSKEY, NSEC3, NSEC3PARAM, DS, CDS,
/// CDNSKEY. A validating resolver asks them of top-level domains (`com DS`), which are single
/// labels; a tailnet short name is a host and is never asked so.
const ZONE_TYPES: [u16; 10] = [2, 6, 46, 47, 48, 50, 51, 43, 59, 60];

/// The never-leak rule for a datagram a program sends to port 53 ([`DNS_PORT`]) of any server:
/// the first question in `payload` that asks about a tailnet name, or None (the datagram is not
/// ours: send it untouched). The library and the supervisor refuse the send when this says Some;
/// the supervisor's DNS responder answers such questions itself and never forwards them.
///
/// A question is read from any DNS message (`dns::questions`: every question, any opcode,
/// compressed names, lower-cased) and is a tailnet question when
/// - its name is at or under a tailnet domain (`ts.net`, `TSPROXY_DOMAINS`) that `NO_PROXY`
///   does not exempt, whatever its other labels hold (`_http._tcp.peer.tail1234.ts.net`); or
/// - its name is a tailnet name by the rule `getaddrinfo` uses (`Config::is_tailnet_name`:
///   host names only; an unknown single label is a short name), unless the QTYPE is one asked
///   of zones (NS, SOA, DS, DNSKEY...: `com DS` from a validating resolver is not a host); or
/// - its name is the reverse-lookup name of one address (`2.0.64.100.in-addr.arpa`, the 32
///   nibbles under `ip6.arpa`) in a tailnet range, a `TSPROXY_ROUTES` entry or our placeholder
///   ranges (`reverse_is_tailnet`): MagicDNS answers those, and asking the system resolver
///   tells it the tailnet address. (`TSPROXY_ROUTE_ALL` does not make every reverse name one.)
///
/// A name expanded by the stub resolver's search list does **not** count: `peer-1.example.com`
/// with `search example.com` in resolv.conf is what a stub sends for `peer-1` (musl, Go and
/// c-ares try the search list first for a name without a dot), but also exactly what it sends
/// for `peer-1.example.com`, a real name of the user's own domain. The wire cannot tell the two
/// apart, and counting it would refuse every `host.<search domain>` lookup — glibc's own, under
/// the launcher, for `curl http://www.example.com/`. The library decides on the name the program
/// asked (`getaddrinfo("peer-1")` is answered before any expansion); a program that expands
/// short names itself can send `peer-1.<search domain>` first (README, Limitations).
pub fn tailnet_question(cfg: &Config, payload: &[u8], known_locally: impl Fn(&str) -> bool) -> Option<String> {
    dns::questions(payload)
        .find(|q| {
            cfg.is_under_tailnet_domain(&q.name)
                || (!ZONE_TYPES.contains(&q.qtype) && cfg.is_tailnet_name(&q.name, &known_locally))
                || attrleaf_host(&q.name).is_some_and(|h| cfg.is_tailnet_name(h, &known_locally))
                || reverse_name_ip(&q.name).is_some_and(|ip| reverse_is_tailnet(cfg, ip))
        })
        .map(|q| q.name)
}

/// Can a datagram to port 53, sent with `flags`, be judged as the question a server will read?
/// Only when it is one whole DNS message (`dns::message_len`) and not sent with `MSG_MORE`: a
/// header alone, a corked socket's piece, a segmented (GSO) send or bytes after the message may
/// become part of a datagram nobody sees whole. The library (`net::send`, `dns::wire`) and the
/// supervisor (`on_send`) refuse the others on datagram sockets (EPERM).
pub fn whole_dns_datagram(payload: &[u8], flags: i32) -> bool {
    flags & libc::MSG_MORE == 0 && dns::message_len(payload) == Some(payload.len())
}

/// The address a reverse-lookup name names: `d.c.b.a.in-addr.arpa` (four decimal labels) or
/// the 32 nibble labels of an IPv6 address under `ip6.arpa` (lower case, no trailing dot, as
/// `dns::questions` gives names). None for anything else (a zone such as `64.100.in-addr.arpa`).
pub fn reverse_name_ip(name: &str) -> Option<IpAddr> {
    if let Some(v4) = name.strip_suffix(".in-addr.arpa") {
        let mut o = [0u8; 4];
        let labels: Vec<&str> = v4.split('.').collect();
        if labels.len() != 4 {
            return None;
        }
        for (i, l) in labels.iter().rev().enumerate() {
            if l.is_empty() || l.len() > 3 || !l.bytes().all(|b| b.is_ascii_digit()) || (l.len() > 1 && l.starts_with('0')) {
                return None;
            }
            o[i] = l.parse().ok()?;
        }
        return Some(IpAddr::from(o));
    }
    let v6 = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<&str> = v6.split('.').collect();
    if nibbles.len() != 32 {
        return None;
    }
    let mut b = [0u8; 16];
    for (i, n) in nibbles.iter().rev().enumerate() {
        let [c] = n.as_bytes() else { return None };
        let v = (*c as char).to_digit(16)? as u8;
        b[i / 2] |= if i % 2 == 0 { v << 4 } else { v };
    }
    Some(IpAddr::from(b))
}

/// Is a reverse lookup of `ip` a tailnet question: a tailnet range, a `TSPROXY_ROUTES` entry or
/// a placeholder (never `TSPROXY_ROUTE_ALL` alone, which would withhold every reverse lookup;
/// nor a `NO_PROXY` network, which the user keeps off the tailnet path)?
pub fn reverse_is_tailnet(cfg: &Config, ip: IpAddr) -> bool {
    let ip = cidr::unmap(ip);
    if names::is_placeholder(&ip) {
        return true;
    }
    let tailnet = cidr::TAILNET.iter().any(|c| c.contains(&ip)) || cfg.routes.iter().any(|c| c.contains(&ip));
    tailnet && cfg.classify_ip(ip) != IpClass::NoProxy
}

/// The host under leading underscore labels (RFC 8552 "attrleaf" names: `_8080._https.peer-1`,
/// the HTTPS record Chromium asks for `https://peer-1:8080/`, or `_ssh._tcp.peer-1`, an SRV
/// lookup): such a name is about that host, and a tailnet host's must not leave either. None
/// when the name has no such label or nothing after them.
fn attrleaf_host(name: &str) -> Option<&str> {
    let mut rest = name;
    let mut stripped = false;
    while let Some(label) = rest.split('.').next().filter(|l| l.starts_with('_')) {
        rest = rest.get(label.len() + 1..)?;
        stripped = true;
    }
    (stripped && !rest.is_empty()).then_some(rest)
}

/// The decision `r` (from [`decide`]) in a process that is itself a configured proxy, which
/// must never tunnel to itself: a proxy's connection to a tailnet address through itself is
/// accepted by itself, which dials the same address through itself again — one request fans out
/// until threads or descriptors run out. It is refused (`ECONNREFUSED`, at once), never dialled
/// directly: "listens on a proxy endpoint" is also true of an unrelated server on `[::1]:1080`
/// beside a proxy on 127.0.0.1:1080, or of any program on port 1080 while the proxy is down,
/// and a direct dial from those would be a leak. A real proxy that must reach the tailnet
/// itself does not load tsproxy (tailscaled does not: it is a static Go binary).
pub fn in_proxy(r: Route) -> Route {
    match r {
        Route::Proxy(_) => Route::Refuse(ECONNREFUSED, "this process listens on the proxy's address: tunnelling to itself would loop; refused"),
        other => other,
    }
}

/// Does a listening TCP socket bound to `bound` accept the connections made to the proxy
/// endpoint `proxy` (so that its process is that proxy)? The same port and the same address
/// (an IPv4-mapped one counts as IPv4), or a wildcard bind that covers the endpoint: `0.0.0.0`
/// covers IPv4 endpoints, `::` IPv6 ones and, unless `v6only`, IPv4 ones too — when the
/// endpoint is an address of this machine (loopback always; others as `is_local` says: a
/// wildcard listener here is not a proxy on another host).
pub fn serves_endpoint(bound: SocketAddr, v6only: bool, proxy: SocketAddr, is_local: impl Fn(IpAddr) -> bool) -> bool {
    if bound.port() != proxy.port() || bound.port() == 0 {
        return false;
    }
    let (b, p) = (cidr::unmap(bound.ip()), cidr::unmap(proxy.ip()));
    if b == p {
        return true;
    }
    let covers = match (b, p) {
        (IpAddr::V4(b), IpAddr::V4(_)) => b.is_unspecified(),
        (IpAddr::V6(b), IpAddr::V6(_)) => b.is_unspecified(),
        (IpAddr::V6(b), IpAddr::V4(_)) => b.is_unspecified() && !v6only,
        (IpAddr::V4(_), IpAddr::V6(_)) => false,
    };
    covers && (p.is_loopback() || is_local(p))
}

#[cfg(test)]
mod tests {

    #[test]
    fn reverse_names_of_tailnet_addresses_are_tailnet_questions() {
        assert_eq!(reverse_name_ip("2.0.64.100.in-addr.arpa"), Some("100.64.0.2".parse().unwrap()));
        let hex: String = "fd7a115ca1e000000000000000000002".chars().rev().map(|c| format!("{c}.")).collect();
        let v6 = &format!("{hex}ip6.arpa");
        assert_eq!(reverse_name_ip(v6), Some("fd7a:115c:a1e0::2".parse().unwrap()));
        for not in [
            "64.100.in-addr.arpa",
            "02.0.64.100.in-addr.arpa",
            "256.0.64.100.in-addr.arpa",
            "x.0.64.100.in-addr.arpa",
            "0.e.1.a.5.1.1.c.a.7.d.f.ip6.arpa",
            "peer-1",
        ] {
            assert_eq!(reverse_name_ip(not), None, "{not}");
        }
        let c = cfg(&[("TSPROXY_ROUTES", "10.99.0.0/16"), ("NO_PROXY", "100.64.9.0/24")]);
        let ptr = |name: &str| crate::dns::query_presentation(1, name.as_bytes(), 12, 1).unwrap();
        for yes in ["2.0.64.100.in-addr.arpa", v6, "7.0.99.10.in-addr.arpa", "1.0.0.240.in-addr.arpa"] {
            assert_eq!(tailnet_question(&c, &ptr(yes), |_| false).as_deref(), Some(yes));
        }
        // Public addresses, a NO_PROXY network, a zone, and everything under TSPROXY_ROUTE_ALL.
        for no in ["1.2.0.192.in-addr.arpa", "1.9.64.100.in-addr.arpa", "64.100.in-addr.arpa"] {
            assert_eq!(tailnet_question(&c, &ptr(no), |_| false), None, "{no}");
        }
        let all = cfg(&[("TSPROXY_ROUTE_ALL", "1")]);
        assert_eq!(tailnet_question(&all, &ptr("1.2.0.192.in-addr.arpa"), |_| false), None);
    }

    #[test]
    fn attrleaf_names_of_tailnet_hosts_are_tailnet_questions() {
        assert_eq!(attrleaf_host("_8080._https.peer-1"), Some("peer-1"));
        assert_eq!(attrleaf_host("_ssh._tcp.db.example"), Some("db.example"));
        assert_eq!(attrleaf_host("peer-1"), None);
        assert_eq!(attrleaf_host("_x"), None);
        let c = cfg(&[]);
        let q = crate::dns::query_presentation(1, b"_8080._https.peer-1", 65, 1).unwrap();
        assert_eq!(tailnet_question(&c, &q, |_| false).as_deref(), Some("_8080._https.peer-1"));
        // A host /etc/hosts knows, and an ordinary public service name, are not.
        assert_eq!(tailnet_question(&c, &q, |n| n == "peer-1"), None);
        let q = crate::dns::query_presentation(1, b"_443._https.www.example.com", 65, 1).unwrap();
        assert_eq!(tailnet_question(&c, &q, |_| false), None);
    }
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
    fn dns_questions_for_tailnet_names() {
        let c = cfg(&[("TSPROXY_DOMAINS", "corp.example"), ("NO_PROXY", "skip.ts.net,direct")]);
        let hosts = |n: &str| n == "known" || n == "localhost";
        let q = |name: &str, t: u16| dns::query(7, name, t).unwrap();
        let tq = |m: &[u8]| tailnet_question(&c, m, hosts);
        // Tailnet names, any case, with a trailing dot or not, A, AAAA, TXT, MX, ANY...
        for (n, t) in [("peer-1", 1), ("PEER-1.", 28), ("peer-1", 16), ("peer-1", 15), ("peer-1", 255), ("Peer.Tail1234.TS.net", 1), ("db.corp.example", 1)] {
            assert_eq!(tq(&q(n, t)).as_deref(), Some(crate::config::normalize_name(n).as_str()), "{n} {t}");
        }
        // Under a tailnet domain, whatever the other labels and the type.
        let mut srv = vec![0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in ["_http", "_tcp", "peer", "tail1234", "ts", "net"] {
            srv.push(l.len() as u8);
            srv.extend_from_slice(l.as_bytes());
        }
        srv.extend_from_slice(&[0, 0, 33, 0, 1]);
        assert_eq!(tq(&srv).as_deref(), Some("_http._tcp.peer.tail1234.ts.net"));
        assert!(tq(&q("ts.net", 2)).is_some(), "the tailnet domain itself");
        // Not tailnet names: public, NO_PROXY, /etc/hosts, localhost, address-like, zone queries
        // of single labels (a validating resolver's `com DS`), the root.
        for (n, t) in [
            ("example.com", 1),
            ("a.skip.ts.net", 1),
            ("direct", 1),
            ("known", 1),
            ("localhost", 28),
            ("127", 1),
            ("com", 43),
            ("com", 48),
            ("org", 2),
            ("net", 6),
        ] {
            assert_eq!(tq(&q(n, t)), None, "{n} {t}");
        }
        assert_eq!(tq(&[0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1]), None, "the root");
        // A search-list expansion of a short name is a name of that domain: not ours.
        assert_eq!(tq(&q("peer-1.example.com", 1)), None);
        // Any question of several; a compressed one.
        let mut two = q("example.com", 1);
        two[5] = 2;
        two.extend_from_slice(&[6, b'p', b'e', b'e', b'r', b'-', b'9', 0, 0, 1, 0, 1]);
        assert_eq!(tq(&two).as_deref(), Some("peer-9"));
        let mut ptr = q("peer.tail1234.ts.net", 1);
        ptr[5] = 2;
        ptr.extend_from_slice(&[3, b'w', b'w', b'w', 0xc0, 12 + 5, 0, 1, 0, 1]);
        assert_eq!(tq(&ptr).as_deref(), Some("peer.tail1234.ts.net"));
        // A dot inside a label does not make a tailnet name out of a public one.
        let mut dotted = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 7];
        dotted.extend_from_slice(b"peer.ts");
        dotted.extend_from_slice(&[3, b'n', b'e', b't', 0, 0, 1, 0, 1]);
        assert_eq!(tq(&dotted), None);
        // Garbage.
        assert_eq!(tq(b"STOP"), None);
        assert_eq!(tq(&[]), None);
        // Short names off: only domains count.
        let off = cfg(&[("TSPROXY_SHORT_NAMES", "off")]);
        assert_eq!(tailnet_question(&off, &q("peer-1", 1), hosts), None);
        assert!(tailnet_question(&off, &q("peer-1.tail1234.ts.net", 1), hosts).is_some());
    }

    #[test]
    fn a_proxy_never_tunnels_to_itself() {
        let slot = names::try_intern("route-self-peer").unwrap();
        let c = cfg(&[]);
        assert!(matches!(in_proxy(d(&c, "100.64.0.2:80")), Route::Refuse(ECONNREFUSED, _)), "never a direct dial");
        assert!(matches!(in_proxy(d(&c, "[fd7a:115c:a1e0::2]:80")), Route::Refuse(ECONNREFUSED, _)));
        assert!(matches!(in_proxy(decide(&c, SocketAddr::new(IpAddr::V4(names::v4(slot)), 80))), Route::Refuse(ECONNREFUSED, _)));
        assert_eq!(in_proxy(d(&c, "127.0.0.1:80")), Route::Direct(Bypass::NotTailnet));
        let r = Route::Refuse(ECONNREFUSED, "x");
        assert_eq!(in_proxy(r.clone()), r);
    }

    #[test]
    fn proxy_endpoints() {
        let a = |s: &str| -> SocketAddr { s.parse().unwrap() };
        let nowhere = |_: IpAddr| false;
        let here = |ip: IpAddr| ip == "10.1.2.3".parse::<IpAddr>().unwrap() || ip == "fd00::5".parse::<IpAddr>().unwrap();
        let p = a("127.0.0.1:1080");
        // Exact, mapped, wildcard (v4, dual-stack v6), and what does not match.
        assert!(serves_endpoint(a("127.0.0.1:1080"), false, p, nowhere));
        assert!(serves_endpoint(a("[::ffff:127.0.0.1]:1080"), false, p, nowhere));
        assert!(serves_endpoint(a("0.0.0.0:1080"), false, p, nowhere));
        assert!(serves_endpoint(a("[::]:1080"), false, p, nowhere));
        assert!(!serves_endpoint(a("[::]:1080"), true, p, nowhere), "an IPv6-only wildcard does not take IPv4 connections");
        assert!(!serves_endpoint(a("127.0.0.1:1081"), false, p, nowhere));
        assert!(!serves_endpoint(a("127.0.0.2:1080"), false, p, nowhere));
        assert!(!serves_endpoint(a("[::1]:1080"), false, p, nowhere));
        assert!(!serves_endpoint(a("0.0.0.0:0"), false, a("0.0.0.0:0"), nowhere), "port 0 is no endpoint");
        let p6 = a("[::1]:1080");
        assert!(serves_endpoint(a("[::1]:1080"), true, p6, nowhere));
        assert!(serves_endpoint(a("[::]:1080"), true, p6, nowhere));
        assert!(!serves_endpoint(a("0.0.0.0:1080"), false, p6, nowhere));
        // A proxy on another address: only a wildcard on this machine's own address covers it.
        let far = a("10.1.2.3:1080");
        assert!(!serves_endpoint(a("0.0.0.0:1080"), false, far, nowhere), "a proxy on another host");
        assert!(serves_endpoint(a("0.0.0.0:1080"), false, far, here));
        assert!(serves_endpoint(a("10.1.2.3:1080"), false, far, nowhere));
        assert!(serves_endpoint(a("[::]:3128"), false, a("[fd00::5]:3128"), here));
        assert!(!serves_endpoint(a("[::]:3128"), false, a("[fd00::6]:3128"), here));
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
        let free = (0..names::SLOTS).rev().find(|s| names::name(*s).is_none()).unwrap();
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

//! Conversions between `std::net::SocketAddr` and raw `sockaddr` memory.
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// `SIN6_LEN_RFC2133`: the size of a `sockaddr_in6` without `sin6_scope_id`, which the kernel
/// still accepts for AF_INET6 (`tcp_v6_connect`, `ip6_datagram_connect`, `udpv6_sendmsg` and
/// `rawv6_sendmsg` in net/ipv6/ all check `addr_len < SIN6_LEN_RFC2133` → EINVAL, and read
/// `sin6_scope_id` only when `addr_len >= sizeof(struct sockaddr_in6)`).
pub const SIN6_LEN_RFC2133: usize = 24;
const SIN_LEN: usize = std::mem::size_of::<libc::sockaddr_in>();
const SIN6_LEN: usize = std::mem::size_of::<libc::sockaddr_in6>();

/// Read a sockaddr the application passed, as the kernel's connect reads it. None for other
/// families (AF_UNSPEC included: for connect it means "disconnect") or lengths the kernel
/// rejects. AF_INET needs 16 bytes; AF_INET6 needs 24 (RFC 2133 size, scope id 0) or 28.
///
/// # Safety
/// `sa` must be null or point to at least `len` readable bytes.
pub unsafe fn read(sa: *const libc::sockaddr, len: libc::socklen_t) -> Option<SocketAddr> {
    if sa.is_null() || (len as usize) < std::mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: at least sa_family is readable (checked above); read_unaligned tolerates any
    // alignment the caller used.
    let fam = unsafe { std::ptr::read_unaligned(std::ptr::addr_of!((*sa).sa_family)) } as i32;
    // SAFETY: the caller's contract, passed on.
    unsafe { read_as(sa, len as usize, fam) }
}

/// Read `sa` as an address of family `fam` (whatever its sa_family field says).
///
/// # Safety
/// `sa` must point to at least `len` readable bytes.
unsafe fn read_as(sa: *const libc::sockaddr, len: usize, fam: i32) -> Option<SocketAddr> {
    match fam {
        libc::AF_INET if len >= SIN_LEN => {
            // SAFETY: len >= sizeof(sockaddr_in) readable bytes (caller); read_unaligned
            // tolerates any alignment.
            let s: libc::sockaddr_in = unsafe { std::ptr::read_unaligned(sa.cast()) };
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr)), u16::from_be(s.sin_port))))
        }
        libc::AF_INET6 if len >= SIN6_LEN_RFC2133 => {
            // Copy 28 bytes, or 24 over zeros: the kernel reads the scope id only when
            // addr_len >= sizeof(struct sockaddr_in6), so 24..27 bytes mean scope id 0.
            let mut raw = [0u8; SIN6_LEN];
            let n = if len >= SIN6_LEN { SIN6_LEN } else { SIN6_LEN_RFC2133 };
            // SAFETY: n <= len bytes are readable at sa (caller); raw has room for n bytes; the
            // two do not overlap (raw is a local).
            unsafe { std::ptr::copy_nonoverlapping(sa.cast::<u8>(), raw.as_mut_ptr(), n) };
            // SAFETY: raw is SIN6_LEN initialized bytes; any bit pattern is a valid sockaddr_in6.
            let s: libc::sockaddr_in6 = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
            Some(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(s.sin6_addr.s6_addr), u16::from_be(s.sin6_port), s.sin6_flowinfo, s.sin6_scope_id)))
        }
        _ => None,
    }
}

/// Read the destination of a `sendto`/`sendmsg` on a socket of `sock_domain`/`sock_type` (as
/// SO_DOMAIN/SO_TYPE report them), as the kernel's send path reads it: like [`read`], plus
/// family 0 (AF_UNSPEC), which some send paths take as the socket's own family:
///
/// - AF_INET SOCK_DGRAM: `udp_sendmsg` (net/ipv4/udp.c) checks `msg_namelen < sizeof(*usin)`
///   → EINVAL, then `if (usin->sin_family != AF_INET) { if (usin->sin_family != AF_UNSPEC)
///   return -EAFNOSUPPORT; }`: family 0 with len >= 16 is an AF_INET destination.
///   (`ping_v4_sendmsg`, net/ipv4/ping.c, refuses family 0 with EAFNOSUPPORT; reading it as
///   AF_INET there only means we decide about a send the kernel would refuse anyway.)
/// - AF_INET SOCK_RAW: `raw_sendmsg` (net/ipv4/raw.c): `if (usin->sin_family != AF_INET) {
///   pr_info_once("... forgot to set AF_INET. Fix it!"); err = -EAFNOSUPPORT; if
///   (usin->sin_family) goto out; }`: family 0 with len >= 16 is AF_INET.
/// - AF_INET6 SOCK_RAW: `rawv6_sendmsg` (net/ipv6/raw.c): `if (addr_len < SIN6_LEN_RFC2133)
///   return -EINVAL; if (sin6->sin6_family && sin6->sin6_family != AF_INET6) return
///   -EAFNOSUPPORT;`: family 0 with len >= 24 is AF_INET6.
/// - AF_INET6 SOCK_DGRAM: `udpv6_sendmsg` (net/ipv6/udp.c): `case AF_UNSPEC: msg->msg_name =
///   sin6 = NULL; msg->msg_namelen = addr_len = 0;`: no address, the send goes to the
///   connected peer (None here). Its `case AF_INET: goto do_udp_sendmsg` (an AF_INET address
///   on an AF_INET6 UDP socket is sent as IPv4) is covered by [`read`].
/// - SOCK_STREAM: an address only matters with MSG_FASTOPEN, through `__inet_stream_connect`,
///   where AF_UNSPEC means disconnect: None.
///
/// # Safety
/// `sa` must be null or point to at least `len` readable bytes.
pub unsafe fn read_send(sa: *const libc::sockaddr, len: libc::socklen_t, sock_domain: i32, sock_type: i32) -> Option<SocketAddr> {
    if sa.is_null() || (len as usize) < std::mem::size_of::<libc::sa_family_t>() {
        return None;
    }
    // SAFETY: sa_family is readable (checked above).
    let fam = unsafe { std::ptr::read_unaligned(std::ptr::addr_of!((*sa).sa_family)) } as i32;
    if fam != libc::AF_UNSPEC {
        // SAFETY: the caller's contract, passed on.
        return unsafe { read_as(sa, len as usize, fam) };
    }
    let as_fam = match (sock_domain, sock_type & 0xf) {
        (libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_RAW) => libc::AF_INET,
        (libc::AF_INET6, libc::SOCK_RAW) => libc::AF_INET6,
        _ => return None,
    };
    // SAFETY: the caller's contract, passed on.
    unsafe { read_as(sa, len as usize, as_fam) }
}

/// Encode `addr` for a socket of `family`: an IPv4 address on an AF_INET6 socket becomes
/// IPv4-mapped; an IPv6 address cannot go on an AF_INET socket (None).
pub fn encode(addr: SocketAddr, family: i32) -> Option<(libc::sockaddr_storage, libc::socklen_t)> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match (family, addr) {
        (libc::AF_INET, SocketAddr::V4(a)) => {
            let s = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write(std::ptr::addr_of_mut!(st).cast(), s) };
            Some((st, std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t))
        }
        (libc::AF_INET6, a) => {
            let (ip, flow, scope) = match a {
                SocketAddr::V4(v4) => (v4.ip().to_ipv6_mapped(), 0, 0),
                SocketAddr::V6(v6) => (*v6.ip(), v6.flowinfo(), v6.scope_id()),
            };
            let s = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: flow,
                sin6_addr: libc::in6_addr { s6_addr: ip.octets() },
                sin6_scope_id: scope,
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write(std::ptr::addr_of_mut!(st).cast(), s) };
            Some((st, std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        for (a, fam) in [("100.64.0.2:80", libc::AF_INET), ("[fd7a:115c:a1e0::2]:443", libc::AF_INET6)] {
            let a: SocketAddr = a.parse().unwrap();
            let (st, len) = encode(a, fam).unwrap();
            // SAFETY: st holds len valid bytes.
            let back = unsafe { read(std::ptr::addr_of!(st).cast(), len) }.unwrap();
            assert_eq!(back, a);
        }
        let (st, len) = encode("127.0.0.1:1080".parse().unwrap(), libc::AF_INET6).unwrap();
        // SAFETY: st is a live sockaddr_storage holding len valid bytes (encode wrote them).
        let back = unsafe { read(std::ptr::addr_of!(st).cast(), len) }.unwrap();
        assert_eq!(back, "[::ffff:127.0.0.1]:1080".parse().unwrap());
        assert!(encode("[::1]:1".parse().unwrap(), libc::AF_INET).is_none());
        // SAFETY: a short length is rejected before any read past it.
        assert!(unsafe { read(std::ptr::addr_of!(st).cast(), 4) }.is_none());
    }
    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: any T is readable as size_of::<T>() bytes (plain-old-data sockaddrs here).
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>()) }.to_vec()
    }

    fn v6(ip: &str, port: u16, scope: u32, fam: i32) -> Vec<u8> {
        let s = libc::sockaddr_in6 {
            sin6_family: fam as libc::sa_family_t,
            sin6_port: port.to_be(),
            sin6_flowinfo: 0,
            sin6_addr: libc::in6_addr { s6_addr: ip.parse::<Ipv6Addr>().unwrap().octets() },
            sin6_scope_id: scope,
        };
        bytes_of(&s)
    }

    fn v4(ip: &str, port: u16, fam: i32) -> Vec<u8> {
        let s = libc::sockaddr_in {
            sin_family: fam as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(ip.parse::<Ipv4Addr>().unwrap()).to_be() },
            sin_zero: [0; 8],
        };
        bytes_of(&s)
    }

    fn rd(b: &[u8], len: usize) -> Option<SocketAddr> {
        assert!(len <= b.len());
        // SAFETY: b holds at least len bytes.
        unsafe { read(b.as_ptr().cast(), len as libc::socklen_t) }
    }

    fn rs(b: &[u8], len: usize, dom: i32, ty: i32) -> Option<SocketAddr> {
        assert!(len <= b.len());
        // SAFETY: b holds at least len bytes.
        unsafe { read_send(b.as_ptr().cast(), len as libc::socklen_t, dom, ty) }
    }

    #[test]
    fn inet6_lengths() {
        let b = v6("fd7a:115c:a1e0::2", 80, 7, libc::AF_INET6);
        let want = |scope| Some(SocketAddr::V6(SocketAddrV6::new("fd7a:115c:a1e0::2".parse().unwrap(), 80, 0, scope)));
        assert_eq!(rd(&b, 28), want(7));
        // RFC 2133 size: the kernel accepts it; no scope id is read.
        assert_eq!(rd(&b, 24), want(0));
        assert_eq!(rd(&b, 27), want(0));
        assert_eq!(rd(&b, 23), None);
        assert_eq!(rd(&b, 16), None);
        // Longer than the struct (sockaddr_storage): fine.
        let mut big = b.clone();
        big.resize(128, 0xee);
        assert_eq!(rd(&big, 128), want(7));
        // v4-mapped comes back as the mapped IPv6 address (route::decide unmaps it).
        let m = v6("::ffff:100.64.0.2", 80, 0, libc::AF_INET6);
        assert_eq!(rd(&m, 24), Some("[::ffff:100.64.0.2]:80".parse().unwrap()));
    }

    #[test]
    fn inet_lengths() {
        let b = v4("100.64.0.2", 80, libc::AF_INET);
        assert_eq!(rd(&b, 16), Some("100.64.0.2:80".parse().unwrap()));
        assert_eq!(rd(&b, 15), None);
        assert_eq!(rd(&b, 8), None);
        assert_eq!(rd(&b, 1), None);
        assert_eq!(rd(&b, 0), None);
        // SAFETY: null is allowed.
        assert_eq!(unsafe { read(std::ptr::null(), 16) }, None);
    }

    #[test]
    fn family_zero_on_send() {
        use libc::{AF_INET, AF_INET6, SOCK_DGRAM, SOCK_RAW, SOCK_STREAM};
        let b4 = v4("100.64.0.2", 80, 0);
        let want4 = Some("100.64.0.2:80".parse().unwrap());
        // connect never takes family 0 as an address.
        assert_eq!(rd(&b4, 16), None);
        assert_eq!(rs(&b4, 16, AF_INET, SOCK_DGRAM), want4);
        assert_eq!(rs(&b4, 16, AF_INET, SOCK_RAW), want4);
        assert_eq!(rs(&b4, 16, AF_INET, SOCK_DGRAM | libc::SOCK_NONBLOCK), want4);
        assert_eq!(rs(&b4, 15, AF_INET, SOCK_DGRAM), None);
        assert_eq!(rs(&b4, 16, AF_INET, SOCK_STREAM), None);
        let b6 = v6("fd7a:115c:a1e0::2", 53, 3, 0);
        assert_eq!(rs(&b6, 24, AF_INET6, SOCK_RAW), Some("[fd7a:115c:a1e0::2]:53".parse().unwrap()));
        assert_eq!(rs(&b6, 28, AF_INET6, SOCK_RAW), Some(SocketAddr::V6(SocketAddrV6::new("fd7a:115c:a1e0::2".parse().unwrap(), 53, 0, 3))));
        assert_eq!(rs(&b6, 23, AF_INET6, SOCK_RAW), None);
        // udpv6_sendmsg: AF_UNSPEC means "no address".
        assert_eq!(rs(&b6, 28, AF_INET6, SOCK_DGRAM), None);
        assert_eq!(rs(&b6, 28, AF_INET6, SOCK_STREAM), None);
        // Explicit families read as read() does, whatever the socket.
        let e6 = v6("fd7a:115c:a1e0::2", 53, 0, AF_INET6);
        assert_eq!(rs(&e6, 24, AF_INET6, SOCK_DGRAM), Some("[fd7a:115c:a1e0::2]:53".parse().unwrap()));
        let e4 = v4("100.64.0.2", 80, AF_INET);
        assert_eq!(rs(&e4, 16, AF_INET6, SOCK_DGRAM), want4);
        let m = v6("::ffff:100.64.0.2", 80, 0, 0);
        assert_eq!(rs(&m, 24, AF_INET6, SOCK_RAW), Some("[::ffff:100.64.0.2]:80".parse().unwrap()));
        // Other families: never an address.
        let mut un = v4("100.64.0.2", 80, libc::AF_UNIX);
        assert_eq!(rs(&un, 16, AF_INET, SOCK_DGRAM), None);
        un[0] = 0xff;
        assert_eq!(rs(&un, 16, AF_INET, SOCK_DGRAM), None);
    }
}

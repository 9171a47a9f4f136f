//! Conversions between `std::net::SocketAddr` and raw `sockaddr` memory.
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Read a sockaddr the application passed. None for other families or short lengths.
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
    match fam {
        libc::AF_INET if len as usize >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: length checked.
            let s: libc::sockaddr_in = unsafe { std::ptr::read_unaligned(sa.cast()) };
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr)), u16::from_be(s.sin_port))))
        }
        libc::AF_INET6 if len as usize >= std::mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: length checked.
            let s: libc::sockaddr_in6 = unsafe { std::ptr::read_unaligned(sa.cast()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(s.sin6_addr.s6_addr),
                u16::from_be(s.sin6_port),
                s.sin6_flowinfo,
                s.sin6_scope_id,
            )))
        }
        _ => None,
    }
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
        // SAFETY: as above.
        let back = unsafe { read(std::ptr::addr_of!(st).cast(), len) }.unwrap();
        assert_eq!(back, "[::ffff:127.0.0.1]:1080".parse().unwrap());
        assert!(encode("[::1]:1".parse().unwrap(), libc::AF_INET).is_none());
        // SAFETY: a short length is rejected before any read past it.
        assert!(unsafe { read(std::ptr::addr_of!(st).cast(), 4) }.is_none());
    }
}

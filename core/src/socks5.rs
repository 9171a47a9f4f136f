//! SOCKS5 (RFC 1928) and username/password auth (RFC 1929): encoders and parsers, pure
//! functions on bytes.
use crate::Target;
use std::net::SocketAddr;

/// Protocol version byte of every SOCKS5 message but the RFC 1929 ones.
pub const VER: u8 = 5;
/// Method "no authentication" (tailscaled's proxy offers only this).
pub const METHOD_NONE: u8 = 0x00;
/// Method username/password (RFC 1929), offered only when the URL has credentials.
pub const METHOD_USERPASS: u8 = 0x02;
/// "No acceptable methods": the server refuses every method offered.
pub const METHOD_REJECT: u8 = 0xff;
/// CONNECT: a TCP stream to the target.
pub const CMD_CONNECT: u8 = 0x01;
/// UDP ASSOCIATE (RFC 1928 §7): a relay for the client's datagrams, alive as long as the TCP
/// control connection that asked for it.
pub const CMD_UDP_ASSOCIATE: u8 = 0x03;
/// Largest datagram (header included) tailscaled's relay reads: its buffer is 8 KiB, and a
/// larger one would be cut short there, so such a send fails with EMSGSIZE before it leaves.
pub const UDP_MAX: usize = 8192;
/// Longest UDP request header: RSV RSV FRAG ATYP, a 255-byte name with its length, a port.
pub const UDP_HEADER_MAX: usize = 4 + 1 + 255 + 2;
/// Address type IPv4 (4 bytes).
pub const ATYP_V4: u8 = 0x01;
/// Address type domain name (length byte, name): how tailnet names reach MagicDNS.
pub const ATYP_DOMAIN: u8 = 0x03;
/// Address type IPv6 (16 bytes).
pub const ATYP_V6: u8 = 0x04;

/// Everything that can go wrong in a SOCKS5 exchange. The handshake decides from the variant
/// whether the proxy failed (try the next one) or the destination did (final), and
/// [`errno_for`] which errno the application sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The reply's version byte is not what the protocol says.
    BadVersion(u8),
    /// The server chose a method we did not offer, or none (0xff).
    Method(u8),
    /// RFC 1929 status non-zero.
    AuthRejected(u8),
    /// The reply carries an address type that does not exist.
    BadAtyp(u8),
    /// REP != 0.
    Rep(u8),
    /// A domain name longer than 255 bytes cannot be encoded.
    NameTooLong,
    /// Not an RFC 1123 host name (`names::is_host_name`). Only such names are ever tailnet
    /// names; refusing anything else here too is defence in depth, so no caller can put
    /// arbitrary bytes in front of a proxy.
    BadName,
    /// A UDP datagram with FRAG != 0 (fragmentation is not supported: dropped, as RFC 1928
    /// allows and tailscaled does).
    Frag(u8),
    /// Shorter than its header says.
    Short,
}

/// The method-selection message: no-auth, plus username/password when we have credentials.
pub fn greeting(with_auth: bool) -> &'static [u8] {
    if with_auth {
        &[VER, 2, METHOD_NONE, METHOD_USERPASS]
    } else {
        &[VER, 1, METHOD_NONE]
    }
}

/// Parse the server's two-byte method choice.
pub fn parse_method(b: [u8; 2], offered_auth: bool) -> Result<u8, Error> {
    if b[0] != VER {
        return Err(Error::BadVersion(b[0]));
    }
    match b[1] {
        METHOD_NONE => Ok(METHOD_NONE),
        METHOD_USERPASS if offered_auth => Ok(METHOD_USERPASS),
        m => Err(Error::Method(m)),
    }
}

/// RFC 1929 request. Lengths were checked (1..=255) when the config was parsed.
pub fn auth_request(user: &str, pass: &str) -> Vec<u8> {
    let (u, p) = (user.as_bytes(), pass.as_bytes());
    let mut v = Vec::with_capacity(3 + u.len() + p.len());
    v.push(1);
    v.push(u.len().min(255) as u8);
    v.extend_from_slice(&u[..u.len().min(255)]);
    v.push(p.len().min(255) as u8);
    v.extend_from_slice(&p[..p.len().min(255)]);
    v
}

/// Judge the RFC 1929 status reply: a rejection means this proxy will not serve us.
pub fn parse_auth_reply(b: [u8; 2]) -> Result<(), Error> {
    // RFC 1929 says version 1; some servers answer 5. Only the status matters.
    if b[0] != 1 && b[0] != VER {
        return Err(Error::BadVersion(b[0]));
    }
    if b[1] != 0 {
        return Err(Error::AuthRejected(b[1]));
    }
    Ok(())
}

/// CONNECT request for `t`.
pub fn connect_request(t: &Target) -> Result<Vec<u8>, Error> {
    request(CMD_CONNECT, t)
}

/// UDP ASSOCIATE request. `client` is the address the client will send its datagrams from,
/// all zeros where not known yet (RFC 1928 §6).
pub fn udp_associate_request(client: SocketAddr) -> Vec<u8> {
    request(CMD_UDP_ASSOCIATE, &Target::Ip(client)).expect("an IP address always encodes")
}

/// The address part (ATYP, address, port) of `t`, appended to `v`.
fn put_addr(v: &mut Vec<u8>, t: &Target) -> Result<(), Error> {
    let port = match t {
        Target::Ip(SocketAddr::V4(a)) => {
            v.push(ATYP_V4);
            v.extend_from_slice(&a.ip().octets());
            a.port()
        }
        Target::Ip(SocketAddr::V6(a)) => {
            v.push(ATYP_V6);
            v.extend_from_slice(&a.ip().octets());
            a.port()
        }
        Target::Name(n, p) => {
            if n.len() > 255 {
                return Err(Error::NameTooLong);
            }
            if !crate::names::is_host_name(n) {
                return Err(Error::BadName);
            }
            v.push(ATYP_DOMAIN);
            v.push(n.len() as u8);
            v.extend_from_slice(n.as_bytes());
            *p
        }
    };
    v.extend_from_slice(&port.to_be_bytes());
    Ok(())
}

/// A request with command `cmd` for `t`.
pub fn request(cmd: u8, t: &Target) -> Result<Vec<u8>, Error> {
    let mut v = Vec::with_capacity(22);
    v.extend_from_slice(&[VER, cmd, 0]);
    put_addr(&mut v, t)?;
    Ok(v)
}

/// The BND.ADDR:BND.PORT of a complete, successful reply (for UDP ASSOCIATE: where the relay
/// takes datagrams). A name there (ATYP 3) is not resolved: `BadAtyp(3)`.
pub fn parse_bound(r: &[u8]) -> Result<SocketAddr, Error> {
    let need = reply_len(r)?;
    if r.len() < need {
        return Err(Error::Short);
    }
    let port = u16::from_be_bytes([r[need - 2], r[need - 1]]);
    match r[3] {
        ATYP_V4 => Ok(SocketAddr::new(std::net::Ipv4Addr::new(r[4], r[5], r[6], r[7]).into(), port)),
        ATYP_V6 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&r[4..20]);
            Ok(SocketAddr::new(std::net::Ipv6Addr::from(o).into(), port))
        }
        a => Err(Error::BadAtyp(a)),
    }
}

/// The UDP request header (RFC 1928 §7: RSV RSV FRAG=0, then the address) for a datagram to
/// `t`, written to `out`; its length. Names are checked as for CONNECT.
pub fn udp_header(t: &Target, out: &mut [u8; UDP_HEADER_MAX]) -> Result<usize, Error> {
    let mut v = Vec::with_capacity(UDP_HEADER_MAX);
    v.extend_from_slice(&[0, 0, 0]);
    put_addr(&mut v, t)?;
    out[..v.len()].copy_from_slice(&v);
    Ok(v.len())
}

/// Where a relayed datagram comes from, as its header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpFrom<'a> {
    /// ATYP 1 or 4.
    Ip(SocketAddr),
    /// ATYP 3: the name exactly as the client sent it (tailscaled echoes the target as asked).
    Name(&'a [u8], u16),
}

/// Parse the header of a datagram from the relay: the sender and the header's length (the
/// payload follows it).
pub fn parse_udp(d: &[u8]) -> Result<(UdpFrom<'_>, usize), Error> {
    if d.len() < 4 {
        return Err(Error::Short);
    }
    if d[2] != 0 {
        return Err(Error::Frag(d[2]));
    }
    let (alen, at) = match d[3] {
        ATYP_V4 => (4, 4),
        ATYP_V6 => (16, 4),
        ATYP_DOMAIN if d.len() > 4 => (d[4] as usize, 5),
        ATYP_DOMAIN => return Err(Error::Short),
        a => return Err(Error::BadAtyp(a)),
    };
    let end = at + alen + 2;
    if d.len() < end {
        return Err(Error::Short);
    }
    let port = u16::from_be_bytes([d[end - 2], d[end - 1]]);
    let a = &d[at..at + alen];
    let from = match d[3] {
        ATYP_V4 => UdpFrom::Ip(SocketAddr::new(std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).into(), port)),
        ATYP_V6 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(a);
            UdpFrom::Ip(SocketAddr::new(std::net::Ipv6Addr::from(o).into(), port))
        }
        _ => UdpFrom::Name(a, port),
    };
    Ok((from, end))
}

/// How many bytes the CONNECT reply has in total, judged from the bytes read so far. Read
/// exactly that many: anything after the reply belongs to the application.
pub fn reply_len(have: &[u8]) -> Result<usize, Error> {
    if let Some(&v) = have.first() {
        if v != VER {
            return Err(Error::BadVersion(v));
        }
    }
    if have.len() < 5 {
        return Ok(5);
    }
    match have[3] {
        ATYP_V4 => Ok(4 + 4 + 2),
        ATYP_V6 => Ok(4 + 16 + 2),
        ATYP_DOMAIN => Ok(4 + 1 + have[4] as usize + 2),
        a => Err(Error::BadAtyp(a)),
    }
}

/// Judge a complete reply (as long as `reply_len` said).
pub fn parse_reply(r: &[u8]) -> Result<(), Error> {
    let need = reply_len(r)?;
    debug_assert!(r.len() >= need);
    match r[1] {
        0 => Ok(()),
        rep => Err(Error::Rep(rep)),
    }
}

/// The errno a failed handshake gives the application.
pub fn errno_for(e: Error) -> i32 {
    match e {
        Error::Rep(0x03) => libc::ENETUNREACH,
        Error::Rep(0x04) => libc::EHOSTUNREACH,
        Error::Rep(0x06) => libc::ETIMEDOUT,
        // tailscaled answers every dial error with 0x01; everything else is a refusal too.
        _ => libc::ECONNREFUSED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_bytes() {
        assert_eq!(greeting(false), &[5, 1, 0]);
        assert_eq!(greeting(true), &[5, 2, 0, 2]);
    }

    #[test]
    fn method_choice() {
        assert_eq!(parse_method([5, 0], false), Ok(0));
        assert_eq!(parse_method([5, 2], true), Ok(2));
        assert_eq!(parse_method([5, 2], false), Err(Error::Method(2)));
        assert_eq!(parse_method([5, 0xff], true), Err(Error::Method(0xff)));
        assert_eq!(parse_method([4, 0], false), Err(Error::BadVersion(4)));
    }

    #[test]
    fn auth() {
        assert_eq!(auth_request("al", "pw!"), vec![1, 2, b'a', b'l', 3, b'p', b'w', b'!']);
        assert_eq!(parse_auth_reply([1, 0]), Ok(()));
        assert_eq!(parse_auth_reply([5, 0]), Ok(()));
        assert_eq!(parse_auth_reply([1, 1]), Err(Error::AuthRejected(1)));
        assert_eq!(parse_auth_reply([9, 0]), Err(Error::BadVersion(9)));
    }

    #[test]
    fn requests() {
        let v4 = connect_request(&Target::Ip("100.64.0.2:8080".parse().unwrap())).unwrap();
        assert_eq!(v4, vec![5, 1, 0, 1, 100, 64, 0, 2, 0x1f, 0x90]);
        let v6 = connect_request(&Target::Ip("[fd7a:115c:a1e0::2]:80".parse().unwrap())).unwrap();
        assert_eq!(&v6[..4], &[5, 1, 0, 4]);
        assert_eq!(&v6[4..20], &"fd7a:115c:a1e0::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        assert_eq!(&v6[20..], &[0, 80]);
        let n = connect_request(&Target::Name("peer".into(), 443)).unwrap();
        assert_eq!(n, vec![5, 1, 0, 3, 4, b'p', b'e', b'e', b'r', 1, 0xbb]);
        assert_eq!(connect_request(&Target::Name("a".repeat(256), 1)), Err(Error::NameTooLong));
        let longest = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)].join(".");
        assert_eq!(connect_request(&Target::Name(longest.clone(), 1)).unwrap()[4], 253);
        for bad in ["", "a".repeat(64).as_str(), "peer\r\n", "pe er", "pe\0er", "a..b", "-a", "a_b", "a:1", &format!("{longest}x")] {
            assert_eq!(connect_request(&Target::Name(bad.into(), 1)), Err(Error::BadName), "{bad:?}");
        }
    }

    #[test]
    fn udp_associate_and_bound() {
        assert_eq!(udp_associate_request("0.0.0.0:0".parse().unwrap()), vec![5, 3, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(udp_associate_request("0.0.0.0:4660".parse().unwrap()), vec![5, 3, 0, 1, 0, 0, 0, 0, 0x12, 0x34]);
        assert_eq!(parse_bound(&[5, 0, 0, 1, 127, 0, 0, 1, 0xc3, 0x50]), Ok("127.0.0.1:50000".parse().unwrap()));
        let mut v6 = vec![5, 0, 0, 4];
        v6.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0, 7]);
        assert_eq!(parse_bound(&v6), Ok("[::1]:7".parse().unwrap()));
        assert_eq!(parse_bound(&[5, 0, 0, 3, 1, b'x', 0, 1]), Err(Error::BadAtyp(3)));
        assert_eq!(parse_bound(&[5, 0, 0, 1, 127, 0]), Err(Error::Short));
    }

    #[test]
    fn udp_headers_round_trip() {
        let mut h = [0u8; UDP_HEADER_MAX];
        let n = udp_header(&Target::Ip("100.64.0.2:4002".parse().unwrap()), &mut h).unwrap();
        assert_eq!(&h[..n], &[0, 0, 0, 1, 100, 64, 0, 2, 0x0f, 0xa2]);
        let mut d = h[..n].to_vec();
        d.extend_from_slice(b"payload");
        assert_eq!(parse_udp(&d), Ok((UdpFrom::Ip("100.64.0.2:4002".parse().unwrap()), 10)));
        let n = udp_header(&Target::Ip("[fd7a:115c:a1e0::2]:53".parse().unwrap()), &mut h).unwrap();
        assert_eq!(n, 22);
        assert_eq!(parse_udp(&h[..n]), Ok((UdpFrom::Ip("[fd7a:115c:a1e0::2]:53".parse().unwrap()), 22)));
        let n = udp_header(&Target::Name("peer-1".into(), 7), &mut h).unwrap();
        assert_eq!(&h[..n], &[0, 0, 0, 3, 6, b'p', b'e', b'e', b'r', b'-', b'1', 0, 7]);
        assert_eq!(parse_udp(&h[..n]), Ok((UdpFrom::Name(b"peer-1", 7), 13)));
        assert_eq!(udp_header(&Target::Name("pe er".into(), 7), &mut h), Err(Error::BadName));
        let longest = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)].join(".");
        assert_eq!(udp_header(&Target::Name(longest, 1), &mut h), Ok(4 + 1 + 253 + 2));
    }

    #[test]
    fn udp_headers_refused() {
        assert_eq!(parse_udp(&[0, 0, 1, 1, 1, 2, 3, 4, 0, 1]), Err(Error::Frag(1)));
        assert_eq!(parse_udp(&[0, 0, 0, 1, 1, 2, 3, 4, 0]), Err(Error::Short));
        assert_eq!(parse_udp(&[0, 0, 0, 9, 1, 2, 3, 4, 0, 1]), Err(Error::BadAtyp(9)));
        assert_eq!(parse_udp(&[0, 0, 0, 3]), Err(Error::Short));
        assert_eq!(parse_udp(&[0, 0, 0, 3, 5, b'a', 0, 1]), Err(Error::Short));
        assert_eq!(parse_udp(&[0, 0, 0]), Err(Error::Short));
        // Every prefix of a valid header is refused, never read past its end.
        let mut h = [0u8; UDP_HEADER_MAX];
        let n = udp_header(&Target::Name("peer6.tail1234.ts.net".into(), 9), &mut h).unwrap();
        for k in 0..n {
            assert!(parse_udp(&h[..k]).is_err(), "{k}");
        }
    }

    #[test]
    fn reply_lengths() {
        assert_eq!(reply_len(&[]), Ok(5));
        assert_eq!(reply_len(&[5, 0, 0]), Ok(5));
        assert_eq!(reply_len(&[5, 0, 0, 1, 0]), Ok(10));
        assert_eq!(reply_len(&[5, 0, 0, 4, 0]), Ok(22));
        assert_eq!(reply_len(&[5, 0, 0, 3, 7]), Ok(14));
        assert_eq!(reply_len(&[5, 0, 0, 9, 0]), Err(Error::BadAtyp(9)));
        assert_eq!(reply_len(&[4]), Err(Error::BadVersion(4)));
    }

    #[test]
    fn replies_and_errnos() {
        assert_eq!(parse_reply(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]), Ok(()));
        for (rep, errno) in [
            (1, libc::ECONNREFUSED),
            (2, libc::ECONNREFUSED),
            (3, libc::ENETUNREACH),
            (4, libc::EHOSTUNREACH),
            (5, libc::ECONNREFUSED),
            (6, libc::ETIMEDOUT),
            (7, libc::ECONNREFUSED),
            (8, libc::ECONNREFUSED),
        ] {
            let e = parse_reply(&[5, rep, 0, 1, 0, 0, 0, 0, 0, 0]).unwrap_err();
            assert_eq!(e, Error::Rep(rep));
            assert_eq!(errno_for(e), errno, "rep {rep}");
        }
        assert_eq!(errno_for(Error::BadAtyp(9)), libc::ECONNREFUSED);
    }
}

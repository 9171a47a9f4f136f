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
/// CONNECT, the only command tsproxy sends.
pub const CMD_CONNECT: u8 = 0x01;
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
    let mut v = Vec::with_capacity(22);
    v.extend_from_slice(&[VER, CMD_CONNECT, 0]);
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
    Ok(v)
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

//! HTTP CONNECT (RFC 9110 §9.3.6): request encoder and response-head parser, pure functions.
use crate::Target;
use std::net::SocketAddr;

/// Longest response head we accept.
pub const MAX_HEAD: usize = 8192;

/// Why a CONNECT request could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The target name is not an RFC 1123 host name (`names::is_host_name`). A CR or LF in it
    /// would end the request line and let the rest be read as headers or a second request;
    /// only host names are ever tailnet names, and this check makes sure of it once more.
    InvalidHost,
}

/// The request-target (`host:port`, `[v6]:port`) for `t`, unchecked: [`connect_request`]
/// validates names before it uses this.
pub fn authority(t: &Target) -> String {
    match t {
        Target::Ip(SocketAddr::V6(a)) => format!("[{}]:{}", a.ip(), a.port()),
        Target::Ip(a) => a.to_string(),
        Target::Name(n, p) => format!("{n}:{p}"),
    }
}

/// `CONNECT host:port HTTP/1.1` with a `Host` header and, given credentials, a
/// `Proxy-Authorization: Basic` header (base64, so any bytes in them are safe on the wire).
pub fn connect_request(t: &Target, auth: Option<(&str, &str)>) -> Result<Vec<u8>, Error> {
    if let Target::Name(n, _) = t {
        if !crate::names::is_host_name(n) {
            return Err(Error::InvalidHost);
        }
    }
    let a = authority(t);
    let mut s = format!("CONNECT {a} HTTP/1.1\r\nHost: {a}\r\n");
    if let Some((u, p)) = auth {
        s.push_str("Proxy-Authorization: Basic ");
        s.push_str(&base64(format!("{u}:{p}").as_bytes()));
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    Ok(s.into_bytes())
}

/// Offset just past the `\r\n\r\n` that ends the head, if `buf` holds it.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The status code of a response head (`HTTP/1.x NNN ...`).
pub fn status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut it = line.split(' ');
    let ver = it.next()?;
    if !ver.starts_with("HTTP/1.") {
        return None;
    }
    let code = it.next()?;
    // RFC 9110 §15: three digits, the first one the class (1 to 5; 0 is no class at all).
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) || code.starts_with('0') {
        return None;
    }
    code.parse().ok()
}

/// The errno for a non-2xx status. Every failure is ECONNREFUSED (tailscaled answers any failed
/// dial with 500 and a Tailscale-Connect-Error header); 504 (gateway timeout) is ETIMEDOUT.
pub fn errno_for(status: Option<u16>) -> i32 {
    match status {
        Some(504) => libc::ETIMEDOUT,
        _ => libc::ECONNREFUSED,
    }
}

/// Standard base64 with padding (RFC 4648 §4), for `Proxy-Authorization: Basic`: small enough
/// to write here rather than pull in a crate for one header.
pub fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for c in input.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bytes() {
        let r = connect_request(&Target::Name("peer".into(), 80), None).unwrap();
        assert_eq!(r, b"CONNECT peer:80 HTTP/1.1\r\nHost: peer:80\r\n\r\n");
        let r = connect_request(&Target::Ip("[fd7a:115c:a1e0::2]:8080".parse().unwrap()), Some(("u", "p\r\nX: y"))).unwrap();
        assert_eq!(
            std::str::from_utf8(&r).unwrap(),
            "CONNECT [fd7a:115c:a1e0::2]:8080 HTTP/1.1\r\nHost: [fd7a:115c:a1e0::2]:8080\r\nProxy-Authorization: Basic dTpwDQpYOiB5\r\n\r\n"
        );
    }

    #[test]
    fn request_line_injection_is_refused() {
        for bad in ["peer\r\nHost: evil", "peer HTTP/1.1\r\n\r\nGET / HTTP/1.1", "peer\n", "peer\0", "", "a b", "x/y", "a@b", "[::1]"] {
            assert_eq!(connect_request(&Target::Name(bad.into(), 80), None), Err(Error::InvalidHost), "{bad:?}");
        }
    }

    #[test]
    fn base64_vectors() {
        for (i, o) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("Aladdin:open sesame", "QWxhZGRpbjpvcGVuIHNlc2FtZQ==")]
        {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn heads() {
        let resp = b"HTTP/1.1 200 Connection established\r\nProxy-agent: x\r\n\r\nSSH-2.0";
        let end = head_end(resp).unwrap();
        assert_eq!(&resp[end..], b"SSH-2.0");
        assert_eq!(status(&resp[..end]), Some(200));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\n\r"), None);
        assert_eq!(status(b"HTTP/1.0 500 Internal\r\nTailscale-Connect-Error: x\r\n\r\n"), Some(500));
        assert_eq!(status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status(b"HTTP/1.1 20 OK\r\n"), None);
        assert_eq!(status(b"HTTP/1.1 2000 OK\r\n"), None);
        assert_eq!(status(b"HTTP/1.1 007 OK\r\n"), None);
        assert_eq!(status(b"HTTP/1.1 200\r\n\r\n"), Some(200));
        assert_eq!(errno_for(Some(500)), libc::ECONNREFUSED);
        assert_eq!(errno_for(Some(504)), libc::ETIMEDOUT);
        assert_eq!(errno_for(None), libc::ECONNREFUSED);
    }
}

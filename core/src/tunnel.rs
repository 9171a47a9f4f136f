//! The handshake on the application's own socket: connect it to an upstream proxy, then SOCKS5
//! or HTTP CONNECT to the target, failing over to the next upstream when a proxy itself is
//! unreachable or refuses us. Raw syscalls only (see `sys`). Reads are exact: not one byte past
//! the proxy's reply is consumed, so data the peer sends first (SSH banners, SMTP greetings)
//! stays in the socket for the application.
use crate::config::{LogLevel, Scheme, Upstream};
use crate::sys::{self, code};
use crate::{http, socks5, Target};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One proxy with the addresses it was resolved to.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub up: Upstream,
    pub addrs: Vec<SocketAddr>,
}

pub struct Opts {
    /// The whole dial (all upstreams) must finish by then.
    pub deadline: Instant,
    /// Also cap each wait for the proxy's answer (SO_RCVTIMEO of a blocking socket).
    pub read_cap: Option<Duration>,
    /// SOCKS5 without auth: send greeting and request in one write.
    pub pipeline: bool,
}

/// How a single attempt ended.
#[derive(Debug, PartialEq, Eq)]
enum Fail {
    /// The proxy itself failed (unreachable, refused our auth, spoke garbage before the
    /// request): the next upstream may do better.
    Proxy(i32, String),
    /// The proxy answered for the destination (or time ran out): final.
    Final(i32, String),
}

pub type Log<'a> = &'a mut dyn FnMut(LogLevel, std::fmt::Arguments<'_>);

/// Tunnel `fd` (a TCP socket of `family`, not yet connected) to `target` through the first
/// upstream that works. Leaves the file status flags exactly as found. On failure the socket is
/// disconnected again and the errno for the application is returned.
pub fn establish(fd: i32, family: i32, ups: &[Resolved], target: &Target, opts: &Opts, log: Log<'_>) -> Result<SocketAddr, i32> {
    let flags = sys::fcntl_getfl(fd).map_err(|e| code(&e))?;
    if flags & libc::O_NONBLOCK == 0 {
        sys::fcntl_setfl(fd, flags | libc::O_NONBLOCK).map_err(|e| code(&e))?;
    }
    let r = try_all(fd, family, ups, target, opts, log);
    if flags & libc::O_NONBLOCK == 0 {
        let _ = sys::fcntl_setfl(fd, flags);
    }
    r
}

fn try_all(fd: i32, family: i32, ups: &[Resolved], target: &Target, opts: &Opts, log: Log<'_>) -> Result<SocketAddr, i32> {
    let mut last = libc::ECONNREFUSED;
    let mut tried = false;
    for r in ups {
        for addr in &r.addrs {
            let Some((sa, len)) = crate::sockaddr::encode(*addr, family) else { continue };
            tried = true;
            match attempt(fd, &r.up, &sa, len, target, opts) {
                Ok(()) => return Ok(*addr),
                Err(Fail::Proxy(e, why)) => {
                    log(LogLevel::Error, format_args!("proxy {} ({addr}) failed for {target}: {why}", r.up));
                    sys::disconnect(fd);
                    last = e;
                }
                Err(Fail::Final(e, why)) => {
                    log(LogLevel::Info, format_args!("{target} via {}: {why}", r.up));
                    sys::disconnect(fd);
                    return Err(e);
                }
            }
        }
    }
    if !tried {
        log(LogLevel::Error, format_args!("no proxy address usable from this socket family for {target}"));
    }
    // Every upstream failed to even take the request: the destination was never reached.
    let _ = last;
    Err(libc::ECONNREFUSED)
}

fn attempt(fd: i32, up: &Upstream, sa: &libc::sockaddr_storage, len: libc::socklen_t, target: &Target, o: &Opts) -> Result<(), Fail> {
    connect_proxy(fd, sa, len, o)?;
    match up.scheme {
        Scheme::Socks5 => socks(fd, up, target, o),
        Scheme::Http => http_connect(fd, up, target, o),
    }
}

fn connect_proxy(fd: i32, sa: &libc::sockaddr_storage, len: libc::socklen_t, o: &Opts) -> Result<(), Fail> {
    match sys::connect_raw(fd, (sa as *const libc::sockaddr_storage).cast(), len) {
        Ok(()) => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(Fail::Proxy(code(&e), format!("connect: {e}"))),
    }
    wait(fd, libc::POLLOUT, o, false)?;
    match sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR) {
        Ok(0) => Ok(()),
        Ok(e) => Err(Fail::Proxy(e, format!("connect: {}", io::Error::from_raw_os_error(e)))),
        Err(e) => Err(Fail::Proxy(code(&e), format!("SO_ERROR: {e}"))),
    }
}

/// Wait for `events`, retrying EINTR, until the deadline.
fn wait(fd: i32, events: i16, o: &Opts, reading: bool) -> Result<(), Fail> {
    let start = Instant::now();
    loop {
        let now = Instant::now();
        let mut left = o.deadline.saturating_duration_since(now);
        if reading {
            if let Some(cap) = o.read_cap {
                left = left.min(cap.saturating_sub(now - start));
            }
        }
        if left.is_zero() {
            return Err(Fail::Final(libc::ETIMEDOUT, "timed out waiting for the proxy".into()));
        }
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        match sys::poll1(fd, events, ms) {
            Ok(0) => continue,
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Fail::Final(code(&e), format!("poll: {e}"))),
        }
    }
}

fn write_all(fd: i32, mut buf: &[u8], o: &Opts, proxy_stage: bool) -> Result<(), Fail> {
    let fail = |e: i32, why: String| if proxy_stage { Fail::Proxy(e, why) } else { Fail::Final(e, why) };
    while !buf.is_empty() {
        match sys::send(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait(fd, libc::POLLOUT, o, false)?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(fail(libc::ECONNREFUSED, format!("send: {e}"))),
        }
    }
    Ok(())
}

/// Read exactly `buf.len()` bytes.
fn read_exact(fd: i32, buf: &mut [u8], o: &Opts, proxy_stage: bool) -> Result<(), Fail> {
    let fail = |why: String| if proxy_stage { Fail::Proxy(libc::ECONNREFUSED, why) } else { Fail::Final(libc::ECONNREFUSED, why) };
    let mut have = 0;
    while have < buf.len() {
        match sys::recv(fd, &mut buf[have..], 0) {
            Ok(0) => return Err(fail("proxy closed the connection".into())),
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait(fd, libc::POLLIN, o, true)?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(fail(format!("recv: {e}"))),
        }
    }
    Ok(())
}

fn socks(fd: i32, up: &Upstream, target: &Target, o: &Opts) -> Result<(), Fail> {
    let auth = up.user.as_deref().map(|u| (u, up.pass.as_deref().unwrap_or("")));
    let req = socks5::connect_request(target).map_err(|e| Fail::Final(libc::EINVAL, format!("{e:?}")))?;
    let greeting = socks5::greeting(auth.is_some());
    let pipelined = o.pipeline && auth.is_none();
    if pipelined {
        let mut both = Vec::with_capacity(greeting.len() + req.len());
        both.extend_from_slice(greeting);
        both.extend_from_slice(&req);
        write_all(fd, &both, o, true)?;
    } else {
        write_all(fd, greeting, o, true)?;
    }
    let mut m = [0u8; 2];
    read_exact(fd, &mut m, o, true)?;
    let method = socks5::parse_method(m, auth.is_some()).map_err(|e| Fail::Proxy(libc::ECONNREFUSED, format!("greeting: {e:?}")))?;
    if method == socks5::METHOD_USERPASS {
        let (u, p) = auth.unwrap_or(("", ""));
        write_all(fd, &socks5::auth_request(u, p), o, true)?;
        let mut a = [0u8; 2];
        read_exact(fd, &mut a, o, true)?;
        socks5::parse_auth_reply(a).map_err(|e| Fail::Proxy(libc::ECONNREFUSED, format!("auth: {e:?}")))?;
    }
    if !pipelined {
        write_all(fd, &req, o, false)?;
    }
    let mut reply = [0u8; 4 + 1 + 255 + 2];
    let mut have = 0;
    loop {
        let need = socks5::reply_len(&reply[..have]).map_err(|e| Fail::Final(libc::ECONNREFUSED, format!("reply: {e:?}")))?;
        if have >= need {
            break;
        }
        read_exact(fd, &mut reply[have..need], o, false)?;
        have = need;
    }
    socks5::parse_reply(&reply[..have]).map_err(|e| Fail::Final(socks5::errno_for(e), format!("reply: {e:?}")))
}

fn http_connect(fd: i32, up: &Upstream, target: &Target, o: &Opts) -> Result<(), Fail> {
    let auth = up.user.as_deref().map(|u| (u, up.pass.as_deref().unwrap_or("")));
    write_all(fd, &http::connect_request(target, auth), o, true)?;
    // Peek, find the end of the head, consume exactly the head. A peek without the end is
    // consumed whole (it is all head), so the next wait blocks until more arrives.
    let mut head: Vec<u8> = Vec::with_capacity(256);
    let mut peek = [0u8; 1024];
    loop {
        let n = match sys::recv(fd, &mut peek, libc::MSG_PEEK) {
            Ok(0) => return Err(Fail::Final(libc::ECONNREFUSED, "proxy closed the connection".into())),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait(fd, libc::POLLIN, o, true)?;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Fail::Final(libc::ECONNREFUSED, format!("recv: {e}"))),
        };
        let old = head.len();
        head.extend_from_slice(&peek[..n]);
        let take = match http::head_end(&head[old.saturating_sub(3)..]) {
            Some(end) => old.saturating_sub(3) + end - old,
            None => n,
        };
        head.truncate(old + take);
        read_exact(fd, &mut peek[..take], o, false)?;
        if http::head_end(&head).is_some() {
            break;
        }
        if head.len() > http::MAX_HEAD {
            return Err(Fail::Final(libc::ECONNREFUSED, "proxy response head too long".into()));
        }
    }
    match http::status(&head) {
        Some(s) if (200..300).contains(&s) => Ok(()),
        Some(407) => Err(Fail::Proxy(libc::ECONNREFUSED, "proxy wants authentication (407)".into())),
        s => {
            let line = head.split(|&b| b == b'\r').next().unwrap_or(&[]);
            Err(Fail::Final(http::errno_for(s), format!("proxy answered {:?}", String::from_utf8_lossy(line))))
        }
    }
}

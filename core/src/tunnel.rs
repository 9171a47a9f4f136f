//! The handshake on the application's own socket, as a resumable state machine: connect the
//! socket to an upstream proxy, then SOCKS5 or HTTP CONNECT to the target, failing over to the
//! next upstream when a proxy itself is unreachable or refuses us. Every step is a nonblocking
//! raw syscall (see `sys`); when one would block, the machine says which readiness it waits for
//! (`Step::Want`). `establish` drives it to the end for a blocking connect; the preload
//! library's event-loop path drives it from epoll/poll/select hooks; a supervisor can drive it
//! on a socket it took from another process. One implementation for all.
//!
//! Reads are exact: not one byte past the proxy's reply is consumed, so data the peer sends
//! first (SSH banners, SMTP greetings) stays in the socket for the application.
use crate::config::{LogLevel, Scheme, Upstream};
use crate::sys;
use crate::{http, socks5, Errno, Target};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One proxy with the addresses it was resolved to.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The proxy as configured (scheme, credentials; shown in logs without the password).
    pub up: Upstream,
    /// Where to dial it, tried in order; resolved by the caller, which knows how to resolve
    /// without re-entering its own hooks.
    pub addrs: Vec<SocketAddr>,
    /// Who may own the proxy's end of a connection to a loopback address
    /// (`TSPROXY_PROXY_OWNER`), checked before anything is written on it (see `peer`).
    pub owners: crate::peer::Owners,
}

/// Where the handshake reports what happened: a callback, so the library (its own log file
/// and levels), the launcher's supervisor and tests each log in their own way.
pub type Log<'a> = &'a mut dyn FnMut(LogLevel, std::fmt::Arguments<'_>);

/// What the machine needs next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Call `resume` again once the socket has these poll events (POLLIN or POLLOUT).
    Want(i16),
    /// Finished: the proxy address used, or the errno for the application. On failure the
    /// socket has been disconnected again.
    Done(Result<SocketAddr, Errno>),
}

#[derive(Debug, PartialEq, Eq)]
enum Fail {
    /// The proxy itself failed (unreachable, refused our auth, spoke garbage before the
    /// request): the next upstream may do better.
    Proxy(i32, String),
    /// The proxy answered for the destination: final.
    Final(i32, String),
    /// Like `Proxy`, but already logged at error level once for the process (the owner of a
    /// loopback proxy's socket is not trusted, or cannot be found out): logged at info.
    Quiet(i32, String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum St {
    Idle,
    SendGreeting,
    ReadMethod,
    SendAuth,
    ReadAuth,
    SendRequest,
    ReadReply,
    SendHttp,
    ReadHead,
    Done,
}

/// The resumable handshake on one socket: see the module docs. Create it with [`Handshake::new`],
/// call [`Handshake::resume`] until it says [`Step::Done`], waiting in between for the
/// readiness it wants (or let [`drive`] do the waiting).
pub struct Handshake<'a> {
    fd: i32,
    family: i32,
    ups: &'a [Resolved],
    target: Target,
    pipeline: bool,
    /// The SOCKS5 command: CONNECT, or UDP ASSOCIATE (then `target` is the client's address,
    /// HTTP upstreams are skipped, and a refusal of the command fails over to the next one).
    cmd: u8,
    /// Index into the flattened (upstream, address) list.
    next: usize,
    cur: Option<(usize, SocketAddr)>,
    st: St,
    out: Vec<u8>,
    buf: Vec<u8>,
    need: usize,
    /// The current attempt's connection has passed `peer::vet` (nothing is written before).
    vetted: bool,
}

/// Result of one nonblocking I/O attempt.
enum Io {
    Ready,
    Blocked(i16),
}

impl<'a> Handshake<'a> {
    /// `fd` is a TCP socket of `family`, not connected, in nonblocking mode.
    pub fn new(fd: i32, family: i32, ups: &'a [Resolved], target: Target, pipeline: bool) -> Self {
        Handshake {
            fd,
            family,
            ups,
            target,
            pipeline,
            cmd: socks5::CMD_CONNECT,
            next: 0,
            cur: None,
            st: St::Idle,
            out: Vec::new(),
            buf: Vec::new(),
            need: 0,
            vetted: false,
        }
    }

    /// A UDP ASSOCIATE on `fd` (a TCP socket as for `new`, which becomes the association's
    /// control connection): `client` is where the datagrams will come from (zeros where not
    /// known). Only SOCKS5 upstreams are tried (HTTP CONNECT cannot carry datagrams); one that
    /// refuses the command (microsocks) fails over like an unreachable one. On success
    /// [`Handshake::bound`] names the relay.
    pub fn associate(fd: i32, family: i32, ups: &'a [Resolved], client: SocketAddr, pipeline: bool) -> Self {
        let mut h = Handshake::new(fd, family, ups, Target::Ip(client), pipeline);
        h.cmd = socks5::CMD_UDP_ASSOCIATE;
        h
    }

    fn udp(&self) -> bool {
        self.cmd == socks5::CMD_UDP_ASSOCIATE
    }

    /// After a successful UDP ASSOCIATE: the relay's address (BND.ADDR:BND.PORT).
    pub fn bound(&self) -> Option<SocketAddr> {
        if self.st != St::Done || !self.udp() {
            return None;
        }
        socks5::parse_bound(&self.buf).ok()
    }

    /// The socket the handshake runs on (-1 for a placeholder that holds no handshake).
    pub fn fd(&self) -> i32 {
        self.fd
    }

    /// The same socket under another descriptor number (a dup of `fd()`, which is about to
    /// go away): every later step uses `fd`.
    pub fn set_fd(&mut self, fd: i32) {
        self.fd = fd;
    }

    /// The destination asked for (for logs of callers that drive the machine).
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Start, or continue after the wanted readiness (a spurious call is harmless).
    pub fn resume(&mut self, log: Log<'_>) -> Step {
        loop {
            let r = match self.st {
                St::Done => return Step::Done(Err(Errno(libc::EALREADY))),
                St::Idle => match self.begin_attempt(log) {
                    Some(step) => return step,
                    None => continue,
                },
                _ => self.advance(),
            };
            // A UDP ASSOCIATE involves no destination: whatever went wrong is the proxy's, and
            // the next one may do better.
            let r = match r {
                Err(Fail::Final(e, why)) if self.udp() => Err(Fail::Proxy(e, why)),
                r => r,
            };
            let quiet = matches!(r, Err(Fail::Quiet(..)));
            match r {
                Ok(None) if self.st == St::Done => return Step::Done(Ok(self.cur.map(|c| c.1).expect("an attempt was made"))),
                Ok(None) => continue,
                Ok(Some(ev)) => return Step::Want(ev),
                Err(Fail::Proxy(e, why) | Fail::Quiet(e, why)) => {
                    if let Some((i, a)) = self.cur {
                        let level = if quiet { LogLevel::Info } else { LogLevel::Error };
                        log(level, format_args!("proxy {} ({a}) failed for {}: {why}", self.ups[i].up, self.target));
                    }
                    let _ = e;
                    sys::disconnect(self.fd);
                    self.st = St::Idle;
                }
                Err(Fail::Final(e, why)) => {
                    if let Some((i, _)) = self.cur {
                        log(LogLevel::Info, format_args!("{} via {}: {why}", self.target, self.ups[i].up));
                    }
                    sys::disconnect(self.fd);
                    self.st = St::Done;
                    return Step::Done(Err(Errno(e)));
                }
            }
        }
    }

    /// Abandon (time ran out): disconnect and finish with `e`.
    pub fn abort(&mut self, e: Errno) -> Step {
        if self.st != St::Done {
            sys::disconnect(self.fd);
            self.st = St::Done;
        }
        Step::Done(Err(e))
    }

    /// Connect to the next usable upstream address. None: go on with the state machine.
    fn begin_attempt(&mut self, log: Log<'_>) -> Option<Step> {
        if let Target::Name(n, _) = &self.target {
            // Checked before any proxy is contacted: no encoder would take it anyway.
            if !crate::names::is_host_name(n) {
                log(LogLevel::Error, format_args!("refusing to ask a proxy for {:?}: not a host name", n));
                self.st = St::Done;
                return Some(Step::Done(Err(Errno(libc::EINVAL))));
            }
        }
        let mut k = 0;
        for (i, r) in self.ups.iter().enumerate() {
            for addr in &r.addrs {
                if k < self.next {
                    k += 1;
                    continue;
                }
                k += 1;
                self.next = k;
                if self.udp() && r.up.scheme != Scheme::Socks5 {
                    log(LogLevel::Info, format_args!("proxy {} skipped for UDP: HTTP CONNECT cannot carry datagrams", r.up));
                    continue;
                }
                let Some((sa, len)) = crate::sockaddr::encode(*addr, self.family) else { continue };
                self.cur = Some((i, *addr));
                self.vetted = false;
                match sys::connect_raw(self.fd, (&sa as *const libc::sockaddr_storage).cast(), len) {
                    Ok(()) => {
                        if let Err(Fail::Final(e, why) | Fail::Proxy(e, why) | Fail::Quiet(e, why)) = self.start_protocol() {
                            log(LogLevel::Info, format_args!("{} via {}: {why}", self.target, r.up));
                            sys::disconnect(self.fd);
                            self.st = St::Done;
                            return Some(Step::Done(Err(Errno(e))));
                        }
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                        // Go on at once: a proxy on loopback has usually completed the TCP
                        // handshake before connect() returned (the SYN and SYN-ACK are handled
                        // inline), so the greeting can go now, saving a wait and a wake-up. A
                        // socket still in SYN_SENT answers the nonblocking send with EAGAIN and
                        // we wait for POLLOUT as before; a refused one answers with the
                        // connect's error, which fails over like a failed connect.
                        if let Err(Fail::Final(e, why) | Fail::Proxy(e, why) | Fail::Quiet(e, why)) = self.start_protocol() {
                            log(LogLevel::Info, format_args!("{} via {}: {why}", self.target, r.up));
                            sys::disconnect(self.fd);
                            self.st = St::Done;
                            return Some(Step::Done(Err(Errno(e))));
                        }
                    }
                    // The socket's own state, not the proxy's: already connected, or a connect
                    // of the application's still in progress. The kernel's answer, untouched.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EISCONN) | Some(libc::EALREADY)) => {
                        self.st = St::Done;
                        return Some(Step::Done(Err(Errno::of(&e))));
                    }
                    Err(e) => {
                        log(LogLevel::Error, format_args!("proxy {} ({addr}) failed for {}: connect: {e}", r.up, self.target));
                        sys::disconnect(self.fd);
                        continue;
                    }
                }
                return None;
            }
        }
        if self.cur.is_none() {
            log(LogLevel::Error, format_args!("no proxy address usable from this socket family for {}", self.target));
        }
        // Every upstream failed to even take the request: the destination was never reached.
        self.st = St::Done;
        Some(Step::Done(Err(Errno(libc::ECONNREFUSED))))
    }

    fn up(&self) -> &'a Upstream {
        &self.ups[self.cur.map(|c| c.0).unwrap_or(0)].up
    }

    fn auth(&self) -> Option<(&'a str, &'a str)> {
        let up = self.up();
        up.user.as_deref().map(|u| (u, up.pass.as_deref().unwrap_or("")))
    }

    fn start_protocol(&mut self) -> Result<(), Fail> {
        self.out.clear();
        match self.up().scheme {
            Scheme::Socks5 => {
                let auth = self.auth().is_some();
                self.out.extend_from_slice(socks5::greeting(auth));
                if self.pipeline && !auth {
                    // Encoding errors surface again when the request is built in ReadMethod.
                    if let Ok(req) = socks5::request(self.cmd, &self.target) {
                        self.out.extend_from_slice(&req);
                    }
                }
                self.st = St::SendGreeting;
            }
            Scheme::Http => {
                self.out = http::connect_request(&self.target, self.auth()).map_err(|e| Fail::Final(libc::EINVAL, format!("{e:?}")))?;
                self.st = St::SendHttp;
            }
        }
        Ok(())
    }

    fn pipelined(&self) -> bool {
        self.pipeline && self.auth().is_none()
    }

    /// One state's work. Ok(None): moved on; Ok(Some(ev)): blocked on ev.
    fn advance(&mut self) -> Result<Option<i16>, Fail> {
        match self.st {
            St::SendGreeting => {
                if let Io::Blocked(ev) = self.flush(true)? {
                    return Ok(Some(ev));
                }
                self.expect(2, St::ReadMethod);
                // The answer cannot be there yet: wait for it rather than try a read.
                return Ok(Some(libc::POLLIN));
            }
            St::ReadMethod => {
                if let Io::Blocked(ev) = self.fill(true)? {
                    return Ok(Some(ev));
                }
                let auth = self.auth();
                let m = socks5::parse_method([self.buf[0], self.buf[1]], auth.is_some())
                    .map_err(|e| Fail::Proxy(libc::ECONNREFUSED, format!("greeting: {e:?}")))?;
                if m == socks5::METHOD_USERPASS {
                    let (u, p) = auth.unwrap_or(("", ""));
                    self.out = socks5::auth_request(u, p);
                    self.st = St::SendAuth;
                } else {
                    self.request()?;
                }
            }
            St::SendAuth => {
                if let Io::Blocked(ev) = self.flush(true)? {
                    return Ok(Some(ev));
                }
                self.expect(2, St::ReadAuth);
                return Ok(Some(libc::POLLIN));
            }
            St::ReadAuth => {
                if let Io::Blocked(ev) = self.fill(true)? {
                    return Ok(Some(ev));
                }
                socks5::parse_auth_reply([self.buf[0], self.buf[1]]).map_err(|e| Fail::Proxy(libc::ECONNREFUSED, format!("auth: {e:?}")))?;
                self.request()?;
            }
            St::SendRequest => {
                if let Io::Blocked(ev) = self.flush(false)? {
                    return Ok(Some(ev));
                }
                self.expect(5, St::ReadReply);
                return Ok(Some(libc::POLLIN));
            }
            St::ReadReply => loop {
                if let Io::Blocked(ev) = self.fill(false)? {
                    return Ok(Some(ev));
                }
                let need = socks5::reply_len(&self.buf).map_err(|e| Fail::Final(libc::ECONNREFUSED, format!("reply: {e:?}")))?;
                if need > self.buf.len() {
                    self.need = need;
                    continue;
                }
                socks5::parse_reply(&self.buf).map_err(|e| {
                    if self.udp() {
                        // The proxy will not relay datagrams for anyone: another one may.
                        Fail::Proxy(libc::ENETUNREACH, format!("UDP ASSOCIATE refused: {e:?}"))
                    } else {
                        Fail::Final(socks5::errno_for(e), format!("reply: {e:?}"))
                    }
                })?;
                self.st = St::Done;
                return Ok(None);
            },
            St::SendHttp => {
                if let Io::Blocked(ev) = self.flush(true)? {
                    return Ok(Some(ev));
                }
                self.buf.clear();
                self.st = St::ReadHead;
                return Ok(Some(libc::POLLIN));
            }
            St::ReadHead => {
                if let Io::Blocked(ev) = self.read_head()? {
                    return Ok(Some(ev));
                }
                return match http::status(&self.buf) {
                    Some(s) if (200..300).contains(&s) => {
                        self.st = St::Done;
                        Ok(None)
                    }
                    Some(407) => Err(Fail::Proxy(libc::ECONNREFUSED, "proxy wants authentication (407)".into())),
                    s => {
                        let line = self.buf.split(|&b| b == b'\r').next().unwrap_or(&[]);
                        Err(Fail::Final(http::errno_for(s), format!("proxy answered {:?}", String::from_utf8_lossy(line))))
                    }
                };
            }
            St::Idle | St::Done => {}
        }
        Ok(None)
    }

    /// Finished successfully? (Checked by `resume` callers through Step.)
    fn request(&mut self) -> Result<(), Fail> {
        if self.pipelined() {
            self.expect(5, St::ReadReply);
            return Ok(());
        }
        self.out = socks5::request(self.cmd, &self.target).map_err(|e| Fail::Final(libc::EINVAL, format!("{e:?}")))?;
        self.st = St::SendRequest;
        Ok(())
    }

    fn expect(&mut self, n: usize, st: St) {
        self.buf.clear();
        self.need = n;
        self.st = st;
    }

    fn flush(&mut self, proxy_stage: bool) -> Result<Io, Fail> {
        if !self.vetted && !self.out.is_empty() {
            if let Some(ev) = self.vet()? {
                return Ok(Io::Blocked(ev));
            }
            self.vetted = true;
        }
        while !self.out.is_empty() {
            match sys::send(self.fd, &self.out) {
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Io::Blocked(libc::POLLOUT)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let why = format!("send: {e}");
                    return Err(if proxy_stage { Fail::Proxy(libc::ECONNREFUSED, why) } else { Fail::Final(libc::ECONNREFUSED, why) });
                }
            }
        }
        Ok(Io::Ready)
    }

    /// Before the first byte goes to a proxy on loopback: is its end of the connection owned by
    /// someone we trust (`peer::vet`)? Some(ev): not connected yet, wait for `ev`.
    fn vet(&mut self) -> Result<Option<i16>, Fail> {
        let Some((i, addr)) = self.cur else { return Ok(None) };
        let up = &self.ups[i];
        match crate::peer::vet(self.fd, addr, &up.owners) {
            crate::peer::Verdict::Pass => Ok(None),
            crate::peer::Verdict::Pending => Ok(Some(libc::POLLOUT)),
            crate::peer::Verdict::ConnectFailed(e) => Err(Fail::Proxy(libc::ECONNREFUSED, format!("connect: {}", io::Error::from_raw_os_error(e)))),
            crate::peer::Verdict::Refused(uid) => {
                let who = match uid {
                    Some(u) => format!("uid {u}"),
                    None => "no socket the kernel could name".to_string(),
                };
                let why = format!(
                    "its socket at {addr} belongs to {who}, not to root or this process's user: nothing sent (if that user runs your proxy, set TSPROXY_PROXY_OWNER={})",
                    uid.map_or("<uid>".to_string(), |u| u.to_string())
                );
                Err(self.once(false, why))
            }
            crate::peer::Verdict::Unavailable(e) => {
                let why = format!(
                    "cannot find out who owns its socket at {addr} (sock_diag: {}): nothing sent (TSPROXY_PROXY_OWNER=any turns the check off)",
                    io::Error::from_raw_os_error(e)
                );
                Err(self.once(true, why))
            }
        }
    }

    /// Fail over with `why`: at error level the first time in the process, at info after.
    fn once(&self, unavailable: bool, why: String) -> Fail {
        if crate::peer::first_time(unavailable) {
            Fail::Proxy(libc::ECONNREFUSED, why)
        } else {
            Fail::Quiet(libc::ECONNREFUSED, why)
        }
    }

    /// Read until `buf` holds `need` bytes, never more.
    fn fill(&mut self, proxy_stage: bool) -> Result<Io, Fail> {
        let fail = |why: String| if proxy_stage { Fail::Proxy(libc::ECONNREFUSED, why) } else { Fail::Final(libc::ECONNREFUSED, why) };
        while self.buf.len() < self.need {
            let have = self.buf.len();
            self.buf.resize(self.need, 0);
            let r = sys::recv(self.fd, &mut self.buf[have..], 0);
            match r {
                Ok(0) => {
                    self.buf.truncate(have);
                    return Err(fail("proxy closed the connection".into()));
                }
                Ok(n) => self.buf.truncate(have + n),
                Err(e) => {
                    self.buf.truncate(have);
                    match e.kind() {
                        io::ErrorKind::WouldBlock => return Ok(Io::Blocked(libc::POLLIN)),
                        io::ErrorKind::Interrupted => {}
                        _ => return Err(fail(format!("recv: {e}"))),
                    }
                }
            }
        }
        Ok(Io::Ready)
    }

    /// Peek, find the end of the HTTP head, consume exactly the head. A peek without the end is
    /// consumed whole (it is all head), so the next wait blocks until more arrives.
    fn read_head(&mut self) -> Result<Io, Fail> {
        let mut peek = [0u8; 1024];
        loop {
            let n = match sys::recv(self.fd, &mut peek, libc::MSG_PEEK) {
                Ok(0) => return Err(Fail::Final(libc::ECONNREFUSED, "proxy closed the connection".into())),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Io::Blocked(libc::POLLIN)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Fail::Final(libc::ECONNREFUSED, format!("recv: {e}"))),
            };
            let old = self.buf.len();
            self.buf.extend_from_slice(&peek[..n]);
            let from = old.saturating_sub(3);
            let take = match http::head_end(&self.buf[from..]) {
                Some(end) => from + end - old,
                None => n,
            };
            self.buf.truncate(old + take);
            // Consume exactly what we keep; it is already in the socket, so this cannot block.
            let mut sink = [0u8; 1024];
            let mut left = take;
            while left > 0 {
                match sys::recv(self.fd, &mut sink[..left], 0) {
                    Ok(0) => return Err(Fail::Final(libc::ECONNREFUSED, "proxy closed the connection".into())),
                    Ok(k) => left -= k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Fail::Final(libc::ECONNREFUSED, format!("recv: {e}"))),
                }
            }
            if http::head_end(&self.buf).is_some() {
                return Ok(Io::Ready);
            }
            if self.buf.len() > http::MAX_HEAD {
                return Err(Fail::Final(libc::ECONNREFUSED, "proxy response head too long".into()));
            }
        }
    }

    /// The proxy address in use (after success).
    pub fn via(&self) -> Option<SocketAddr> {
        self.cur.map(|c| c.1)
    }
}

/// How [`establish`] waits.
pub struct Opts {
    /// The whole dial (all upstreams) must finish by then.
    pub deadline: Instant,
    /// Also cap each wait for the proxy's answer (SO_RCVTIMEO of a blocking socket).
    pub read_cap: Option<Duration>,
    /// SOCKS5 without auth: send greeting and request in one write.
    pub pipeline: bool,
}

/// Drive a handshake to the end, waiting with poll (EINTR retried) until `opts.deadline`.
/// Leaves the file status flags exactly as found. ETIMEDOUT when time runs out.
pub fn establish(fd: i32, family: i32, ups: &[Resolved], target: &Target, opts: &Opts, log: Log<'_>) -> Result<SocketAddr, Errno> {
    let flags = sys::fcntl_getfl(fd).map_err(|e| Errno::of(&e))?;
    if flags & libc::O_NONBLOCK == 0 {
        sys::fcntl_setfl(fd, flags | libc::O_NONBLOCK).map_err(|e| Errno::of(&e))?;
    }
    let mut hs = Handshake::new(fd, family, ups, target.clone(), opts.pipeline);
    let r = drive(&mut hs, opts.deadline, opts.read_cap, log);
    if flags & libc::O_NONBLOCK == 0 {
        let _ = sys::fcntl_setfl(fd, flags);
    }
    r
}

/// Run `hs` to completion with poll waits.
pub fn drive(hs: &mut Handshake<'_>, deadline: Instant, read_cap: Option<Duration>, log: Log<'_>) -> Result<SocketAddr, Errno> {
    loop {
        let ev = match hs.resume(log) {
            Step::Done(r) => return r,
            Step::Want(ev) => ev,
        };
        let now = Instant::now();
        let mut left = deadline.saturating_duration_since(now);
        if ev == libc::POLLIN {
            if let Some(cap) = read_cap {
                left = left.min(cap);
            }
        }
        let waited_from = now;
        loop {
            let l = left.saturating_sub(waited_from.elapsed());
            if l.is_zero() {
                log(LogLevel::Info, format_args!("{}: timed out waiting for the proxy", hs.target()));
                let Step::Done(r) = hs.abort(Errno(libc::ETIMEDOUT)) else { unreachable!() };
                return r;
            }
            match sys::poll1(hs.fd, ev, l.as_millis().clamp(1, i32::MAX as u128) as i32) {
                Ok(0) => continue,
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let Step::Done(r) = hs.abort(Errno::of(&e)) else { unreachable!() };
                    return r;
                }
            }
        }
    }
}

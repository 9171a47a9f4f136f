//! The handshake state machine (`tunnel::Handshake`) over real loopback sockets, in the style of
//! torsocks' protocol tests: the "proxy" is scripted by the test with std sockets, either in a
//! thread (the client runs `tunnel::establish`) or in lock step in the same thread (the client
//! calls `Handshake::resume` by hand), so every state is seen blocked (EAGAIN) and resumed.
use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::FromRawFd;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tsproxy_core::config::{self, LogLevel};
use tsproxy_core::errno::codes::*;
use tsproxy_core::tunnel::{self, Handshake, Opts, Resolved, Step};
use tsproxy_core::{Errno, Target};

const IN: i16 = libc::POLLIN;
const OUT: i16 = libc::POLLOUT;
const BANNER: &[u8] = b"SSH-2.0-OpenSSH_9.6\r\n";

// ---------------------------------------------------------------- helpers

/// A nonblocking TCP socket of `family`, not connected, as the library gets one.
fn socket(family: i32) -> i32 {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    fd
}

/// The client socket after the handshake, as a std stream (which closes it).
fn stream(fd: i32) -> TcpStream {
    // SAFETY: we own fd and hand it over.
    let s = unsafe { TcpStream::from_raw_fd(fd) };
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

fn close(fd: i32) {
    drop(stream(fd));
}

fn ready(fd: i32, ev: i16, ms: i32) -> bool {
    let mut p = libc::pollfd { fd, events: ev, revents: 0 };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

fn upstream(url: &str, addr: SocketAddr) -> Resolved {
    Resolved { up: config::parse_proxy_url(url).unwrap(), addrs: vec![addr], owners: Default::default() }
}

fn name(n: &str, port: u16) -> Target {
    Target::Name(n.into(), port)
}

fn ip(s: &str) -> Target {
    Target::Ip(s.parse().unwrap())
}

fn socks_req(t: &Target) -> Vec<u8> {
    tsproxy_core::socks5::connect_request(t).unwrap()
}

const OK_V4: [u8; 10] = [5, 0, 0, 1, 127, 0, 0, 1, 0x1f, 0x90];

/// A listener whose address refuses connections (bound, then closed).
fn refusing() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A proxy that runs `script` on the first connection, in a thread. The thread ends (and the
/// join says whether anyone connected) at the latest 5 s after it starts.
fn proxy(bind: &str, script: impl FnOnce(TcpStream) + Send + 'static) -> (SocketAddr, JoinHandle<bool>) {
    let l = TcpListener::bind(bind).unwrap();
    let addr = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    let h = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match l.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    s.set_nodelay(true).unwrap();
                    script(s);
                    return true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(2)),
                Err(_) => return false,
            }
        }
    });
    (addr, h)
}

/// A proxy that must never be contacted: the join says false.
fn unused_proxy() -> (SocketAddr, TcpListener) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    (l.local_addr().unwrap(), l)
}

fn was_contacted(l: &TcpListener) -> bool {
    !matches!(l.accept(), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

fn expect(s: &mut TcpStream, want: &[u8]) {
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, want);
}

/// Read an HTTP request head.
fn read_head(s: &mut TcpStream) -> String {
    let mut h = Vec::new();
    let mut b = [0u8; 1];
    while !h.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        h.push(b[0]);
    }
    String::from_utf8(h).unwrap()
}

/// Nothing more arrives within 50 ms.
fn nothing_more(s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        r => panic!("unexpected data or close: {r:?}"),
    }
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
}

fn dribble(s: &mut TcpStream, bytes: &[u8]) {
    for b in bytes {
        s.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The usual successful no-auth SOCKS5 exchange for `t`, then `after` (a banner) in the same
/// write as the reply.
fn socks_ok(t: Target, after: &'static [u8]) -> impl FnOnce(TcpStream) + Send {
    move |mut s| {
        expect(&mut s, &[5, 1, 0]);
        s.write_all(&[5, 0]).unwrap();
        expect(&mut s, &socks_req(&t));
        s.write_all(&[&OK_V4[..], after].concat()).unwrap();
        let _ = s.read(&mut [0u8; 1]);
    }
}

struct Run {
    r: Result<SocketAddr, Errno>,
    fd: i32,
    logs: Vec<String>,
}

/// `tunnel::establish` on a fresh socket (blocking, as a plain connect() would).
fn establish_fam(family: i32, ups: &[Resolved], t: &Target, pipeline: bool, within: Duration) -> Run {
    let fd = socket(family);
    // establish must leave the flags as found: start blocking, check it stays so.
    // SAFETY: fcntl on our fd.
    unsafe { libc::fcntl(fd, libc::F_SETFL, 0) };
    let mut logs = Vec::new();
    let mut log = |_: LogLevel, a: fmt::Arguments<'_>| logs.push(a.to_string());
    let opts = Opts { deadline: Instant::now() + within, read_cap: None, pipeline };
    let r = tunnel::establish(fd, family, ups, t, &opts, &mut log);
    // SAFETY: fcntl(F_GETFL) on an fd this test owns reads flags only.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_GETFL) } & libc::O_NONBLOCK, 0, "flags restored");
    Run { r, fd, logs }
}

fn establish(ups: &[Resolved], t: &Target, pipeline: bool) -> Run {
    establish_fam(libc::AF_INET, ups, t, pipeline, Duration::from_secs(5))
}

impl Run {
    /// Succeeded via `via`, and the bytes the peer sent right after the reply are still in the
    /// socket for the application.
    fn ok_with_banner(self, via: SocketAddr, banner: &[u8]) {
        assert_eq!(self.r, Ok(via), "{:?}", self.logs);
        let mut s = stream(self.fd);
        let mut got = vec![0u8; banner.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, banner);
    }

    fn err(self, e: Errno) -> Vec<String> {
        assert_eq!(self.r, Err(e), "{:?}", self.logs);
        // On failure the socket is disconnected again (it could connect elsewhere).
        let mut sa: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of_val(&sa) as libc::socklen_t;
        // SAFETY: valid out-pointers.
        let r = unsafe { libc::getpeername(self.fd, (&mut sa as *mut libc::sockaddr_storage).cast(), &mut len) };
        assert_eq!(r, -1, "socket still connected after a failed handshake");
        close(self.fd);
        self.logs
    }
}

// ---------------------------------------------------------------- lock step

/// The client side driven by hand. `run` resumes until the machine is really blocked (its
/// wanted readiness does not come within 20 ms) or done.
struct Lock<'a> {
    hs: Handshake<'a>,
    fd: i32,
    logs: Vec<String>,
    resumes: usize,
}

impl<'a> Lock<'a> {
    fn new(family: i32, ups: &'a [Resolved], t: Target, pipeline: bool) -> Self {
        let fd = socket(family);
        Lock { hs: Handshake::new(fd, family, ups, t, pipeline), fd, logs: Vec::new(), resumes: 0 }
    }

    fn resume(&mut self) -> Step {
        let logs = &mut self.logs;
        let mut log = |_: LogLevel, a: fmt::Arguments<'_>| logs.push(a.to_string());
        self.resumes += 1;
        self.hs.resume(&mut log)
    }

    fn run(&mut self) -> Step {
        loop {
            match self.resume() {
                Step::Want(ev) if ready(self.fd, ev, 20) => continue,
                s => return s,
            }
        }
    }

    /// Blocked waiting for the proxy: a `resume` now (EAGAIN) changes nothing.
    fn blocked_on_read(&mut self) {
        assert_eq!(self.run(), Step::Want(IN));
        assert_eq!(self.resume(), Step::Want(IN), "a spurious resume is harmless");
    }
}

fn accept(l: &TcpListener) -> TcpStream {
    l.set_nonblocking(false).unwrap();
    let (s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

// ---------------------------------------------------------------- SOCKS5, lock step

#[test]
fn socks5_no_auth_every_state_blocks_and_resumes() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let via = l.local_addr().unwrap();
    let ups = [upstream("socks5://127.0.0.1", via)];
    let t = name("peer-1.tail1234.ts.net", 22);
    let mut c = Lock::new(libc::AF_INET, &ups, t.clone(), false);
    // Connecting: the first resume starts the connect and waits for POLLOUT (or, if loopback
    // connected at once, has sent the greeting already).
    let first = c.resume();
    assert!(matches!(first, Step::Want(OUT) | Step::Want(IN)), "{first:?}");
    let mut p = accept(&l);
    // SendGreeting -> ReadMethod.
    c.blocked_on_read();
    expect(&mut p, &[5, 1, 0]);
    nothing_more(&mut p); // not pipelined: the request waits for the method choice
                          // ReadMethod, one byte at a time.
    p.write_all(&[5]).unwrap();
    c.blocked_on_read();
    p.write_all(&[0]).unwrap();
    // SendRequest -> ReadReply.
    c.blocked_on_read();
    expect(&mut p, &socks_req(&t));
    // ReadReply, one byte at a time: blocked after each but the last.
    let reply = [5, 0, 0, 3, 4, b'h', b'o', b's', b't', 0, 22];
    for b in &reply[..reply.len() - 1] {
        p.write_all(&[*b]).unwrap();
        c.blocked_on_read();
    }
    // The last byte together with the peer's banner: exact reads leave the banner.
    p.write_all(&[&reply[reply.len() - 1..], BANNER].concat()).unwrap();
    assert_eq!(c.run(), Step::Done(Ok(via)));
    assert_eq!(c.hs.via(), Some(via));
    assert_eq!(c.resume(), Step::Done(Err(EALREADY)), "finished machines stay finished");
    let mut s = stream(c.fd);
    let mut got = vec![0u8; BANNER.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, BANNER);
    // And the proxy side sees the application's bytes after the handshake, nothing else.
    s.write_all(b"hello").unwrap();
    expect(&mut p, b"hello");
}

#[test]
fn socks5_user_pass_every_state_blocks_and_resumes() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let via = l.local_addr().unwrap();
    let ups = [upstream("socks5://alice:s%3Acret@127.0.0.1", via)];
    let t = ip("100.64.0.7:8080");
    // Pipelining is asked for but never used with auth (the request depends on the method).
    let mut c = Lock::new(libc::AF_INET, &ups, t.clone(), true);
    c.resume();
    let mut p = accept(&l);
    c.blocked_on_read();
    expect(&mut p, &[5, 2, 0, 2]);
    nothing_more(&mut p);
    p.write_all(&[5, 2]).unwrap();
    // SendAuth -> ReadAuth (RFC 1929).
    c.blocked_on_read();
    expect(&mut p, &[1, 5, b'a', b'l', b'i', b'c', b'e', 6, b's', b':', b'c', b'r', b'e', b't']);
    nothing_more(&mut p);
    p.write_all(&[1]).unwrap();
    c.blocked_on_read();
    p.write_all(&[0]).unwrap();
    c.blocked_on_read();
    expect(&mut p, &[5, 1, 0, 1, 100, 64, 0, 7, 0x1f, 0x90]);
    p.write_all(&OK_V4[..4]).unwrap();
    c.blocked_on_read();
    p.write_all(&[&OK_V4[4..], BANNER].concat()).unwrap();
    assert_eq!(c.run(), Step::Done(Ok(via)));
    Run { r: Ok(via), fd: c.fd, logs: c.logs }.ok_with_banner(via, BANNER);
}

#[test]
fn socks5_pipelined_sends_greeting_and_request_in_one_write() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let via = l.local_addr().unwrap();
    let ups = [upstream("socks5h://127.0.0.1", via)];
    let t = ip("[fd7a:115c:a1e0::2]:443");
    let mut c = Lock::new(libc::AF_INET, &ups, t.clone(), true);
    c.resume();
    let mut p = accept(&l);
    c.blocked_on_read();
    let req = socks_req(&t);
    assert_eq!(&req[..4], &[5, 1, 0, 4], "IPv6 target: ATYP 4");
    expect(&mut p, &[&[5u8, 1, 0][..], &req].concat());
    // Method and reply may come in one segment, or apart.
    p.write_all(&[5, 0, 5]).unwrap();
    c.blocked_on_read();
    p.write_all(&[0, 0, 4]).unwrap();
    c.blocked_on_read();
    p.write_all(&[&[0u8; 18][..], b"banner"].concat()).unwrap();
    assert_eq!(c.run(), Step::Done(Ok(via)));
    Run { r: Ok(via), fd: c.fd, logs: c.logs }.ok_with_banner(via, b"banner");
}

#[test]
fn a_connect_still_in_progress_waits_for_pollout() {
    // A listener with a full accept queue drops our SYN: the connect stays in progress.
    // SAFETY: plain socket calls on our own fds.
    let lfd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as u16;
    sa.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
    let len = std::mem::size_of_val(&sa) as libc::socklen_t;
    assert_eq!(unsafe { libc::bind(lfd, (&sa as *const libc::sockaddr_in).cast(), len) }, 0);
    assert_eq!(unsafe { libc::listen(lfd, 0) }, 0);
    let l = unsafe { TcpListener::from_raw_fd(lfd) };
    let addr = l.local_addr().unwrap();
    let _filler = TcpStream::connect(addr).unwrap();
    let ups = [upstream("socks5://127.0.0.1", addr)];
    let mut c = Lock::new(libc::AF_INET, &ups, name("peer", 1), false);
    assert_eq!(c.resume(), Step::Want(OUT));
    assert!(!ready(c.fd, OUT, 50));
    assert_eq!(c.resume(), Step::Want(OUT), "spurious wake-up while connecting");
    assert_eq!(c.hs.abort(ETIMEDOUT), Step::Done(Err(ETIMEDOUT)));
    assert_eq!(c.resume(), Step::Done(Err(EALREADY)));
    close(c.fd);
    // The same through establish: the deadline ends it with ETIMEDOUT.
    let t0 = Instant::now();
    let r = establish_fam(libc::AF_INET, &ups, &name("peer", 1), false, Duration::from_millis(300));
    assert!(t0.elapsed() < Duration::from_secs(3));
    let logs = r.err(ETIMEDOUT);
    assert!(logs.iter().any(|l| l.contains("timed out")), "{logs:?}");
    drop(l);
}

/// A listener whose accept queue is full (backlog 0, already holding a connection): the
/// kernel drops further SYNs, so a client stays in SYN_SENT until the queue drains and its SYN
/// is retransmitted (~1 s).
fn full_listener() -> (TcpListener, Vec<TcpStream>) {
    // SAFETY: plain socket(2); the fd is handed to TcpListener below, which owns it.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    // SAFETY: we own fd now.
    let l = unsafe { TcpListener::from_raw_fd(fd) };
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes([127, 0, 0, 1]) },
        sin_zero: [0; 8],
    };
    // SAFETY: sa is a valid sockaddr_in of the size passed; fd is our socket.
    assert_eq!(unsafe { libc::bind(fd, std::ptr::addr_of!(sa).cast(), std::mem::size_of_val(&sa) as u32) }, 0);
    // SAFETY: listen on our bound socket.
    assert_eq!(unsafe { libc::listen(fd, 0) }, 0);
    let to = l.local_addr().unwrap();
    // Fill the queue: with backlog 0 one completed connection fills it.
    let fill = vec![TcpStream::connect_timeout(&to, Duration::from_secs(2)).unwrap()];
    (l, fill)
}

#[test]
fn a_proxy_still_in_syn_sent_is_waited_for_with_pollout() {
    let (l, fill) = full_listener();
    let via = l.local_addr().unwrap();
    let ups = [upstream("socks5://127.0.0.1", via)];
    let mut c = Lock::new(libc::AF_INET, &ups, name("peer", 80), false);
    // The greeting is tried at once; the socket is still connecting, so the send says EAGAIN
    // and the machine waits for POLLOUT (not for the proxy's answer, which cannot come).
    assert_eq!(c.resume(), Step::Want(OUT), "{:?}", c.logs);
    assert_eq!(c.resume(), Step::Want(OUT), "a spurious resume is harmless");
    assert!(!ready(c.fd, OUT, 50), "still in SYN_SENT");
    // Drain the queue: the retransmitted SYN gets through, the socket turns writable and the
    // greeting goes out.
    l.set_nonblocking(true).unwrap();
    let mut ours = None;
    let t0 = Instant::now();
    while ours.is_none() && t0.elapsed() < Duration::from_secs(8) {
        match l.accept() {
            Ok((s, peer)) if fill.iter().all(|f| f.local_addr().unwrap() != peer) => ours = Some(s),
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let mut p = ours.expect("the handshake's connection reached the listener");
    p.set_nonblocking(false).unwrap();
    p.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(ready(c.fd, OUT, 3000));
    assert_eq!(c.resume(), Step::Want(IN));
    expect(&mut p, &[5, 1, 0]);
    close(c.fd);
}

#[test]
fn a_loopback_proxy_gets_the_greeting_in_the_first_resume() {
    // A listener on loopback completes the TCP handshake inside connect() (which still says
    // EINPROGRESS for a nonblocking socket): the greeting goes out in the same resume. Softirq
    // work can be deferred on a loaded machine, so of 20 tries most, not all, must be at once.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let via = l.local_addr().unwrap();
    let ups = [upstream("socks5://127.0.0.1", via)];
    let mut at_once = 0;
    for _ in 0..20 {
        let mut c = Lock::new(libc::AF_INET, &ups, name("peer", 80), false);
        match c.resume() {
            Step::Want(IN) => at_once += 1,
            Step::Want(OUT) => assert_eq!(c.run(), Step::Want(IN), "{:?}", c.logs),
            s => panic!("{s:?} {:?}", c.logs),
        }
        let mut p = accept(&l);
        expect(&mut p, &[5, 1, 0]);
        close(c.fd);
    }
    assert!(at_once >= 10, "greeting sent in the first resume {at_once} of 20 times");
}

#[test]
fn a_refused_proxy_fails_over_from_the_first_send() {
    // The first upstream refuses (nothing listens): the next one gets the greeting.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let ups = [upstream("socks5://127.0.0.1", dead), upstream("socks5://127.0.0.1", l.local_addr().unwrap())];
    let mut c = Lock::new(libc::AF_INET, &ups, name("peer", 80), false);
    assert_eq!(c.run(), Step::Want(IN), "{:?}", c.logs);
    let mut p = accept(&l);
    expect(&mut p, &[5, 1, 0]);
    assert!(c.logs.iter().any(|l| l.contains("refused")), "{:?}", c.logs);
    close(c.fd);
}

// ---------------------------------------------------------------- SOCKS5 through establish

#[test]
fn socks5_domain_target_atyp3_and_reply_forms() {
    // Replies with each BND.ADDR type; the banner after each must stay unread.
    for reply in [OK_V4.to_vec(), [&[5u8, 0, 0, 4][..], &[0u8; 18]].concat(), vec![5, 0, 0, 3, 3, b'a', b'b', b'c', 0, 1]] {
        let t = name("db.corp.example", 5432);
        let want = socks_req(&t);
        assert_eq!(&want[..5], &[5, 1, 0, 3, 15]);
        let (a, h) = proxy("127.0.0.1:0", move |mut s| {
            expect(&mut s, &[5, 1, 0]);
            s.write_all(&[5, 0]).unwrap();
            expect(&mut s, &want);
            s.write_all(&[&reply[..], BANNER].concat()).unwrap();
            let _ = s.read(&mut [0u8; 1]);
        });
        establish(&[upstream("socks5://127.0.0.1", a)], &t, false).ok_with_banner(a, BANNER);
        assert!(h.join().unwrap());
    }
}

#[test]
fn socks5_short_reads_through_poll() {
    let t = ip("100.100.1.1:443");
    let (a, h) = proxy("127.0.0.1:0", {
        let t = t.clone();
        move |mut s| {
            expect(&mut s, &[5, 1, 0]);
            dribble(&mut s, &[5, 0]);
            expect(&mut s, &socks_req(&t));
            dribble(&mut s, &OK_V4);
            s.write_all(BANNER).unwrap();
            let _ = s.read(&mut [0u8; 1]);
        }
    });
    establish(&[upstream("socks5://127.0.0.1", a)], &t, false).ok_with_banner(a, BANNER);
    assert!(h.join().unwrap());
}

#[test]
fn socks5_rep_codes_map_to_errnos_and_are_final() {
    let cases = [
        (1, ECONNREFUSED),
        (2, ECONNREFUSED),
        (3, ENETUNREACH),
        (4, EHOSTUNREACH),
        (5, ECONNREFUSED),
        (6, ETIMEDOUT),
        (7, ECONNREFUSED),
        (8, ECONNREFUSED),
        (9, ECONNREFUSED),
        (0xff, ECONNREFUSED),
    ];
    for (rep, errno) in cases {
        let (a, h) = proxy("127.0.0.1:0", move |mut s| {
            expect(&mut s, &[5, 1, 0]);
            s.write_all(&[5, 0]).unwrap();
            let mut req = [0u8; 10];
            s.read_exact(&mut req).unwrap();
            s.write_all(&[5, rep, 0, 1, 0, 0, 0, 0, 0, 0]).unwrap();
            let _ = s.read(&mut [0u8; 1]);
        });
        // A second upstream that must not be asked: the destination, not the proxy, failed.
        let (b, spare) = unused_proxy();
        let ups = [upstream("socks5://127.0.0.1", a), upstream("socks5://127.0.0.1", b)];
        let logs = establish(&ups, &ip("100.64.0.1:80"), false).err(errno);
        assert!(h.join().unwrap());
        assert!(!was_contacted(&spare), "rep {rep}: no failover after the proxy answered");
        assert!(logs.iter().any(|l| l.contains("Rep(")), "rep {rep}: {logs:?}");
    }
}

#[test]
fn socks5_garbage_reply_is_final_refusal() {
    for reply in [vec![4u8, 0, 0, 1, 0, 0, 0, 0, 0, 0], vec![5, 0, 0, 9, 0]] {
        let (a, h) = proxy("127.0.0.1:0", move |mut s| {
            expect(&mut s, &[5, 1, 0]);
            s.write_all(&[5, 0]).unwrap();
            let mut req = [0u8; 10];
            s.read_exact(&mut req).unwrap();
            s.write_all(&reply).unwrap();
            let _ = s.read(&mut [0u8; 1]);
        });
        establish(&[upstream("socks5://127.0.0.1", a)], &ip("100.64.0.1:80"), false).err(ECONNREFUSED);
        assert!(h.join().unwrap());
    }
}

/// A first upstream misbehaving at the proxy stage (before it took the request) makes the
/// handshake go on with the second one.
fn fails_over(first: impl FnOnce(TcpStream) + Send + 'static, url: &str, pipeline: bool) -> Vec<String> {
    let t = name("peer", 22);
    let (a, h1) = proxy("127.0.0.1:0", first);
    let (b, h2) = proxy("127.0.0.1:0", socks_ok(t.clone(), BANNER));
    let ups = [upstream(url, a), upstream("socks5://127.0.0.1", b)];
    let r = establish(&ups, &t, pipeline);
    let logs = r.logs.clone();
    r.ok_with_banner(b, BANNER);
    assert!(h1.join().unwrap() && h2.join().unwrap());
    assert!(logs.iter().any(|l| l.contains("failed for peer:22")), "{logs:?}");
    logs
}

#[test]
fn failover_when_the_first_upstream_refuses_the_connection() {
    let t = name("peer", 22);
    let (b, h) = proxy("127.0.0.1:0", socks_ok(t.clone(), BANNER));
    let dead = refusing();
    let ups = [upstream("socks5://127.0.0.1", dead), upstream("socks5://127.0.0.1", b)];
    let r = establish(&ups, &t, false);
    assert!(r.logs.iter().any(|l| l.contains("Connection refused")), "{:?}", r.logs);
    r.ok_with_banner(b, BANNER);
    assert!(h.join().unwrap());
    // Every upstream refusing: ECONNREFUSED.
    let ups = [upstream("socks5://127.0.0.1", refusing()), upstream("http://127.0.0.1", refusing())];
    establish(&ups, &t, false).err(ECONNREFUSED);
}

#[test]
fn failover_when_the_proxy_closes_before_the_request_is_taken() {
    // Closes at once.
    fails_over(drop, "socks5://127.0.0.1", false);
    // Reads the greeting, then closes.
    fails_over(
        |mut s| {
            expect(&mut s, &[5, 1, 0]);
        },
        "socks5://127.0.0.1",
        false,
    );
    // Half a method reply, then closes.
    fails_over(
        |mut s| {
            expect(&mut s, &[5, 1, 0]);
            s.write_all(&[5]).unwrap();
        },
        "socks5://127.0.0.1",
        false,
    );
    // Pipelined: took greeting and request but never chose a method.
    fails_over(
        |mut s| {
            let mut b = [0u8; 3 + 4 + 4 + 2];
            s.read_exact(&mut b).unwrap();
        },
        "socks5://127.0.0.1",
        true,
    );
    // With auth: closes after the auth request.
    fails_over(
        |mut s| {
            expect(&mut s, &[5, 2, 0, 2]);
            s.write_all(&[5, 2]).unwrap();
            expect(&mut s, &[1, 1, b'u', 1, b'p']);
            s.shutdown(Shutdown::Both).unwrap();
        },
        "socks5://u:p@127.0.0.1",
        false,
    );
}

#[test]
fn failover_when_the_proxy_rejects_us() {
    // No acceptable method.
    fails_over(
        |mut s| {
            expect(&mut s, &[5, 1, 0]);
            s.write_all(&[5, 0xff]).unwrap();
        },
        "socks5://127.0.0.1",
        false,
    );
    // Chooses a method we did not offer.
    fails_over(
        |mut s| {
            expect(&mut s, &[5, 1, 0]);
            s.write_all(&[5, 2]).unwrap();
        },
        "socks5://127.0.0.1",
        false,
    );
    // Not SOCKS5 at all.
    fails_over(
        |mut s| {
            expect(&mut s, &[5, 1, 0]);
            s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").unwrap();
        },
        "socks5://127.0.0.1",
        false,
    );
    // Wrong password.
    let logs = fails_over(
        |mut s| {
            expect(&mut s, &[5, 2, 0, 2]);
            s.write_all(&[5, 2]).unwrap();
            expect(&mut s, &[1, 5, b'a', b'l', b'i', b'c', b'e', 6, b'S', b'e', b'k', b'r', b'1', b't']);
            s.write_all(&[1, 1]).unwrap();
        },
        "socks5://alice:Sekr1t@127.0.0.1",
        false,
    );
    assert!(logs.iter().all(|l| !l.contains("Sekr1t")), "no password in logs: {logs:?}");
    assert!(logs.iter().any(|l| l.contains("alice:***@")), "{logs:?}");
}

#[test]
fn the_proxy_closing_after_it_took_the_request_is_final() {
    let t = name("peer", 22);
    let scripts: Vec<Box<dyn FnOnce(TcpStream) + Send>> = vec![
        // Chose a method, then closed before reading the request.
        Box::new(|mut s: TcpStream| {
            expect(&mut s, &[5, 1, 0]);
            s.write_all(&[5, 0]).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
        }),
        // Read the request, closed without a reply.
        Box::new(|mut s: TcpStream| {
            expect(&mut s, &[5, 1, 0]);
            s.write_all(&[5, 0]).unwrap();
            expect(&mut s, &socks_req(&name("peer", 22)));
        }),
        // Half a reply, then closed.
        Box::new(|mut s: TcpStream| {
            expect(&mut s, &[5, 1, 0]);
            s.write_all(&[5, 0]).unwrap();
            expect(&mut s, &socks_req(&name("peer", 22)));
            s.write_all(&OK_V4[..6]).unwrap();
        }),
    ];
    for script in scripts {
        let (a, h) = proxy("127.0.0.1:0", script);
        let (b, spare) = unused_proxy();
        let ups = [upstream("socks5://127.0.0.1", a), upstream("socks5://127.0.0.1", b)];
        establish(&ups, &t, false).err(ECONNREFUSED);
        assert!(h.join().unwrap());
        assert!(!was_contacted(&spare));
    }
}

// ---------------------------------------------------------------- HTTP CONNECT

fn http_answer(status: &'static str, after: &'static [u8]) -> impl FnOnce(TcpStream) + Send {
    move |mut s| {
        let head = read_head(&mut s);
        assert!(head.starts_with("CONNECT "), "{head}");
        s.write_all(format!("{status}\r\nVia: test\r\n\r\n").as_bytes()).unwrap();
        s.write_all(after).unwrap();
        let _ = s.read(&mut [0u8; 1]);
    }
}

#[test]
fn http_connect_200_keeps_the_banner() {
    let t = name("peer-1", 22);
    let (a, h) = proxy("127.0.0.1:0", |mut s| {
        let head = read_head(&mut s);
        assert_eq!(head, "CONNECT peer-1:22 HTTP/1.1\r\nHost: peer-1:22\r\nProxy-Authorization: Basic dTpwQHNz\r\n\r\n");
        // The head in pieces, the banner in the same segment as its end.
        dribble(&mut s, b"HTTP/1.1 200 Connection established\r\n");
        s.write_all(&[b"\r\n", BANNER].concat()).unwrap();
        let _ = s.read(&mut [0u8; 1]);
    });
    establish(&[upstream("http://u:p%40ss@127.0.0.1", a)], &t, false).ok_with_banner(a, BANNER);
    assert!(h.join().unwrap());
    // IPv6 target: bracketed authority.
    let (a, h) = proxy("127.0.0.1:0", |mut s| {
        assert!(read_head(&mut s).starts_with("CONNECT [fd7a:115c:a1e0::9]:80 HTTP/1.1\r\nHost: [fd7a:115c:a1e0::9]:80\r\n"));
        s.write_all(b"HTTP/1.0 200 OK\r\n\r\nX").unwrap();
        let _ = s.read(&mut [0u8; 1]);
    });
    establish(&[upstream("http://127.0.0.1", a)], &ip("[fd7a:115c:a1e0::9]:80"), false).ok_with_banner(a, b"X");
    assert!(h.join().unwrap());
}

#[test]
fn http_connect_lock_step() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let via = l.local_addr().unwrap();
    let ups = [upstream("http://127.0.0.1", via)];
    let mut c = Lock::new(libc::AF_INET, &ups, name("peer", 80), false);
    c.resume();
    let mut p = accept(&l);
    c.blocked_on_read();
    assert_eq!(read_head(&mut p), "CONNECT peer:80 HTTP/1.1\r\nHost: peer:80\r\n\r\n");
    for piece in [&b"HTTP/1.1 200 OK\r"[..], b"\n", b"X-Long: ", &[b'x'; 2000], b"\r\n\r"] {
        p.write_all(piece).unwrap();
        c.blocked_on_read();
    }
    p.write_all(b"\nhello").unwrap();
    assert_eq!(c.run(), Step::Done(Ok(via)));
    Run { r: Ok(via), fd: c.fd, logs: c.logs }.ok_with_banner(via, b"hello");
}

#[test]
fn http_407_fails_over() {
    let t = name("peer", 22);
    let (a, h1) = proxy("127.0.0.1:0", http_answer("HTTP/1.1 407 Proxy Authentication Required", b""));
    let (b, h2) = proxy("127.0.0.1:0", http_answer("HTTP/1.1 200 OK", BANNER));
    let ups = [upstream("http://127.0.0.1", a), upstream("http://127.0.0.1", b)];
    let r = establish(&ups, &t, false);
    assert!(r.logs.iter().any(|l| l.contains("407")), "{:?}", r.logs);
    r.ok_with_banner(b, BANNER);
    assert!(h1.join().unwrap() && h2.join().unwrap());
}

#[test]
fn http_errors_are_final() {
    for (status, errno) in [
        ("HTTP/1.1 500 Internal Server Error", ECONNREFUSED),
        ("HTTP/1.1 502 Bad Gateway", ECONNREFUSED),
        ("HTTP/1.1 403 Forbidden", ECONNREFUSED),
        ("HTTP/1.1 504 Gateway Timeout", ETIMEDOUT),
        ("SSH-2.0-OpenSSH", ECONNREFUSED),
    ] {
        let (a, h) = proxy("127.0.0.1:0", http_answer(status, b""));
        let (b, spare) = unused_proxy();
        let ups = [upstream("http://127.0.0.1", a), upstream("http://127.0.0.1", b)];
        let logs = establish(&ups, &name("peer", 22), false).err(errno);
        assert!(h.join().unwrap());
        assert!(!was_contacted(&spare), "{status}");
        assert!(logs.iter().any(|l| l.contains("proxy answered")), "{logs:?}");
    }
    // Closed without an answer, or in the middle of the head.
    for part in [&b""[..], b"HTTP/1.1 200 OK\r\n"] {
        let (a, h) = proxy("127.0.0.1:0", move |mut s| {
            read_head(&mut s);
            s.write_all(part).unwrap();
        });
        establish(&[upstream("http://127.0.0.1", a)], &name("peer", 22), false).err(ECONNREFUSED);
        assert!(h.join().unwrap());
    }
    // A head that never ends.
    let (a, h) = proxy("127.0.0.1:0", |mut s| {
        read_head(&mut s);
        let _ = s.write_all(b"HTTP/1.1 200 OK\r\n");
        for _ in 0..20 {
            if s.write_all(&[b'x'; 1000]).is_err() {
                break;
            }
        }
        let _ = s.read(&mut [0u8; 1]);
    });
    let logs = establish(&[upstream("http://127.0.0.1", a)], &name("peer", 22), false).err(ECONNREFUSED);
    assert!(logs.iter().any(|l| l.contains("too long")), "{logs:?}");
    assert!(h.join().unwrap());
}

// ---------------------------------------------------------------- families, names, time

#[test]
fn ipv6_upstream_and_families() {
    let t = name("peer", 22);
    // An IPv6 proxy from an AF_INET6 socket.
    if let Ok(l) = TcpListener::bind("[::1]:0") {
        drop(l);
        let (a, h) = proxy("[::1]:0", socks_ok(t.clone(), BANNER));
        establish_fam(libc::AF_INET6, &[upstream("socks5://[::1]", a)], &t, false, Duration::from_secs(5)).ok_with_banner(a, BANNER);
        assert!(h.join().unwrap());
        // An AF_INET socket cannot reach an IPv6 proxy: skipped, and with nothing else left,
        // ECONNREFUSED.
        let logs = establish_fam(libc::AF_INET, &[upstream("socks5://[::1]", "[::1]:1".parse().unwrap())], &t, false, Duration::from_secs(5)).err(ECONNREFUSED);
        assert!(logs.iter().any(|l| l.contains("no proxy address usable")), "{logs:?}");
    }
    // An IPv4 proxy from an AF_INET6 socket (IPv4-mapped).
    let (a, h) = proxy("127.0.0.1:0", socks_ok(t.clone(), BANNER));
    establish_fam(libc::AF_INET6, &[upstream("socks5://127.0.0.1", a)], &t, false, Duration::from_secs(5)).ok_with_banner(a, BANNER);
    assert!(h.join().unwrap());
}

#[test]
fn a_target_that_is_not_a_host_name_never_reaches_a_proxy() {
    for bad in ["peer\r\nHost: evil", "pe er", "", "a_b"] {
        let (a, l) = unused_proxy();
        for url in ["socks5://127.0.0.1", "http://127.0.0.1"] {
            let logs = establish(&[upstream(url, a)], &name(bad, 80), false).err(EINVAL);
            assert!(logs.iter().any(|l| l.contains("not a host name")), "{logs:?}");
        }
        assert!(!was_contacted(&l), "{bad:?}");
    }
}

#[test]
fn a_silent_proxy_times_out() {
    let (a, h) = proxy("127.0.0.1:0", |mut s| {
        expect(&mut s, &[5, 1, 0]);
        std::thread::sleep(Duration::from_millis(600));
    });
    let t0 = Instant::now();
    establish_fam(libc::AF_INET, &[upstream("socks5://127.0.0.1", a)], &name("peer", 1), false, Duration::from_millis(200)).err(ETIMEDOUT);
    assert!(t0.elapsed() < Duration::from_millis(550));
    assert!(h.join().unwrap());
    // read_cap: each wait for an answer is capped below the deadline.
    let (a, h) = proxy("127.0.0.1:0", |mut s| {
        expect(&mut s, &[5, 1, 0]);
        std::thread::sleep(Duration::from_millis(600));
    });
    let fd = socket(libc::AF_INET);
    let ups = [upstream("socks5://127.0.0.1", a)];
    let opts = Opts { deadline: Instant::now() + Duration::from_secs(5), read_cap: Some(Duration::from_millis(150)), pipeline: false };
    let t0 = Instant::now();
    let r = tunnel::establish(fd, libc::AF_INET, &ups, &name("peer", 1), &opts, &mut |_, _| {});
    assert_eq!(r, Err(ETIMEDOUT));
    assert!(t0.elapsed() < Duration::from_millis(550));
    close(fd);
    assert!(h.join().unwrap());
}

#[test]
fn drive_resumes_a_handshake_started_by_hand() {
    let t = name("peer", 22);
    let (a, h) = proxy("127.0.0.1:0", socks_ok(t.clone(), BANNER));
    let ups = [upstream("socks5://127.0.0.1", a)];
    let fd = socket(libc::AF_INET);
    let mut hs = Handshake::new(fd, libc::AF_INET, &ups, t, false);
    assert!(matches!(hs.resume(&mut |_, _| {}), Step::Want(_)));
    let r = tunnel::drive(&mut hs, Instant::now() + Duration::from_secs(5), None, &mut |_, _| {});
    Run { r, fd, logs: vec![] }.ok_with_banner(a, BANNER);
    assert!(h.join().unwrap());
}

// ---------------------------------------------------------------- UDP ASSOCIATE

/// `Handshake::associate` driven to the end with poll waits; the relay it names.
fn associate(ups: &[Resolved], client: &str) -> (Result<SocketAddr, Errno>, Option<SocketAddr>, Vec<String>) {
    let fd = socket(libc::AF_INET);
    let mut logs = Vec::new();
    let mut log = |_: LogLevel, a: fmt::Arguments<'_>| logs.push(a.to_string());
    let mut hs = Handshake::associate(fd, libc::AF_INET, ups, client.parse().unwrap(), false);
    let r = tunnel::drive(&mut hs, Instant::now() + Duration::from_secs(5), None, &mut log);
    let relay = hs.bound();
    close(fd);
    (r, relay, logs)
}

#[test]
fn udp_associate_every_state_blocks_and_names_the_relay() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let via = l.local_addr().unwrap();
    let ups = [upstream("socks5://127.0.0.1", via)];
    let fd = socket(libc::AF_INET);
    let mut c = Lock { hs: Handshake::associate(fd, libc::AF_INET, &ups, "0.0.0.0:4660".parse().unwrap(), false), fd, logs: Vec::new(), resumes: 0 };
    let first = c.resume();
    assert!(matches!(first, Step::Want(OUT) | Step::Want(IN)), "{first:?}");
    let mut p = accept(&l);
    c.blocked_on_read();
    expect(&mut p, &[5, 1, 0]);
    p.write_all(&[5, 0]).unwrap();
    c.blocked_on_read();
    // The request: command 3, the client's address (port known, address zeros).
    expect(&mut p, &[5, 3, 0, 1, 0, 0, 0, 0, 0x12, 0x34]);
    assert_eq!(c.hs.bound(), None, "no relay before the reply");
    let reply = [5, 0, 0, 1, 127, 0, 0, 1, 0xc3, 0x51];
    for b in &reply[..reply.len() - 1] {
        p.write_all(&[*b]).unwrap();
        c.blocked_on_read();
    }
    p.write_all(&reply[reply.len() - 1..]).unwrap();
    assert_eq!(c.run(), Step::Done(Ok(via)));
    assert_eq!(c.hs.bound(), Some("127.0.0.1:50001".parse().unwrap()));
    close(fd);
}

#[test]
fn udp_associate_with_user_pass_and_a_v6_relay() {
    let (via, h) = proxy("127.0.0.1:0", |mut s| {
        expect(&mut s, &[5, 2, 0, 2]);
        s.write_all(&[5, 2]).unwrap();
        expect(&mut s, &[1, 2, b'u', b'1', 2, b'p', b'1']);
        s.write_all(&[1, 0]).unwrap();
        expect(&mut s, &[5, 3, 0, 1, 0, 0, 0, 0, 0, 0]);
        let mut r = vec![5, 0, 0, 4];
        r.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        r.extend_from_slice(&[0x01, 0x02]);
        s.write_all(&r).unwrap();
        let _ = s.read(&mut [0u8; 1]);
    });
    let ups = [upstream("socks5://u1:p1@127.0.0.1", via)];
    let (r, relay, logs) = associate(&ups, "0.0.0.0:0");
    assert_eq!(r, Ok(via), "{logs:?}");
    assert_eq!(relay, Some("[::1]:258".parse().unwrap()));
    assert!(h.join().unwrap());
}

#[test]
fn udp_associate_refused_fails_over_and_http_is_skipped() {
    // microsocks' answer to UDP ASSOCIATE: "command not supported" (7), then close.
    let (refuser, h1) = proxy("127.0.0.1:0", |mut s| {
        expect(&mut s, &[5, 1, 0]);
        s.write_all(&[5, 0]).unwrap();
        expect(&mut s, &[5, 3, 0, 1, 0, 0, 0, 0, 0, 0]);
        s.write_all(&[5, 7, 0, 1, 0, 0, 0, 0, 0, 0]).unwrap();
    });
    let (http, never) = unused_proxy();
    let (good, h2) = proxy("127.0.0.1:0", |mut s| {
        expect(&mut s, &[5, 1, 0]);
        s.write_all(&[5, 0]).unwrap();
        expect(&mut s, &[5, 3, 0, 1, 0, 0, 0, 0, 0, 0]);
        s.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0, 9]).unwrap();
        let _ = s.read(&mut [0u8; 1]);
    });
    let ups = [upstream("socks5://127.0.0.1", refuser), upstream("http://127.0.0.1", http), upstream("socks5://127.0.0.1", good)];
    let (r, relay, logs) = associate(&ups, "0.0.0.0:0");
    assert_eq!(r, Ok(good), "{logs:?}");
    assert_eq!(relay, Some("127.0.0.1:9".parse().unwrap()));
    assert!(!was_contacted(&never), "an HTTP upstream was dialled for UDP");
    assert!(logs.iter().any(|l| l.contains("UDP ASSOCIATE refused")), "{logs:?}");
    assert!(logs.iter().any(|l| l.contains("cannot carry datagrams")), "{logs:?}");
    assert!(h1.join().unwrap() && h2.join().unwrap());
}

#[test]
fn udp_associate_closed_or_all_refused_is_an_error() {
    // A proxy that closes after the request (another form of refusal), and nothing else.
    let (closer, h) = proxy("127.0.0.1:0", |mut s| {
        expect(&mut s, &[5, 1, 0]);
        s.write_all(&[5, 0]).unwrap();
        expect(&mut s, &[5, 3, 0, 1, 0, 0, 0, 0, 0, 0]);
    });
    let ups = [upstream("socks5://127.0.0.1", closer), upstream("socks5://127.0.0.1", refusing())];
    let (r, relay, logs) = associate(&ups, "0.0.0.0:0");
    assert!(r.is_err(), "{logs:?}");
    assert_eq!(relay, None);
    assert!(h.join().unwrap());
    // Only HTTP upstreams: nothing is dialled.
    let (http, never) = unused_proxy();
    let (r, _, _) = associate(&[upstream("http://127.0.0.1", http)], "0.0.0.0:0");
    assert!(r.is_err());
    assert!(!was_contacted(&never));
}

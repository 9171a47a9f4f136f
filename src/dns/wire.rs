//! DNS spoken by the program itself, over UDP to port 53 (c-ares in gRPC, node and aria2, dig,
//! dnspython, libuv): a query for a tailnet name is answered here, with the placeholders
//! `getaddrinfo` gives, and never reaches the server; every other query goes to the server
//! unchanged, by the kernel, on the program's own socket.
//!
//! The answer must reach the program's socket *as the server's reply* (stub resolvers drop a
//! reply from any other address: c-ares and musl compare it with the server's). Nothing
//! unprivileged can send a datagram from the server's address, so the answer is sent from a
//! socket of ours on loopback (the injector) to the program's socket — it arrives in the
//! socket's own queue, so every poll/epoll/select sees it as it sees any datagram — and the
//! receiving calls of such sockets report it as coming from the server it answers for.
//!
//! Two kinds of socket:
//! - **unconnected** (`sendto`/`sendmsg`/`sendmmsg` to `server:53`, musl- or dnspython-style):
//!   the socket stays the kernel's; it enters the table with the first answer, which queues the
//!   address the answer stands for; its receiving calls rewrite the injector's address to it,
//!   and pass every other datagram through untouched.
//! - **connected** to `server:53` (`connect` then `send`/`write`, c-ares-, glibc- and
//!   libuv-style): the kernel keeps the connection, so every send and receive — including
//!   those made with raw syscalls (libuv before 1.45 calls `sendmmsg`/`recvmmsg` that way) —
//!   works exactly as without tsproxy. When a hooked send carries a question for a tailnet
//!   name, the question is not sent; the socket is connected to our injector for a moment (a
//!   connected UDP socket takes datagrams from its peer only; connecting it anew keeps its
//!   port), the answer is put in its queue, and it is connected to the server again. Datagrams
//!   already queued stay queued; a reply of the server arriving in those microseconds is
//!   dropped by the kernel (the stub asks again after its timeout).
//!
//! Limits (README): descriptors at 65536 and above are not tracked (the per-fd byte table
//! ends there: a tailnet question sent on such a connected socket is refused); a question sent
//! with a raw syscall is not seen; an answer read with a raw syscall shows our loopback address
//! as its sender (a stub that checks drops it: that lookup fails, nothing leaks). DNS over TCP:
//! `wire_tcp`.
use crate::boundary::{Ctx, Detour};
use crate::net::fds;
use crate::spin::SpinLock;
use crate::state;
use libc::{c_int, c_void, iovec, msghdr, sockaddr, socklen_t, ssize_t};
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tsproxy_core::{dns, route, sockaddr as sa, sys, syscall, Errno};

/// A socket whose DNS we answer.
struct Sock {
    ino: u64,
    /// The server it is "connected" to (kept here, not in the kernel).
    peer: Option<SocketAddr>,
    /// For each answer still in its queue, in order: the server it answers for.
    owed: VecDeque<SocketAddr>,
    /// A TCP connection to the server (`wire_tcp`).
    tcp: bool,
    /// TCP: bytes the program wrote that are not yet a whole question (not sent yet).
    tcp_buf: Vec<u8>,
}

static ACTIVE: AtomicBool = AtomicBool::new(false);
static TABLE: SpinLock<BTreeMap<i32, Sock>> = SpinLock::new(BTreeMap::new());
/// The injectors: fd << 16 | port, 0 until made.
static INJ4: AtomicU64 = AtomicU64::new(0);
static INJ6: AtomicU64 = AtomicU64::new(0);
/// Held while an answer is injected, and by sends of other questions on our sockets (see
/// `inject`). Nothing under it can panic or block: raw syscalls on loopback and our own sockets.
static INJECTING: SpinLock<()> = SpinLock::new(());

/// Most answers remembered per socket (a program that never reads them: the oldest go).
const OWED_MAX: usize = 64;

pub fn lock_for_fork() {
    INJECTING.hold_for_fork();
    TABLE.hold_for_fork();
}

pub fn unlock_after_fork() {
    TABLE.release_after_fork();
    INJECTING.release_after_fork();
}

/// Does any socket of this process have DNS answered by us? (The I/O hooks' fast check.)
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Is `fd` (probably) one of ours? The byte table's flag; confirmed against the table.
pub fn marked(fd: c_int) -> bool {
    active() && fds::get(fd) & fds::DNS != 0
}

fn inode(fd: c_int) -> Option<u64> {
    crate::net::pending::table::inode(fd)
}

/// The answer for a DNS message sent to port 53 that asks about a tailnet name (the rule every
/// send to port 53 is judged by: `route::tailnet_question`), or None: the server gets it.
/// A plain query for one tailnet name gets its placeholder (A, AAAA) or NOERROR without data
/// (other types), as `getaddrinfo` and the supervisor's responder answer; anything else that
/// mentions a tailnet name SERVFAIL (FORMERR when its questions cannot be read whole).
pub fn answer_for(msg: &[u8]) -> Option<Vec<u8>> {
    let st = state::get();
    let name = route::tailnet_question(st.routes(), msg, |n| st.known_locally(n))?;
    if let Some(q) = dns::parse_query(msg) {
        if st.routes().is_tailnet_name(&q.name, |n| st.known_locally(n)) {
            if let Some(Ok(slot)) = super::tailnet_slot(&q.name) {
                crate::log::log!(Debug, "dns query {} type {} -> tailnet name, answered here", q.name, q.qtype);
                return Some(dns::answer_placeholder(msg, &q, Some(slot)));
            }
        }
    }
    let mut qs = dns::questions(msg);
    let complete = qs.by_ref().count() > 0 && qs.complete();
    crate::log::log!(Info, "dns: a question for tailnet name {name:?} that is not a plain query: {}, not sent", if complete { "SERVFAIL" } else { "FORMERR" });
    dns::error_response(msg, if complete { 2 } else { 1 })
}

/// The injector for answers to a socket of `family`: (fd, its address).
fn injector(v6: bool) -> Option<(c_int, SocketAddr)> {
    let cell = if v6 { &INJ6 } else { &INJ4 };
    let ip = if v6 { IpAddr::V6(Ipv6Addr::LOCALHOST) } else { IpAddr::V4(Ipv4Addr::LOCALHOST) };
    let v = cell.load(Ordering::Acquire);
    if v != 0 {
        return Some(((v >> 16) as c_int, SocketAddr::new(ip, v as u16)));
    }
    let fam = if v6 { libc::AF_INET6 } else { libc::AF_INET };
    let fd = syscall!(SYS_socket, fam, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0).ok()? as c_int;
    let fd = fds::move_high(fd);
    let bound = sa::encode(SocketAddr::new(ip, 0), fam)
        .and_then(|(s, l)| syscall!(SYS_bind, fd, &s as *const libc::sockaddr_storage, l).ok())
        .and_then(|_| sys::local_addr(fd));
    let Some(me) = bound else {
        fds::release_ours(fd);
        return None;
    };
    let packed = (fd as u64) << 16 | me.port() as u64;
    match cell.compare_exchange(0, packed, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => Some((fd, me)),
        Err(theirs) => {
            fds::release_ours(fd);
            Some(((theirs >> 16) as c_int, SocketAddr::new(ip, theirs as u16)))
        }
    }
}

/// The program dup2()s over `fd`: if it is one of our injectors, forget it (a new one is made
/// for the next answer; the old number is the program's now, as is the port it had).
pub fn evicted(fd: c_int) {
    for cell in [&INJ4, &INJ6] {
        let v = cell.load(Ordering::Acquire);
        if v != 0 && (v >> 16) as c_int == fd {
            let _ = cell.compare_exchange(v, 0, Ordering::AcqRel, Ordering::Acquire);
        }
    }
}

/// `new` is a dup of `old`: a DNS socket of ours under another number is ours as well.
pub fn on_dup(old: c_int, new: c_int) {
    if !marked(old) || new < 0 || new as usize >= fds::N {
        return;
    }
    let mut t = TABLE.lock();
    let Some(s) = t.get(&old) else { return };
    let copy = Sock { ino: s.ino, peer: s.peer, owed: VecDeque::new(), tcp: s.tcp, tcp_buf: Vec::new() };
    t.insert(new, copy);
    fds::mark_dns(new);
}

/// TCP: take the bytes kept for `fd` (written by the program, not yet a whole question).
pub fn tcp_take(fd: c_int) -> Vec<u8> {
    TABLE.lock().get_mut(&fd).map(|s| std::mem::take(&mut s.tcp_buf)).unwrap_or_default()
}

/// TCP: keep these bytes for `fd` until the question they begin is whole.
pub fn tcp_keep(fd: c_int, rest: Vec<u8>) {
    if let Some(s) = TABLE.lock().get_mut(&fd) {
        s.tcp_buf = rest;
    }
}

/// Is `from` one of our injectors?
fn from_injector(from: SocketAddr) -> bool {
    let ip = tsproxy_core::cidr::unmap(from.ip());
    let (cell, lo) = match ip {
        IpAddr::V4(_) => (&INJ4, IpAddr::V4(Ipv4Addr::LOCALHOST)),
        IpAddr::V6(_) => (&INJ6, IpAddr::V6(Ipv6Addr::LOCALHOST)),
    };
    let v = cell.load(Ordering::Acquire);
    v != 0 && ip == lo && from.port() == v as u16
}

/// The socket's family (its own address's: AF_INET6 for a dual-stack socket).
fn family(fd: c_int) -> Option<c_int> {
    sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).ok()
}

/// Bind an unbound socket to the wildcard address of its family, port 0 (what the kernel does
/// for a first send or a connect), so it has a port our answer can be sent to.
fn ensure_bound(fd: c_int, fam: c_int) -> Option<SocketAddr> {
    let me = sys::local_addr(fd)?;
    if me.port() != 0 {
        return Some(me);
    }
    let any = if fam == libc::AF_INET6 { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
    let (s, l) = sa::encode(SocketAddr::new(any, 0), fam)?;
    syscall!(SYS_bind, fd, &s as *const libc::sockaddr_storage, l).ok()?;
    sys::local_addr(fd)
}

/// Put `answer` in `fd`'s receive queue, to be reported as coming from `server`. False when it
/// could not be done (the caller fails the send: the question must not go out either).
fn inject(fd: c_int, server: SocketAddr, answer: &[u8]) -> bool {
    let Some(fam) = family(fd) else { return false };
    // An IPv6-only socket cannot reach an IPv4 server (the kernel refuses the send with
    // ENETUNREACH): neither may its answer come, nor go to whoever holds that IPv4 port.
    let v4_server = tsproxy_core::cidr::unmap(server.ip()).is_ipv4();
    if fam == libc::AF_INET6 && v4_server && sys::getsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY).unwrap_or(0) != 0 {
        return false;
    }
    // One injection at a time, and no send on a DNS socket of ours meanwhile (`send_public`):
    // a connected socket is pointed at the injector for a moment, and a question another
    // thread sent then would go there instead of to the server.
    let _one = INJECTING.lock();
    // The injector of the server's family (a v4 server on a dual-stack socket: the v4 one,
    // seen v4-mapped), so the answer reaches the socket on the path a reply would take.
    let v6 = matches!(server, SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_none());
    let Some((inj, inj_addr)) = injector(v6) else { return false };
    if sys::is_connected(fd) {
        // Connected to `server`: it takes datagrams from its peer only. Connect it to the
        // injector for the answer, then to the server again. A connected UDP socket connected
        // anew keeps its port (nothing is unbound in between), and datagrams already queued
        // stay queued.
        let (Some((to_inj, il)), Some((to_srv, sl))) = (sa::encode(inj_addr, fam), sa::encode(server, fam)) else { return false };
        if sys::connect_raw(fd, (&to_inj as *const libc::sockaddr_storage).cast(), il).is_err() {
            return false;
        }
        let ok = sys::local_addr(fd).is_some_and(|me| inject_to(fd, inj, me, server, answer));
        if let Err(e) = sys::connect_raw(fd, (&to_srv as *const libc::sockaddr_storage).cast(), sl) {
            crate::log::log!(Error, "dns: fd={fd} could not be connected to {server} again after an answer: {e}");
        }
        return ok;
    }
    let Some(me) = ensure_bound(fd, fam) else { return false };
    inject_to(fd, inj, me, server, answer)
}

/// Send `answer` from the injector `inj` to `me` (the socket's own address), remembering that
/// it stands for `server`.
fn inject_to(fd: c_int, inj: c_int, me: SocketAddr, server: SocketAddr, answer: &[u8]) -> bool {
    let Some(ino) = inode(fd) else { return false };
    // Where to: the socket's own address, or loopback for a wildcard one.
    let to_ip = match me.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => tsproxy_core::cidr::unmap(ip),
    };
    let inj_fam = family(inj).unwrap_or(libc::AF_INET);
    let to_ip = match (to_ip, inj_fam) {
        // A v6 injector cannot send to an IPv4 address (and a v4 one not to IPv6): the other
        // loopback of the socket, which a dual-stack wildcard socket accepts.
        (IpAddr::V4(_), libc::AF_INET6) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        (IpAddr::V6(_), libc::AF_INET) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (ip, _) => ip,
    };
    let Some((to, tl)) = sa::encode(SocketAddr::new(to_ip, me.port()), inj_fam) else { return false };
    {
        crate::fork::arm();
        let mut t = TABLE.lock();
        let s = t.entry(fd).or_insert(Sock { ino, peer: None, owed: VecDeque::new(), tcp: false, tcp_buf: Vec::new() });
        if s.ino != ino {
            *s = Sock { ino, peer: None, owed: VecDeque::new(), tcp: false, tcp_buf: Vec::new() };
        }
        if s.owed.len() >= OWED_MAX {
            s.owed.pop_front();
        }
        s.owed.push_back(server);
    }
    fds::mark_dns(fd);
    ACTIVE.store(true, Ordering::Release);
    let sent = syscall!(SYS_sendto, inj, answer.as_ptr(), answer.len(), libc::MSG_DONTWAIT, &to as *const libc::sockaddr_storage, tl);
    if sent.is_err() {
        if let Some(s) = TABLE.lock().get_mut(&fd) {
            s.owed.pop_back();
        }
        return false;
    }
    true
}

/// A datagram the program sends to `server` (port 53, not a tailnet destination): answered
/// here when it asks about a tailnet name. Some(result) when it was (the byte count, as a
/// send reports it), None when it goes to the server.
pub fn maybe_answer(fd: c_int, server: SocketAddr, msg: &[u8]) -> Option<Result<usize, Errno>> {
    let answer = answer_for(msg)?;
    match sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) {
        Ok(ty) if ty == libc::SOCK_DGRAM => {}
        // A stream socket (DNS over TCP is not answered: README, Limitations), or not a socket:
        // the caller decides.
        _ => return None,
    }
    if inject(fd, server, &answer) {
        Some(Ok(msg.len()))
    } else {
        crate::log::log!(Error, "dns: could not answer a query for a tailnet name on fd={fd}; refused (it never goes to {server})");
        Some(Err(Errno(libc::ENETUNREACH)))
    }
}

/// connect() of a datagram socket to `server:53` (see the module docs): remember it; the
/// kernel then connects it (the caller goes on to the program's connect). Nothing for a
/// stream socket or a descriptor past the byte table.
pub fn connect(fd: c_int, server: SocketAddr, fam: c_int) {
    if fd < 0 || fd as usize >= fds::N || server.port() != route::DNS_PORT {
        return;
    }
    let tcp = match sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) {
        Ok(libc::SOCK_DGRAM) => false,
        Ok(libc::SOCK_STREAM) => true,
        _ => return,
    };
    let Some(sfam) = family(fd) else { return };
    if sfam != fam || (sfam != libc::AF_INET && sfam != libc::AF_INET6) {
        return; // the kernel says what is wrong with the address
    }
    let Some(ino) = inode(fd) else { return };
    crate::fork::arm();
    {
        let mut t = TABLE.lock();
        let s = t.entry(fd).or_insert(Sock { ino, peer: None, owed: VecDeque::new(), tcp, tcp_buf: Vec::new() });
        if s.ino != ino {
            *s = Sock { ino, peer: None, owed: VecDeque::new(), tcp, tcp_buf: Vec::new() };
        }
        s.peer = Some(server);
        s.tcp = tcp;
    }
    fds::mark_dns(fd);
    ACTIVE.store(true, Ordering::Release);
    crate::log::log!(Debug, "connect fd={fd} {server} -> a DNS socket; tailnet questions answered here");
}

/// connect() on a socket of ours to somewhere else (or AF_UNSPEC): it is the kernel's again.
pub fn forget(fd: c_int) {
    if marked(fd) {
        TABLE.lock().remove(&fd);
        fds::unmark_dns(fd);
    }
}

/// The server and whether it is a TCP connection.
fn peer_kind(fd: c_int) -> Option<(SocketAddr, bool)> {
    if !marked(fd) {
        return None;
    }
    let ino = inode(fd)?;
    let t = TABLE.lock();
    let s = t.get(&fd)?;
    (s.ino == ino).then_some(s.peer.map(|p| (p, s.tcp))).flatten()
}

/// Is `fd` one of our datagram sockets, still the same socket? (A TCP one's receives are the
/// kernel's: nothing in them is ours to rewrite.)
fn is_ours(fd: c_int) -> bool {
    if !marked(fd) {
        return false;
    }
    let Some(ino) = inode(fd) else { return false };
    TABLE.lock().get(&fd).is_some_and(|s| s.ino == ino && !s.tcp)
}

/// The bytes of a send, gathered from its iovecs (at most a datagram's worth).
///
/// # Safety
/// `iov` holds `n` readable iovecs, each of readable memory.
unsafe fn gather(iov: *const iovec, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n.min(1024) {
        // SAFETY: the caller's contract.
        let v = unsafe { std::ptr::read_unaligned(iov.add(i)) };
        let take = v.iov_len.min(sys::DATAGRAM_MAX.saturating_sub(out.len()));
        if !v.iov_base.is_null() && take > 0 {
            // SAFETY: the caller's contract: iov_base holds iov_len readable bytes.
            out.extend_from_slice(unsafe { std::slice::from_raw_parts(v.iov_base as *const u8, take) });
        }
    }
    out
}

/// A send without an address on a socket of ours (write, send, writev, sendmsg with no name,
/// sendto with none): answered here when it asks about a tailnet name; any other question is
/// sent by the kernel on the connection — by us, while no answer is being injected (see
/// `inject`). None: not ours (libc sends it).
///
/// # Safety
/// `iov` holds `n` readable iovecs; `control` has `clen` readable bytes (or is null).
pub unsafe fn send(fd: c_int, iov: *const iovec, n: usize, control: *mut c_void, clen: usize, flags: c_int) -> Option<Detour<ssize_t>> {
    let (server, tcp) = peer_kind(fd)?;
    // SAFETY: the caller's contract.
    let bytes = unsafe { gather(iov, n) };
    if tcp {
        return super::wire_tcp::send(fd, server, &bytes);
    }
    if !route::whole_dns_datagram(&bytes, flags) {
        // Not one whole DNS message (MSG_MORE, a corked socket's piece, a segmented send, bytes
        // after the message): part of a datagram whose questions we would never see whole.
        // Refused, as for an unconnected send (net/send.rs, `dns_plan`).
        crate::log::log!(Info, "dns: send fd={fd} to {server}: not one whole DNS message; refused");
        return Some(Detour::Fail(Errno(libc::EPERM)));
    }
    if let Some(r) = maybe_answer(fd, server, &bytes) {
        return Some(match r {
            Ok(k) => Detour::Done(k as ssize_t),
            Err(e) => Detour::Fail(e),
        });
    }
    // SAFETY: all-zero is a valid msghdr; the caller's buffers, as given.
    let mut m: msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = iov as *mut iovec;
    m.msg_iovlen = n;
    m.msg_control = control;
    m.msg_controllen = clen;
    let _quiet = INJECTING.lock();
    Some(match syscall!(SYS_sendmsg, fd, &m as *const msghdr, flags) {
        Ok(k) => Detour::Done(k as ssize_t),
        Err(e) => Detour::Fail(Errno::of(&e)),
    })
}

/// What a receive on a socket of ours got.
pub struct Got {
    /// Bytes (or, with MSG_TRUNC, the datagram's real length), as recvmsg returns.
    pub n: usize,
    /// msg_flags.
    pub flags: c_int,
    /// Where it is reported to come from.
    pub from: SocketAddr,
    /// The length of the control data written.
    pub controllen: usize,
}

/// A receive on `fd`. None: not ours (the kernel answers the caller's call as it is). Waits
/// for a blocking socket at the boundary (a cancellation point), never in the kernel.
///
/// # Safety
/// `iov` holds `n` writable iovecs; `control` has `clen` writable bytes (or is null).
pub unsafe fn recv(fd: c_int, iov: *const iovec, n: usize, control: *mut c_void, clen: usize, flags: c_int, ctx: &mut Ctx) -> Option<Detour<Got>> {
    if !is_ours(fd) {
        return None;
    }
    if crate::net::rx::interrupted(ctx) {
        return Some(Detour::Fail(Errno(libc::EINTR)));
    }
    let blocking = flags & libc::MSG_DONTWAIT == 0 && sys::fcntl_getfl(fd).is_ok_and(|f| f & libc::O_NONBLOCK == 0);
    {
        // SAFETY: all-zero is a valid sockaddr_storage / msghdr.
        let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut m: msghdr = unsafe { std::mem::zeroed() };
        m.msg_name = (&mut from as *mut libc::sockaddr_storage).cast();
        m.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as socklen_t;
        m.msg_iov = iov as *mut iovec;
        m.msg_iovlen = n;
        m.msg_control = control;
        m.msg_controllen = clen;
        let k = match syscall!(SYS_recvmsg, fd, &mut m as *mut msghdr, flags | libc::MSG_DONTWAIT) {
            Ok(k) => k as usize,
            Err(e) if blocking && e.raw_os_error() == Some(libc::EAGAIN) => {
                return Some(crate::net::rx::wait_readable(fd, ctx));
            }
            Err(e) => return Some(Detour::Fail(Errno::of(&e))),
        };
        // SAFETY: the kernel wrote msg_namelen bytes of the sender's address.
        let src = unsafe { sa::read((&from as *const libc::sockaddr_storage).cast(), m.msg_namelen) };
        let Some(src) = src else {
            return Some(Detour::Done(Got {
                n: k,
                flags: m.msg_flags,
                from: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
                controllen: m.msg_controllen,
            }));
        };
        let mut t = TABLE.lock();
        let s = t.get_mut(&fd)?;
        if from_injector(src) {
            let server = if flags & libc::MSG_PEEK != 0 { s.owed.front().copied() } else { s.owed.pop_front() };
            let server = server.or(s.peer).unwrap_or(src);
            return Some(Detour::Done(Got { n: k, flags: m.msg_flags, from: server, controllen: m.msg_controllen }));
        }
        Some(Detour::Done(Got { n: k, flags: m.msg_flags, from: src, controllen: m.msg_controllen }))
    }
}

/// Write `from` into a caller's address buffer of `*len` bytes as the kernel does: truncated to
/// the buffer, the full length reported. The family of the socket decides the form (a v4
/// server on a dual-stack socket is reported v4-mapped).
///
/// # Safety
/// `addr` is null or has `*len` writable bytes; `len` is null or valid.
pub unsafe fn write_addr(fd: c_int, from: SocketAddr, addr: *mut sockaddr, len: *mut socklen_t) {
    if addr.is_null() || len.is_null() {
        return;
    }
    let fam = family(fd).unwrap_or(libc::AF_INET);
    let Some((st, l)) = sa::encode(from, fam) else { return };
    // SAFETY: the caller's contract.
    unsafe {
        let cap = (*len as usize).min(l as usize);
        std::ptr::copy_nonoverlapping((&st as *const libc::sockaddr_storage).cast::<u8>(), addr.cast::<u8>(), cap);
        *len = l;
    }
}

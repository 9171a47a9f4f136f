//! DNS over TCP to port 53 spoken by the program itself (dig +tcp, dnspython, c-ares after a
//! truncated reply): a question for a tailnet name is answered here, never sent.
//!
//! The connection to the server is the kernel's; hooked sends on it are cut into framed
//! messages (across writes) and judged whole (see `send`), until one carries a question for a
//! tailnet name. Nothing can be put in a TCP stream from the server's side, so that socket is then
//! replaced, under the same descriptor number, by one connected to a loopback listener of
//! ours that holds the framed answer and then closes (a DNS-over-TCP client reads the answer,
//! then EOF, as when a server closes an idle connection). The program sees the answer on its
//! own descriptor: its epoll registrations are moved to the new socket with their events and
//! data, its file status flags (O_NONBLOCK) and close-on-exec flag are kept, and
//! `getpeername` still names the server. What cannot carry over: other queries already
//! sent on that connection and not yet answered (their answers are lost with it; the client
//! asks again), socket options the program set on the old socket.
use crate::boundary::Detour;
use libc::{c_int, ssize_t};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tsproxy_core::{sockaddr as sa, sys, syscall, Errno};

/// A DNS-over-TCP message longer than this is not a question a stub sends: the connection is
/// then not looked at any more (its bytes go to the kernel as they come).
const QUESTION_MAX: usize = 4096;

/// A send on a TCP socket connected to `server:53`. The stream is cut into its framed messages
/// (two-byte length, message), across writes: bytes that are not yet a whole message are kept
/// (and reported written) until they are, so no question is judged in pieces. Whole messages
/// that ask nothing about a tailnet name are sent to the server at once; whole messages that
/// all do are answered (every one of them); a write that mixes the two, or leaves part of a
/// message after a tailnet question, is refused (`ECONNRESET`) — nothing of it is sent.
/// None: not looked at (the kernel sends it).
pub fn send(fd: c_int, server: SocketAddr, bytes: &[u8]) -> Option<Detour<ssize_t>> {
    let mut data = super::wire::tcp_take(fd);
    let kept = data.len();
    data.extend_from_slice(bytes);
    let mut frames = Vec::new();
    let mut at = 0;
    while data.len() >= at + 2 {
        let len = u16::from_be_bytes([data[at], data[at + 1]]) as usize;
        if len > QUESTION_MAX {
            // Not DNS questions: stop looking at this connection; what was kept goes first.
            super::wire::forget(fd);
            return Some(send_all(fd, &data, kept, bytes.len()));
        }
        if data.len() < at + 2 + len {
            break;
        }
        frames.push(at + 2..at + 2 + len);
        at += 2 + len;
    }
    let answers: Vec<Option<Vec<u8>>> = frames.iter().map(|r| super::wire::answer_for(&data[r.clone()])).collect();
    if answers.iter().all(Option::is_none) {
        // Nothing about a tailnet name: the whole messages go now, a partial one waits.
        let rest = data.split_off(at);
        let r = if data.is_empty() { Detour::Done(bytes.len() as ssize_t) } else { send_all(fd, &data, kept.min(data.len()), bytes.len()) };
        if matches!(r, Detour::Done(_)) {
            super::wire::tcp_keep(fd, rest);
        }
        return Some(r);
    }
    if answers.iter().all(Option::is_some) && at == data.len() {
        let mut frame = Vec::new();
        for a in answers.into_iter().flatten() {
            let a = &a[..a.len().min(u16::MAX as usize)];
            frame.extend_from_slice(&(a.len() as u16).to_be_bytes());
            frame.extend_from_slice(a);
        }
        if swap(fd, server, &frame) {
            return Some(Detour::Done(bytes.len() as ssize_t));
        }
        crate::log::log!(Error, "dns: could not answer a query for a tailnet name over TCP on fd={fd}; refused (it never goes to {server})");
        return Some(Detour::Fail(Errno(libc::ECONNRESET)));
    }
    crate::log::log!(Error, "dns: fd={fd} wrote questions for a tailnet name and others to {server} in one stream write; refused (nothing of it is sent)");
    Some(Detour::Fail(Errno(libc::ECONNRESET)))
}

/// Send `data` (the bytes kept from earlier writes, `kept` of them, then this write's) to the
/// server. The result is this write's: all of it written, or the error (a failure before this
/// write's bytes went out leaves the kept bytes to be tried again with the program's retry).
fn send_all(fd: c_int, data: &[u8], kept: usize, this: usize) -> Detour<ssize_t> {
    let mut off = 0;
    let mut waited = 0;
    while off < data.len() {
        match sys::send(fd, &data[off..]) {
            Ok(n) => off += n,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && waited < 10 => {
                // A full send buffer on a DNS connection: wait a little for room, bounded.
                waited += 1;
                let _ = sys::poll1(fd, libc::POLLOUT, 100);
            }
            Err(e) => {
                if off < kept {
                    super::wire::tcp_keep(fd, data[off..kept].to_vec());
                }
                return Detour::Fail(Errno::of(&e));
            }
        }
    }
    Detour::Done(this as ssize_t)
}

/// Replace `fd`'s socket by one whose peer has sent `frame` and closed.
fn swap(fd: c_int, server: SocketAddr, frame: &[u8]) -> bool {
    let Ok(fam) = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN) else { return false };
    let lo = if fam == libc::AF_INET6 { IpAddr::V6(Ipv6Addr::LOCALHOST) } else { IpAddr::V4(Ipv4Addr::LOCALHOST) };
    let Some((la, ll)) = sa::encode(SocketAddr::new(lo, 0), fam) else { return false };
    let Ok(l) = syscall!(SYS_socket, fam, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0).map(|v| v as c_int) else { return false };
    let close = |f: c_int| {
        let _ = syscall!(SYS_close, f);
    };
    let listening = syscall!(SYS_bind, l, &la as *const libc::sockaddr_storage, ll).is_ok() && syscall!(SYS_listen, l, BACKLOG).is_ok();
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut at: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut al = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    if !listening || syscall!(SYS_getsockname, l, &mut at as *mut libc::sockaddr_storage, &mut al as *mut libc::socklen_t).is_err() {
        close(l);
        return false;
    }
    let Ok(s) = syscall!(SYS_socket, fam, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0).map(|v| v as c_int) else {
        close(l);
        return false;
    };
    // Loopback: the connection is established (in the listener's queue) when connect returns.
    let accepted = sys::connect_raw(s, (&at as *const libc::sockaddr_storage).cast(), al).ok().and_then(|_| accept_from(l, s));
    close(l);
    let Some(a) = accepted else {
        close(s);
        return false;
    };
    let wrote = sys::send(a, frame).is_ok_and(|n| n == frame.len());
    close(a);
    if !wrote {
        close(s);
        return false;
    }
    // The program's view of its descriptor, carried over to the new socket.
    let fl = sys::fcntl_getfl(fd).unwrap_or(libc::O_RDWR);
    let _ = sys::fcntl_setfl(s, fl);
    let cloexec = syscall!(SYS_fcntl, fd, libc::F_GETFD).map(|v| v as c_int & libc::FD_CLOEXEC != 0).unwrap_or(false);
    let regs = crate::net::pending::epoll::take_existing(fd);
    let swapped = syscall!(SYS_dup3, s, fd, if cloexec { libc::O_CLOEXEC } else { 0 }).is_ok();
    close(s);
    for r in regs {
        let _ = sys::epoll_ctl(r.epfd, libc::EPOLL_CTL_ADD, r.fd, r.events, r.data);
    }
    if swapped {
        super::wire::forget(fd);
        if let Some((st, l)) = sa::encode(server, fam) {
            // SAFETY: st holds l bytes of an address.
            unsafe { crate::net::tunnels::record(fd, (&st as *const libc::sockaddr_storage).cast(), l, None) };
        }
    }
    swapped
}

/// The listener's backlog: room for our own connection behind a few strangers' (below).
const BACKLOG: usize = 8;

/// Accept the connection that comes from `s` (connected to `l`, so in its queue) and no other.
/// Any local user can connect to the listener between its `listen` and our `connect` (its port
/// shows in /proc/net/tcp): the first connection accepted was taken for ours, and the answer
/// to the program's question (the tailnet name it asked) went to that user while the program's
/// lookup failed. Strangers' connections are closed unanswered; ours is at most `BACKLOG`
/// places behind them (the queue is first in, first out), so the loop is bounded.
fn accept_from(l: c_int, s: c_int) -> Option<c_int> {
    let ours = sys::local_addr(s)?;
    for _ in 0..=BACKLOG {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut peer: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut pl = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let a = syscall!(SYS_accept4, l, &mut peer as *mut libc::sockaddr_storage, &mut pl as *mut libc::socklen_t, libc::SOCK_CLOEXEC).ok()? as c_int;
        // SAFETY: the kernel wrote `pl` bytes of an address into `peer`, which is large enough.
        if unsafe { sa::read((&peer as *const libc::sockaddr_storage).cast(), pl) } == Some(ours) {
            return Some(a);
        }
        let _ = syscall!(SYS_close, a);
    }
    None
}

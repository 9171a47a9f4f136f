//! DNS over TCP to port 53 spoken by the program itself (dig +tcp, dnspython, c-ares after a
//! truncated reply): a question for a tailnet name is answered here, never sent.
//!
//! The connection to the server is the kernel's, untouched, until a hooked send carries a
//! question for a tailnet name (framed with its two-byte length, or alone after a send of the
//! length). Nothing can be put in a TCP stream from the server's side, so that socket is then
//! replaced, under the same descriptor number, by one connected to a loopback listener of
//! ours that holds the framed answer and then closes (a DNS-over-TCP client reads the answer,
//! then EOF, as when a server closes an idle connection). The program sees the answer on its
//! own descriptor: its epoll registrations are moved to the new socket with their events and
//! data, its file status flags (O_NONBLOCK) and close-on-exec flag are kept, and
//! `getpeername` still names the server. The first bytes of the question, if sent on their own
//! (the length), went to the server: no name. What cannot carry over: other queries already
//! sent on that connection and not yet answered (their answers are lost with it; the client
//! asks again), socket options the program set on the old socket.
use crate::boundary::Detour;
use libc::{c_int, ssize_t};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tsproxy_core::{sockaddr as sa, sys, syscall, Errno};

/// A send on a TCP socket connected to `server:53`: answered here when `bytes` (the start of
/// what is being sent) hold a question for a tailnet name. None: the kernel sends it.
pub fn send(fd: c_int, server: SocketAddr, bytes: &[u8]) -> Option<Detour<ssize_t>> {
    let framed = (bytes.len() >= 14).then(|| {
        let len = u16::from_be_bytes([bytes[0], bytes[1]]) as usize;
        &bytes[2..(2 + len).min(bytes.len())]
    });
    let answer = framed.and_then(super::wire::answer_for).or_else(|| super::wire::answer_for(bytes))?;
    let mut frame = Vec::with_capacity(answer.len() + 2);
    frame.extend_from_slice(&(answer.len().min(u16::MAX as usize) as u16).to_be_bytes());
    frame.extend_from_slice(&answer[..answer.len().min(u16::MAX as usize)]);
    if swap(fd, server, &frame) {
        Some(Detour::Done(bytes.len() as ssize_t))
    } else {
        crate::log::log!(Error, "dns: could not answer a query for a tailnet name over TCP on fd={fd}; refused (it never goes to {server})");
        Some(Detour::Fail(Errno(libc::ECONNRESET)))
    }
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
    let listening = syscall!(SYS_bind, l, &la as *const libc::sockaddr_storage, ll).is_ok() && syscall!(SYS_listen, l, 1).is_ok();
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
    let accepted = sys::connect_raw(s, (&at as *const libc::sockaddr_storage).cast(), al)
        .ok()
        .and_then(|_| syscall!(SYS_accept4, l, 0usize, 0usize, libc::SOCK_CLOEXEC).ok())
        .map(|a| a as c_int);
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

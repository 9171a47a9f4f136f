//! connect(): decide, then either call libc or tunnel on the application's own socket.
use super::pending::{self, Gate};
use super::{decide, Route};
use crate::boundary::{Bypass, Ctx, Detour};
use crate::log::log;
use crate::state;
use libc::{c_int, sockaddr, socklen_t};
use tsproxy_core::sockaddr as sa;
use tsproxy_core::sys;
use tsproxy_core::{Errno, Target};

/// A destination that is not ours. Under the launcher's supervisor: a marked raw connect,
/// which its seccomp filter lets through without a round trip to the supervisor (we have
/// decided already) — that one is not a cancellation point, the price of not paying a
/// notification per connect. Otherwise libc's own connect, called by the boundary.
fn direct(fd: c_int, addr: *const sockaddr, len: socklen_t, why: Bypass) -> Detour<c_int> {
    if state::get().supervisor_dns.is_some() {
        return match sys::connect_raw(fd, addr, len) {
            Ok(()) => Detour::Done(0),
            Err(e) => Detour::Fail(Errno::of(&e)),
        };
    }
    Detour::Bypass(why)
}

/// # Safety
/// `addr` is null or points to `len` readable bytes (connect(2)'s contract).
pub unsafe fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t, ctx: &mut Ctx) -> Detour<c_int> {
    if ctx.round > 0 {
        // A blocking connect through the proxy, back from a wait.
        return pending::resume_inline(fd, ctx);
    }
    if let Some(d) = pending::reconnect(fd) {
        return d;
    }
    // A DNS socket of ours connected elsewhere (or AF_UNSPEC) is the kernel's again; one
    // connected to port 53 again is taken again below.
    crate::dns::wire::forget(fd);
    // Likewise a socket connected through a UDP relay (a proxied destination connects again).
    super::udp::disconnect(fd);
    // Whatever happens next, the socket is no longer fresh from socket(2).
    let known = super::fds::get(fd);
    super::fds::connecting(fd);
    // SAFETY: forwarded from our caller's contract.
    let Some(dest) = (unsafe { sa::read(addr, len) }) else { return direct(fd, addr, len, Bypass::NotApplicable) };
    let target = match decide(dest) {
        Route::Direct(_) if dest.port() == tsproxy_core::route::DNS_PORT => {
            // A socket to a DNS server: its tailnet questions are answered here.
            // SAFETY: at least a sa_family_t is readable (sockaddr::read accepted it).
            let family = unsafe { std::ptr::read_unaligned(std::ptr::addr_of!((*addr).sa_family)) } as c_int;
            crate::dns::wire::connect(fd, dest, family);
            return direct(fd, addr, len, Bypass::NotTailnet);
        }
        Route::Direct(why) => {
            log!(Debug, "connect fd={fd} {dest} -> direct ({why:?})");
            return direct(fd, addr, len, Bypass::NotTailnet);
        }
        Route::Refuse(e, why) => {
            log!(Error, "connect fd={fd} {dest}: refused: {why}");
            return Detour::Fail(e);
        }
        Route::Proxy(t) => t,
    };
    // A datagram socket: through a SOCKS5 UDP association (`net::udp`).
    if let Some(d) = super::udp::connect(fd, dest, &target, known) {
        return d;
    }
    // SAFETY: forwarded from our caller's contract.
    unsafe { tunnel(fd, addr, len, target, false, known) }
}

/// Inside tsproxy (libc working for us, e.g. the real getaddrinfo's DNS socket): libc, except
/// that a tailnet destination is refused, never dialled directly.
///
/// # Safety
/// As `connect`.
pub unsafe fn connect_nested(_fd: c_int, addr: *const sockaddr, len: socklen_t) -> Detour<c_int> {
    // SAFETY: forwarded contract.
    match unsafe { sa::read(addr, len) }.map(super::decide_nested) {
        Some(Route::Proxy(_) | Route::Refuse(..)) => Detour::Fail(Errno(libc::ECONNREFUSED)),
        _ => Detour::Bypass(Bypass::Reentered),
    }
}

/// Tunnel `fd` to `target`. A nonblocking socket gets EINPROGRESS and the driver thread runs
/// the handshake, unless `inline` (TCP Fast Open, whose data must follow at once); a blocking
/// one runs it in this thread, waiting at the boundary.
///
/// # Safety
/// `addr` points to `len` readable bytes; `known` is what net::fds knew about `fd` before.
pub unsafe fn tunnel(fd: c_int, addr: *const sockaddr, len: socklen_t, target: Target, inline: bool, known: u8) -> Detour<c_int> {
    // A socket fresh from socket(2) (see net::fds) needs neither question to the kernel.
    let ty = if known & super::fds::FRESH_STREAM != 0 {
        libc::SOCK_STREAM
    } else if known & super::fds::FRESH_OTHER != 0 {
        libc::SOCK_DGRAM
    } else {
        match sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) {
            Ok(t) => t,
            Err(e) => return Detour::Fail(Errno::of(&e)),
        }
    };
    if ty != libc::SOCK_STREAM {
        log!(Info, "fd={fd} {target}: only TCP is proxied; refusing a datagram socket to a tailnet destination");
        return Detour::Fail(Errno(libc::ENETUNREACH));
    }
    if known & super::fds::FRESH_STREAM == 0 && sys::is_connected(fd) {
        // Connected already (a tunnel that is up, or anything else). Checked here because the
        // kernel answers a repeated connect() after a nonblocking connect completed with 0,
        // not EISCONN, which would start a second handshake inside a live tunnel.
        return Detour::Fail(Errno(libc::EISCONN));
    }
    // The address family the application used is the socket's (otherwise the kernel rejects
    // the address, which we let it do: see the EAFNOSUPPORT/EINVAL case in pending::start).
    // SAFETY: at least a sa_family_t is readable (sockaddr::read accepted it).
    let family = unsafe { std::ptr::read_unaligned(std::ptr::addr_of!((*addr).sa_family)) } as c_int;
    let st = state::get();
    let Some(cfg) = &st.cfg else {
        log!(Error, "connect fd={fd} {target}: refused, the configuration is invalid");
        return Detour::Fail(Errno(libc::ECONNREFUSED));
    };
    let fl = match sys::fcntl_getfl(fd) {
        Ok(f) => f,
        Err(e) => return Detour::Fail(Errno::of(&e)),
    };
    let blocking = fl & libc::O_NONBLOCK == 0;
    let inline = inline || blocking;
    let limit = if blocking { sys::sock_timeout(fd, libc::SO_SNDTIMEO).unwrap_or(cfg.timeout) } else { cfg.timeout };
    let read_cap = if blocking { sys::sock_timeout(fd, libc::SO_RCVTIMEO) } else { None };
    // SAFETY: forwarded from our caller's contract.
    unsafe { pending::start(fd, family, target, addr, len, known, inline, fl, limit, read_cap) }
}

/// getsockname() of a socket connected through a UDP relay: the address the kernel would have
/// used for the destination (see `net::udp::local`), not the loopback one it uses for the
/// relay.
///
/// # Safety
/// getsockname(2)'s contract.
pub unsafe fn getsockname(fd: i32, addr: *mut sockaddr, len: *mut socklen_t) -> Detour<c_int> {
    if addr.is_null() || len.is_null() {
        return Detour::Bypass(Bypass::NotApplicable);
    }
    match super::udp::local(fd) {
        Some(me) => {
            // SAFETY: addr has *len writable bytes (contract).
            unsafe { crate::dns::wire::write_addr(fd, me, addr, len) };
            Detour::Done(0)
        }
        None => Detour::Bypass(Bypass::NotOurs),
    }
}

/// Is the socket of another family than the address the application gave? (Asked only after
/// the proxy connect failed with EAFNOSUPPORT/EINVAL, so the common path saves the syscall.)
pub fn family_mismatch(fd: c_int, family: c_int) -> bool {
    sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).is_ok_and(|d| d != family)
}

/// getpeername(): ENOTCONN while handshaking; a tunnelled socket reports the destination the
/// application connected to rather than the proxy, truncated to the caller's buffer as the
/// kernel truncates, with the full length reported.
///
/// # Safety
/// getpeername(2)'s contract.
pub unsafe fn getpeername(fd: i32, addr: *mut sockaddr, len: *mut socklen_t, ctx: &mut Ctx) -> Detour<c_int> {
    if pending::active() {
        match pending::gate::<c_int>(fd, ctx, Gate::NotConnected) {
            Detour::Bypass(_) => {}
            d => return d,
        }
    }
    if addr.is_null() || len.is_null() {
        return Detour::Bypass(Bypass::NotApplicable);
    }
    if let Some(p) = super::udp::peer(fd) {
        // Connected through the relay: the destination the program named.
        // SAFETY: addr has *len writable bytes (contract).
        unsafe { crate::dns::wire::write_addr(fd, p, addr, len) };
        return Detour::Done(0);
    }
    let Some(e) = super::tunnels::lookup(fd) else { return Detour::Bypass(Bypass::NotOurs) };
    // The capacity is what the caller says *before* any call writes the full length back.
    // SAFETY: len is valid (contract).
    let cap = unsafe { *len } as usize;
    let f = real!(getpeername: fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int);
    // The real call validates the socket (ENOTCONN after a shutdown...) into a scratch buffer.
    // SAFETY: all-zero is valid; st/l are ours.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut l = std::mem::size_of::<libc::sockaddr_storage>() as socklen_t;
    // SAFETY: our own buffer and length.
    if unsafe { f(fd, std::ptr::addr_of_mut!(st).cast(), &mut l) } != 0 {
        return crate::boundary::passed(-1);
    }
    // SAFETY: addr has cap writable bytes (contract); we copy at most that many.
    unsafe {
        std::ptr::copy_nonoverlapping(std::ptr::addr_of!(e.addr).cast::<u8>(), addr.cast::<u8>(), cap.min(e.len as usize));
        *len = e.len;
    }
    Detour::Done(0)
}

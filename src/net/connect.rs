//! connect(): decide, then either call libc or tunnel on the application's own socket.
use super::{decide, Route};
use crate::ffi::Ret;
use crate::guard::Guard;
use crate::log::log;
use crate::state;
use libc::{c_int, sockaddr, socklen_t};
use std::time::Instant;
use tsproxy_core::sockaddr as sa;
use tsproxy_core::sys;
use tsproxy_core::tunnel::{self, Opts};
use tsproxy_core::{Errno, Target};

fn real_connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> Ret<c_int> {
    if state::get().supervisor_dns.is_some() {
        // Under the launcher's supervisor: a marked raw connect, which its seccomp filter lets
        // through without a round trip to the supervisor (we have decided already).
        return match sys::connect_raw(fd, addr, len) {
            Ok(()) => Ret::ok(0),
            Err(e) => Ret::err(-1, sys::code(&e)),
        };
    }
    let f = real!(connect: fn(c_int, *const sockaddr, socklen_t) -> c_int);
    // SAFETY: the application's own arguments, passed on unchanged.
    Ret::passed(unsafe { f(fd, addr, len) })
}

pub enum Outcome {
    Tunnelled,
    /// Nonblocking socket: the handshake goes on without the caller (EINPROGRESS).
    Pending(Ret<c_int>),
    /// Not ours after all (family mismatch the kernel will reject): hand to libc.
    Kernel,
}

/// # Safety
/// `addr` is null or points to `len` readable bytes (connect(2)'s contract).
pub unsafe fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> Ret<c_int> {
    if let Some(r) = super::pending::reconnect(fd) {
        return r;
    }
    // Whatever happens next, the socket is no longer fresh from socket(2).
    let known = super::fds::get(fd);
    super::fds::connecting(fd);
    // SAFETY: forwarded from our caller's contract.
    let Some(dest) = (unsafe { sa::read(addr, len) }) else { return real_connect(fd, addr, len) };
    let target = match decide(dest) {
        Route::Direct(why) => {
            log!(Debug, "connect fd={fd} {dest} -> direct ({why:?})");
            return real_connect(fd, addr, len);
        }
        Route::Refuse(e, why) => {
            log!(Error, "connect fd={fd} {dest}: refused: {why}");
            return Ret::err(-1, e);
        }
        Route::Proxy(t) => t,
    };
    let Some(_guard) = Guard::enter() else {
        log!(Error, "connect fd={fd} {dest} from inside tsproxy: refused (never dialled directly)");
        return Ret::err(-1, libc::ECONNREFUSED);
    };
    // SAFETY: forwarded from our caller's contract.
    match unsafe { tunnel_fd(fd, addr, len, &target, false, known) } {
        Ok(Outcome::Tunnelled) => Ret::ok(0),
        Ok(Outcome::Pending(r)) => r,
        Ok(Outcome::Kernel) => real_connect(fd, addr, len),
        Err(e) => Ret::err(-1, e),
    }
}

/// Tunnel `fd` to `target`; on success remember the application's `addr` for getpeername.
/// A nonblocking socket gets EINPROGRESS and the handshake goes on in the background, unless
/// `inline` (TCP Fast Open's sendto, which must carry its data).
///
/// # Safety
/// `addr` points to `len` readable bytes.
/// `known` is what net::fds knew about `fd` before this connect.
pub unsafe fn tunnel_fd(fd: c_int, addr: *const sockaddr, len: socklen_t, target: &Target, inline: bool, known: u8) -> Result<Outcome, i32> {
    // A socket fresh from socket(2) (see net::fds) needs neither question to the kernel.
    let ty = if known & super::fds::FRESH_STREAM != 0 {
        libc::SOCK_STREAM
    } else if known & super::fds::FRESH_OTHER != 0 {
        libc::SOCK_DGRAM
    } else {
        sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE).map_err(|e| sys::code(&e))?
    };
    if ty != libc::SOCK_STREAM {
        log!(Info, "fd={fd} {target}: only TCP is proxied; refusing a datagram socket to a tailnet destination");
        return Err(libc::ENETUNREACH);
    }
    if known & super::fds::FRESH_STREAM == 0 && sys::is_connected(fd) {
        // Connected already (a tunnel that is up, or anything else). Checked here because the
        // kernel answers a repeated connect() after a nonblocking connect completed with 0,
        // not EISCONN, which would start a second handshake inside a live tunnel.
        return Err(libc::EISCONN);
    }
    // The address family the application used is the socket's (otherwise the kernel rejects
    // the address, which we let it do: see the EAFNOSUPPORT/EINVAL case below).
    // SAFETY: at least a sa_family_t is readable (sockaddr::read accepted it).
    let family = unsafe { std::ptr::read_unaligned(std::ptr::addr_of!((*addr).sa_family)) } as c_int;
    let st = state::get();
    let Some(cfg) = &st.cfg else {
        log!(Error, "connect fd={fd} {target}: refused, the configuration is invalid");
        return Err(libc::ECONNREFUSED);
    };
    let fl = sys::fcntl_getfl(fd).map_err(|e| sys::code(&e))?;
    let blocking = fl & libc::O_NONBLOCK == 0;
    if !blocking && !inline {
        // SAFETY: forwarded from our caller's contract.
        return Ok(Outcome::Pending(unsafe { super::pending::start(fd, family, target.clone(), addr, len, known) }));
    }
    let limit = if blocking { sys::sock_timeout(fd, libc::SO_SNDTIMEO).unwrap_or(cfg.timeout) } else { cfg.timeout };
    let t0 = Instant::now();
    let opts = Opts {
        deadline: t0 + limit,
        read_cap: if blocking { sys::sock_timeout(fd, libc::SO_RCVTIMEO) } else { None },
        pipeline: cfg.pipeline,
    };
    let r = tunnel::establish(fd, family, st.upstreams(), target, &opts, &mut |lvl, args| crate::log::write(lvl, args));
    if matches!(r, Err(Errno(libc::EAFNOSUPPORT | libc::EINVAL))) && family_mismatch(fd, family) {
        // The address does not fit the socket (an AF_INET address on an AF_INET6 socket...):
        // the kernel rejects it without sending anything.
        return Ok(Outcome::Kernel);
    }
    let us = t0.elapsed().as_micros();
    match r {
        Ok(via) => {
            // SAFETY: forwarded from our caller's contract.
            unsafe { super::tunnels::record(fd, addr, len) };
            log!(Debug, "connect fd={fd} {target} -> proxy {via} -> ok {us}us");
            Ok(Outcome::Tunnelled)
        }
        Err(e) => {
            log!(Info, "connect fd={fd} {target} -> {e} {us}us");
            Err(e.raw())
        }
    }
}

/// Is the socket of another family than the address the application gave? (Asked only after
/// the proxy connect failed with EAFNOSUPPORT/EINVAL, so the common path saves the syscall.)
pub fn family_mismatch(fd: c_int, family: c_int) -> bool {
    sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).is_ok_and(|d| d != family)
}

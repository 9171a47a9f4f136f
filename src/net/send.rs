//! sendto()/sendmsg() with a destination address: TCP Fast Open to a tailnet destination is a
//! tunnelled connect followed by a plain send; a datagram to a tailnet destination is refused
//! (UDP is not proxied, and a direct packet would leak).
use super::connect::{tunnel_fd, Outcome};
use super::{decide, Route};
use crate::ffi::Ret;
use crate::guard::Guard;
use crate::log::log;
use libc::{c_int, c_void, msghdr, sockaddr, socklen_t, ssize_t};
use tsproxy_core::{sockaddr as sa, sys};


fn real_sendto(fd: c_int, buf: *const c_void, n: usize, flags: c_int, addr: *const sockaddr, alen: socklen_t) -> ssize_t {
    if !addr.is_null() && crate::state::get().supervisor_dns.is_some() {
        // Marked for the supervisor's filter, as in connect.
        return match sys::sendto_marked(fd, buf, n, flags, addr, alen) {
            Ok(k) => k as ssize_t,
            Err(e) => {
                sys::set_errno(sys::code(&e));
                -1
            }
        };
    }
    let f = real!(sendto: fn(c_int, *const c_void, usize, c_int, *const sockaddr, socklen_t) -> ssize_t);
    // SAFETY: the application's own arguments, passed on.
    unsafe { f(fd, buf, n, flags, addr, alen) }
}

fn real_sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    let f = real!(sendmsg: fn(c_int, *const msghdr, c_int) -> ssize_t);
    // SAFETY: the application's own arguments, passed on.
    unsafe { f(fd, msg, flags) }
}

/// What to do with a send that names a destination.
enum Plan {
    Libc,
    /// Connected through the proxy: send without the address and without MSG_FASTOPEN.
    SendConnected,
    Fail(i32),
}

/// # Safety
/// `addr` is null or points to `alen` readable bytes.
unsafe fn plan(fd: c_int, flags: c_int, addr: *const sockaddr, alen: socklen_t) -> Plan {
    // SAFETY: forwarded contract.
    let Some(dest) = (unsafe { sa::read(addr, alen) }) else { return Plan::Libc };
    let target = match decide(dest) {
        Route::Direct(_) => return Plan::Libc,
        Route::Refuse(e, why) => {
            log!(Error, "send fd={fd} {dest}: refused: {why}");
            return Plan::Fail(e);
        }
        Route::Proxy(t) => t,
    };
    let ty = match sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) {
        Ok(t) => t,
        Err(e) => return Plan::Fail(sys::code(&e)),
    };
    if ty != libc::SOCK_STREAM {
        log!(Error, "send fd={fd} {target}: datagrams to tailnet destinations are not proxied; refused");
        return Plan::Fail(libc::ENETUNREACH);
    }
    if flags & libc::MSG_FASTOPEN == 0 {
        // A stream socket ignores the address (connected) or fails with ENOTCONN/EPIPE
        // without sending anything: the kernel's answer is the right one.
        return Plan::Libc;
    }
    let Some(_g) = Guard::enter() else { return Plan::Fail(libc::ECONNREFUSED) };
    let known = super::fds::get(fd);
    super::fds::connecting(fd);
    // SAFETY: forwarded contract.
    match unsafe { tunnel_fd(fd, addr, alen, &target, true, known) } {
        Ok(Outcome::Tunnelled) => Plan::SendConnected,
        Ok(Outcome::Kernel) => Plan::Libc,
        Ok(Outcome::Pending(_)) => unreachable!("inline handshakes never pend"),
        Err(e) => Plan::Fail(e),
    }
}

/// # Safety
/// sendto(2)'s contract.
pub unsafe fn sendto(fd: c_int, buf: *const c_void, n: usize, flags: c_int, addr: *const sockaddr, alen: socklen_t) -> Ret<ssize_t> {
    if addr.is_null() {
        if let Some(e) = super::pending::gate(fd, libc::EAGAIN) {
            return Ret::err(-1, e);
        }
        return Ret::passed(real_sendto(fd, buf, n, flags, addr, alen));
    }
    // SAFETY: forwarded contract.
    match unsafe { plan(fd, flags, addr, alen) } {
        Plan::Libc => Ret::passed(real_sendto(fd, buf, n, flags, addr, alen)),
        Plan::SendConnected => Ret::passed(real_sendto(fd, buf, n, flags & !libc::MSG_FASTOPEN, std::ptr::null(), 0)),
        Plan::Fail(e) => Ret::err(-1, e),
    }
}

/// # Safety
/// sendmsg(2)'s contract.
pub unsafe fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> Ret<ssize_t> {
    // SAFETY: msg is the caller's valid msghdr (or null, which libc rejects with EFAULT).
    let Some(m) = (unsafe { msg.as_ref() }) else { return Ret::passed(real_sendmsg(fd, msg, flags)) };
    if m.msg_name.is_null() {
        if let Some(e) = super::pending::gate(fd, libc::EAGAIN) {
            return Ret::err(-1, e);
        }
        return Ret::passed(real_sendmsg(fd, msg, flags));
    }
    // SAFETY: msg_name points to msg_namelen bytes (sendmsg's contract).
    match unsafe { plan(fd, flags, m.msg_name.cast(), m.msg_namelen) } {
        Plan::Libc => Ret::passed(real_sendmsg(fd, msg, flags)),
        Plan::SendConnected => {
            let mut copy = *m;
            copy.msg_name = std::ptr::null_mut();
            copy.msg_namelen = 0;
            Ret::passed(real_sendmsg(fd, &copy, flags & !libc::MSG_FASTOPEN))
        }
        Plan::Fail(e) => Ret::err(-1, e),
    }
}


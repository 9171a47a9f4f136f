//! connect, getpeername, getsockopt(SO_ERROR), the sends that carry an address, and listen
//! (a process listening on a proxy endpoint is the proxy: see net::selfproxy).
use crate::boundary::{passed, Detour};
use crate::net::{connect as c, io, pending, selfproxy, send};
use libc::{c_int, c_uint, c_void, mmsghdr, msghdr, sockaddr, socklen_t, ssize_t};

hook! {
    fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    fast: false;
    fail: -1, on_panic: ECONNREFUSED;
    nested: c::connect_nested(fd, addr, len);
    |real, ctx| c::connect(fd, addr, len, ctx)
}

// glibc's exported alias: a program that calls it by that name gets the same connect.
// (glibc's own calls of it, from rcmd and rexec, are internal: see `rcmd`.)
hook! {
    fn __connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    fast: false;
    fail: -1, on_panic: ECONNREFUSED;
    nested: c::connect_nested(fd, addr, len);
    |real, ctx| c::connect(fd, addr, len, ctx)
}

hook! {
    fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    fast: !pending::active() && !crate::net::tunnels::any() && !crate::net::udp::active();
    fail: -1, on_panic: EBADF;
    |real, ctx| c::getpeername(fd, addr, len, ctx)
}

hook! {
    fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    fast: !crate::net::udp::active();
    fail: -1, on_panic: EBADF;
    |real, ctx| c::getsockname(fd, addr, len)
}

hook! {
    fn getsockopt(fd: c_int, level: c_int, opt: c_int, val: *mut c_void, len: *mut socklen_t) -> c_int;
    fast: !pending::active() || level != libc::SOL_SOCKET || opt != libc::SO_ERROR;
    fail: -1, on_panic: EBADF;
    |real, ctx| io::so_error(fd, val, len)
}

hook! {
    fn sendto(fd: c_int, buf: *const c_void, n: usize, flags: c_int, addr: *const sockaddr, alen: socklen_t) -> ssize_t;
    fast: addr.is_null() && !pending::active() && !crate::dns::wire::active();
    fail: -1, on_panic: ECONNREFUSED;
    nested: send::sendto_nested(fd, addr, alen, tsproxy_core::sys::DatagramAt::Buf(buf as u64, n as u64));
    |real, ctx| send::sendto(fd, buf, n, flags, addr, alen, ctx)
}

hook! {
    fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t;
    fast: false;
    fail: -1, on_panic: ECONNREFUSED;
    nested: send::sendmsg_nested(fd, msg);
    |real, ctx| send::sendmsg(fd, msg, flags, ctx)
}

hook! {
    fn sendmmsg(fd: c_int, msgs: *mut mmsghdr, vlen: c_uint, flags: c_int) -> c_int;
    fast: false;
    fail: -1, on_panic: ECONNREFUSED;
    nested: send::sendmmsg_nested(fd, msgs, vlen);
    |real, ctx| send::sendmmsg(fd, msgs, vlen, flags, ctx)
}

hook! {
    fn listen(fd: c_int, backlog: c_int) -> c_int;
    fast: false;
    fail: -1, on_panic: EBADF;
    |real, ctx| {
        let r = real(fd, backlog);
        if r != 0 {
            return passed(r);
        }
        selfproxy::on_listen(fd);
        Detour::Done(0)
    }
}

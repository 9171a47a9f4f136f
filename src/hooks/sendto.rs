use crate::ffi::{shield, Ret};
use libc::{c_int, c_void, msghdr, sockaddr, socklen_t, ssize_t};

#[no_mangle]
pub unsafe extern "C" fn sendto(fd: c_int, buf: *const c_void, n: usize, flags: c_int, addr: *const sockaddr, alen: socklen_t) -> ssize_t {
    // SAFETY: sendto(2)'s contract is our caller's.
    shield(Ret::err(-1, libc::ECONNREFUSED), || unsafe { crate::net::send::sendto(fd, buf, n, flags, addr, alen) })
}

#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    // SAFETY: sendmsg(2)'s contract is our caller's.
    shield(Ret::err(-1, libc::ECONNREFUSED), || unsafe { crate::net::send::sendmsg(fd, msg, flags) })
}

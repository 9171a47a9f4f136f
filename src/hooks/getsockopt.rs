use crate::ffi::{shield, Ret};
use libc::{c_int, c_void, socklen_t};

#[no_mangle]
pub unsafe extern "C" fn getsockopt(fd: c_int, level: c_int, opt: c_int, val: *mut c_void, len: *mut socklen_t) -> c_int {
    let real = real!(getsockopt: fn(c_int, c_int, c_int, *mut c_void, *mut socklen_t) -> c_int);
    if !crate::net::pending::active() || level != libc::SOL_SOCKET || opt != libc::SO_ERROR {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { real(fd, level, opt, val, len) };
    }
    // SAFETY: getsockopt(2)'s contract is our caller's.
    shield(Ret::err(-1, libc::EBADF), || unsafe { crate::net::io::so_error(fd, val, len, real) })
}

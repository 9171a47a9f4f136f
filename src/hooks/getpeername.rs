use crate::ffi::{shield, Ret};
use libc::{c_int, sockaddr, socklen_t};

#[no_mangle]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: getpeername(2)'s contract is our caller's.
    shield(Ret::err(-1, libc::EBADF), || unsafe { crate::net::tunnels::getpeername(fd, addr, len) })
}

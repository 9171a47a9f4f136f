use crate::ffi::{shield, Ret};
use libc::{c_int, sockaddr, socklen_t};

#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    // SAFETY: connect(2)'s contract is our caller's.
    shield(Ret::err(-1, libc::ECONNREFUSED), || unsafe { crate::net::connect::connect(fd, addr, len) })
}

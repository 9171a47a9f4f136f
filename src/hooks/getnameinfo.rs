use crate::ffi::{shield, Ret};
use libc::{c_char, c_int, sockaddr, socklen_t};

#[no_mangle]
pub unsafe extern "C" fn getnameinfo(sa: *const sockaddr, salen: socklen_t, host: *mut c_char, hostlen: socklen_t, serv: *mut c_char, servlen: socklen_t, flags: c_int) -> c_int {
    // SAFETY: getnameinfo(3)'s contract is our caller's.
    shield(Ret::ok(libc::EAI_FAIL), || unsafe { crate::dns::nameinfo::getnameinfo(sa, salen, host, hostlen, serv, servlen, flags) })
}

use crate::ffi::{shield, Ret};
use libc::{addrinfo, c_char, c_int};

#[no_mangle]
pub unsafe extern "C" fn getaddrinfo(node: *const c_char, service: *const c_char, hints: *const addrinfo, res: *mut *mut addrinfo) -> c_int {
    // SAFETY: getaddrinfo(3)'s contract is our caller's.
    shield(Ret::ok(libc::EAI_FAIL), || unsafe { crate::dns::addrinfo::getaddrinfo(node, service, hints, res) })
}

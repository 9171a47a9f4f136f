use crate::dns::hostent as h;
use crate::ffi::{shield, Ret};
use libc::{c_char, c_int, c_void, hostent, socklen_t};
use std::ptr::null_mut;

#[no_mangle]
pub unsafe extern "C" fn gethostbyname(name: *const c_char) -> *mut hostent {
    // SAFETY: gethostbyname(3)'s contract is our caller's.
    shield(Ret::ok(null_mut()), || unsafe { h::gethostbyname(name) })
}

#[no_mangle]
pub unsafe extern "C" fn gethostbyname2(name: *const c_char, af: c_int) -> *mut hostent {
    // SAFETY: gethostbyname2(3)'s contract is our caller's.
    shield(Ret::ok(null_mut()), || unsafe { h::gethostbyname2(name, af) })
}

#[no_mangle]
pub unsafe extern "C" fn gethostbyname_r(name: *const c_char, ret: *mut hostent, buf: *mut c_char, buflen: usize, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int {
    // SAFETY: gethostbyname_r(3)'s contract is our caller's.
    shield(Ret::ok(libc::EINVAL), || unsafe { h::gethostbyname_r(name, ret, buf, buflen, result, h_errnop) })
}

#[no_mangle]
pub unsafe extern "C" fn gethostbyname2_r(name: *const c_char, af: c_int, ret: *mut hostent, buf: *mut c_char, buflen: usize, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int {
    // SAFETY: gethostbyname2_r(3)'s contract is our caller's.
    shield(Ret::ok(libc::EINVAL), || unsafe { h::gethostbyname2_r(name, af, ret, buf, buflen, result, h_errnop) })
}

#[no_mangle]
pub unsafe extern "C" fn gethostbyaddr(addr: *const c_void, len: socklen_t, ty: c_int) -> *mut hostent {
    // SAFETY: gethostbyaddr(3)'s contract is our caller's.
    shield(Ret::ok(null_mut()), || unsafe { h::gethostbyaddr(addr, len, ty) })
}

#[no_mangle]
pub unsafe extern "C" fn gethostbyaddr_r(addr: *const c_void, len: socklen_t, ty: c_int, ret: *mut hostent, buf: *mut c_char, buflen: usize, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int {
    // SAFETY: gethostbyaddr_r(3)'s contract is our caller's.
    shield(Ret::ok(libc::EINVAL), || unsafe { h::gethostbyaddr_r(addr, len, ty, ret, buf, buflen, result, h_errnop) })
}

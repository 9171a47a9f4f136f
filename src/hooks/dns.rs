//! Name lookups: tailnet names get placeholders, every other name goes to libc untouched.
use crate::dns::{addrinfo as ai, hostent as h, nameinfo};
use libc::{addrinfo, c_char, c_int, c_void, hostent, sockaddr, socklen_t};
use std::ptr::null_mut;

hook! {
    fn getaddrinfo(node: *const c_char, service: *const c_char, hints: *const addrinfo, res: *mut *mut addrinfo) -> c_int;
    fast: node.is_null();
    fail: libc::EAI_FAIL, on_panic: EIO;
    |real, ctx| ai::getaddrinfo(node, service, hints, res)
}

hook! {
    fn getnameinfo(sa: *const sockaddr, salen: socklen_t, host: *mut c_char, hostlen: socklen_t, serv: *mut c_char, servlen: socklen_t, flags: c_int) -> c_int;
    fast: false;
    fail: libc::EAI_FAIL, on_panic: EIO;
    |real, ctx| nameinfo::getnameinfo(sa, salen, host, hostlen, serv, servlen, flags)
}

hook! {
    fn gethostbyname(name: *const c_char) -> *mut hostent;
    fast: name.is_null();
    fail: null_mut(), on_panic: EIO;
    |real, ctx| h::gethostbyname(name)
}

hook! {
    fn gethostbyname2(name: *const c_char, af: c_int) -> *mut hostent;
    fast: name.is_null();
    fail: null_mut(), on_panic: EIO;
    |real, ctx| h::gethostbyname2(name, af)
}

hook! {
    fn gethostbyname_r(name: *const c_char, ret: *mut hostent, buf: *mut c_char, buflen: usize, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int;
    fast: name.is_null();
    fail: libc::EINVAL, on_panic: EINVAL;
    |real, ctx| h::gethostbyname_r(name, ret, buf, buflen, result, h_errnop)
}

hook! {
    fn gethostbyname2_r(name: *const c_char, af: c_int, ret: *mut hostent, buf: *mut c_char, buflen: usize, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int;
    fast: name.is_null();
    fail: libc::EINVAL, on_panic: EINVAL;
    |real, ctx| h::gethostbyname2_r(name, af, ret, buf, buflen, result, h_errnop)
}

hook! {
    fn gethostbyaddr(addr: *const c_void, len: socklen_t, ty: c_int) -> *mut hostent;
    fast: addr.is_null();
    fail: null_mut(), on_panic: EIO;
    |real, ctx| h::gethostbyaddr(addr, len, ty)
}

hook! {
    fn gethostbyaddr_r(addr: *const c_void, len: socklen_t, ty: c_int, ret: *mut hostent, buf: *mut c_char, buflen: usize, result: *mut *mut hostent, h_errnop: *mut c_int) -> c_int;
    fast: addr.is_null();
    fail: libc::EINVAL, on_panic: EINVAL;
    |real, ctx| h::gethostbyaddr_r(addr, len, ty, ret, buf, buflen, result, h_errnop)
}

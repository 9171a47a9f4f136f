//! The resolver APIs beside getaddrinfo: libresolv's query functions and getaddrinfo_a. glibc
//! runs them without its exported getaddrinfo, so each is hooked here (see dns::resolv and
//! dns::gai_a). Since glibc 2.34 they live in libc as `res_query@@GLIBC_2.34`...; programs linked
//! before bind the `__res_*@GLIBC_2.2.5` names (resolv.h defined `res_query` to them), and
//! `getaddrinfo_a@GLIBC_2.2.5` (libanl): our unversioned exports answer both.
use crate::dns::gai_a::{self, Gaicb};
use crate::dns::resolv::{self as r, Statp};
use libc::{c_char, c_int, c_uchar, c_void, sigevent};

type NQuery = unsafe extern "C-unwind" fn(*mut c_void, *const c_char, c_int, c_int, *mut c_uchar, c_int) -> c_int;

fn real_nquery() -> NQuery {
    real!(res_nquery | __res_nquery: fn(*mut c_void, *const c_char, c_int, c_int, *mut c_uchar, c_int) -> c_int)
}

/// One `res_*` query function and its pre-2.34 `__res_*` name.
macro_rules! res_hooks {
    ($( [$name:ident, $old:ident] ($($a:ident : $t:ty),*) => $logic:expr; )*) => {$(
        hook! {
            fn $name($($a: $t),*) -> c_int;
            fast: false;
            fail: -1, on_panic: EIO;
            |real, ctx| $logic
        }
        hook! {
            fn $old($($a: $t),*) -> c_int;
            real: $name;
            fast: false;
            fail: -1, on_panic: EIO;
            |real, ctx| $logic
        }
    )*};
}

res_hooks! {
    [res_query, __res_query] (name: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int)
        => r::query(Statp::thread(), name, class, ty, answer, anslen);
    [res_search, __res_search] (name: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int)
        => r::search(Statp::thread(), true, name, class, ty, answer, anslen, real_nquery());
    [res_querydomain, __res_querydomain] (name: *const c_char, domain: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int)
        => r::querydomain(Statp::thread(), name, domain, class, ty, answer, anslen);
    [res_send, __res_send] (query: *const c_uchar, len: c_int, answer: *mut c_uchar, anslen: c_int)
        => r::send(query, len, answer, anslen);
}

// The res_n* forms: the caller's resolver state (NULL is glibc's to crash on, not ours).
res_hooks! {
    [res_nquery, __res_nquery] (statp: *mut c_void, name: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int)
        => if statp.is_null() { crate::boundary::Detour::Bypass(crate::boundary::Bypass::NotApplicable) } else { r::query(Statp::of(statp), name, class, ty, answer, anslen) };
    [res_nsearch, __res_nsearch] (statp: *mut c_void, name: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int)
        => if statp.is_null() { crate::boundary::Detour::Bypass(crate::boundary::Bypass::NotApplicable) } else { r::search(Statp::of(statp), false, name, class, ty, answer, anslen, real_nquery()) };
    [res_nquerydomain, __res_nquerydomain] (statp: *mut c_void, name: *const c_char, domain: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int)
        => if statp.is_null() { crate::boundary::Detour::Bypass(crate::boundary::Bypass::NotApplicable) } else { r::querydomain(Statp::of(statp), name, domain, class, ty, answer, anslen) };
    [res_nsend, __res_nsend] (statp: *mut c_void, query: *const c_uchar, len: c_int, answer: *mut c_uchar, anslen: c_int)
        => r::send(query, len, answer, anslen);
}

hook! {
    fn getaddrinfo_a(mode: c_int, list: *mut *mut Gaicb, ent: c_int, sig: *mut sigevent) -> c_int;
    fast: list.is_null();
    fail: libc::EAI_SYSTEM, on_panic: EIO;
    |real, ctx| gai_a::getaddrinfo_a(mode, list, ent, sig, real)
}

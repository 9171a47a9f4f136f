//! rcmd(3), rexec(3), ruserok(3) and their `_af` forms. glibc resolves the host with its
//! internal getaddrinfo and dials it with its internal connect, neither of which a preloaded
//! library sees: a tailnet host named there would reach the system resolver and be dialled
//! directly. Refused (ENETUNREACH, one log line) before glibc looks at it; any other host goes
//! to glibc untouched. (These are the BSD r-commands' client calls: rsh, rlogin, rexec.)
use crate::boundary::{Bypass, Detour};
use libc::{c_char, c_int, c_ushort, sa_family_t};
use std::ffi::CStr;
use tsproxy_core::config::IpClass;
use tsproxy_core::Errno;

/// A tailnet name, or an address literal of a tailnet range or a placeholder: refused.
///
/// # Safety
/// `host` is null or a NUL-terminated string.
unsafe fn judge(host: *const c_char, what: &str) -> Detour<c_int> {
    if host.is_null() {
        return Detour::Bypass(Bypass::NotApplicable);
    }
    // SAFETY: NUL-terminated (contract).
    let Ok(h) = (unsafe { CStr::from_ptr(host) }).to_str() else { return Detour::Bypass(Bypass::NotTailnet) };
    let st = crate::state::get();
    let tailnet = match h.parse::<std::net::IpAddr>().ok().or_else(|| tsproxy_core::names::inet_aton(h).map(Into::into)) {
        Some(ip) => matches!(st.routes().classify_ip(ip), IpClass::Tailnet | IpClass::Placeholder),
        None => st.routes().is_tailnet_name(h, |n| st.known_locally(n)),
    };
    if !tailnet {
        return Detour::Bypass(Bypass::NotTailnet);
    }
    crate::log::log!(Error, "{what} to tailnet host {h:?}: glibc would resolve and dial it past tsproxy; refused");
    Detour::Fail(Errno(libc::ENETUNREACH))
}

/// The host an `ahost` argument names.
///
/// # Safety
/// `ahost` is null or points to a NUL-terminated string pointer.
unsafe fn host_of(ahost: *mut *mut c_char) -> *const c_char {
    if ahost.is_null() {
        return std::ptr::null();
    }
    // SAFETY: a non-null `ahost` points to a string pointer (contract).
    unsafe { *ahost }
}

hook! {
    fn rcmd(ahost: *mut *mut c_char, port: c_ushort, locuser: *const c_char, remuser: *const c_char, cmd: *const c_char, fd2p: *mut c_int) -> c_int;
    fast: false;
    fail: -1, on_panic: ENETUNREACH;
    |real, ctx| judge(host_of(ahost), "rcmd")
}

hook! {
    fn rcmd_af(ahost: *mut *mut c_char, port: c_ushort, locuser: *const c_char, remuser: *const c_char, cmd: *const c_char, fd2p: *mut c_int, af: sa_family_t) -> c_int;
    fast: false;
    fail: -1, on_panic: ENETUNREACH;
    |real, ctx| judge(host_of(ahost), "rcmd")
}

hook! {
    fn rexec(ahost: *mut *mut c_char, port: c_int, user: *const c_char, pass: *const c_char, cmd: *const c_char, fd2p: *mut c_int) -> c_int;
    fast: false;
    fail: -1, on_panic: ENETUNREACH;
    |real, ctx| judge(host_of(ahost), "rexec")
}

hook! {
    fn rexec_af(ahost: *mut *mut c_char, port: c_int, user: *const c_char, pass: *const c_char, cmd: *const c_char, fd2p: *mut c_int, af: sa_family_t) -> c_int;
    fast: false;
    fail: -1, on_panic: ENETUNREACH;
    |real, ctx| judge(host_of(ahost), "rexec")
}

hook! {
    fn ruserok(rhost: *const c_char, superuser: c_int, ruser: *const c_char, luser: *const c_char) -> c_int;
    fast: false;
    fail: -1, on_panic: ENETUNREACH;
    |real, ctx| judge(rhost, "ruserok")
}

hook! {
    fn ruserok_af(rhost: *const c_char, superuser: c_int, ruser: *const c_char, luser: *const c_char, af: sa_family_t) -> c_int;
    fast: false;
    fail: -1, on_panic: ENETUNREACH;
    |real, ctx| judge(rhost, "ruserok")
}

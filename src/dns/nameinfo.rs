//! getnameinfo() of a placeholder gives back its tailnet name (unless NI_NUMERICHOST). The
//! service part is still glibc's.
use crate::boundary::{passed, Bypass, Detour};
use libc::{c_char, c_int, sockaddr, socklen_t};
#[allow(unused_imports)]
use tsproxy_core::Errno;

fn real(sa: *const sockaddr, salen: socklen_t, host: *mut c_char, hostlen: socklen_t, serv: *mut c_char, servlen: socklen_t, flags: c_int) -> c_int {
    let f = real!(getnameinfo: fn(*const sockaddr, socklen_t, *mut c_char, socklen_t, *mut c_char, socklen_t, c_int) -> c_int);
    // SAFETY: getnameinfo's arguments, from the caller.
    unsafe { f(sa, salen, host, hostlen, serv, servlen, flags) }
}

/// # Safety
/// getnameinfo(3)'s contract.
pub unsafe fn getnameinfo(
    sa: *const sockaddr,
    salen: socklen_t,
    host: *mut c_char,
    hostlen: socklen_t,
    serv: *mut c_char,
    servlen: socklen_t,
    flags: c_int,
) -> Detour<c_int> {
    let pass = || Detour::Bypass(Bypass::NotTailnet);
    if host.is_null() || hostlen == 0 || flags & libc::NI_NUMERICHOST != 0 {
        return pass();
    }
    // SAFETY: sa holds salen bytes (contract).
    let Some(a) = (unsafe { tsproxy_core::sockaddr::read(sa, salen) }) else { return pass() };
    let Some(name) = super::name_of(a.ip()) else {
        if !super::reverse_withheld(a.ip()) {
            return pass();
        }
        // A tailnet address (or a placeholder we cannot name): its reverse lookup must not
        // reach the system resolver. As a lookup that finds no name: EAI_NONAME with
        // NI_NAMEREQD, else the numeric form.
        if flags & libc::NI_NAMEREQD != 0 {
            return Detour::Done(libc::EAI_NONAME);
        }
        return passed(real(sa, salen, host, hostlen, serv, servlen, flags | libc::NI_NUMERICHOST));
    };
    let name = if flags & libc::NI_NOFQDN != 0 { name.split('.').next().unwrap_or(name) } else { name };
    if name.len() + 1 > hostlen as usize {
        return Detour::Done(libc::EAI_OVERFLOW);
    }
    // SAFETY: host has hostlen >= name.len()+1 writable bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(name.as_ptr(), host.cast::<u8>(), name.len());
        *host.add(name.len()) = 0;
    }
    if !serv.is_null() && servlen > 0 {
        let rc = real(sa, salen, std::ptr::null_mut(), 0, serv, servlen, flags);
        if rc != 0 {
            return passed(rc);
        }
    }
    Detour::Done(0)
}

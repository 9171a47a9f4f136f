//! getaddrinfo_a() for tailnet names.
//!
//! glibc's worker threads call its internal getaddrinfo, which never reaches our hook, so a
//! tailnet name in a `getaddrinfo_a` list would go to the system resolver. The design, the
//! simplest that keeps every glibc semantic (facts from glibc 2.36, resolv/getaddrinfo_a.c,
//! gai_notify.c, gai_error.c, gai_suspend.c, gai_cancel.c):
//!
//! - Each request whose name is a tailnet name is answered **before the call returns**, by the
//!   same logic as our `getaddrinfo` (placeholders, glibc-built lists): `ar_result` is set (on
//!   success only, as glibc's getaddrinfo sets `*res`) and then `__return`, which is all
//!   `gai_error` reads. Such a request is then a finished request to glibc: it was never in its
//!   queue, so `gai_suspend` sees it done (`__return` is not `EAI_INPROGRESS`) and `gai_cancel`
//!   answers `EAI_ALLDONE` — what glibc answers for any finished request.
//! - The real `getaddrinfo_a` then gets the same list with our requests replaced by NULL
//!   (glibc skips NULL entries and keeps no pointer to the array itself), the same mode and the
//!   same `sigevent`. So the notification is glibc's own, exactly once, when its requests are
//!   done — ours are done already. When every request was ours, glibc sees none to enqueue and
//!   notifies at once for `GAI_NOWAIT` (its `total == 0` path), from the calling thread for
//!   `SIGEV_SIGNAL` (`SI_ASYNCNL`) or a new thread for `SIGEV_THREAD`, as always; `GAI_WAIT`
//!   returns 0 at once.
//! - A bad mode (or list) goes to glibc before anything is answered, so its error
//!   (`EAI_SYSTEM`/`EINVAL`) comes with every request untouched.
use super::addrinfo as ai;
use crate::boundary::{passed, Bypass, Detour};
use libc::{addrinfo, c_char, c_int, sigevent};

/// glibc's `struct gaicb` (netdb.h).
#[repr(C)]
pub struct Gaicb {
    pub ar_name: *const c_char,
    pub ar_service: *const c_char,
    pub ar_request: *const addrinfo,
    pub ar_result: *mut addrinfo,
    pub ret: c_int,
    pub reserved: [c_int; 5],
}

const GAI_WAIT: c_int = 0;
const GAI_NOWAIT: c_int = 1;

pub type RealGaiA = unsafe extern "C-unwind" fn(c_int, *mut *mut Gaicb, c_int, *mut sigevent) -> c_int;

/// # Safety
/// getaddrinfo_a(3)'s contract: `list` holds `ent` pointers, each null or a valid gaicb.
pub unsafe fn getaddrinfo_a(mode: c_int, list: *mut *mut Gaicb, ent: c_int, sig: *mut sigevent, real: RealGaiA) -> Detour<c_int> {
    if (mode != GAI_WAIT && mode != GAI_NOWAIT) || list.is_null() || ent <= 0 {
        return Detour::Bypass(Bypass::NotApplicable);
    }
    // SAFETY: contract: ent pointers.
    let entries = unsafe { std::slice::from_raw_parts(list, ent as usize) };
    let mut rest: Vec<*mut Gaicb> = Vec::with_capacity(entries.len());
    let mut answered = 0;
    for &g in entries {
        // SAFETY: contract: null or a valid gaicb the caller owns until it is done.
        let Some(req) = (unsafe { g.as_mut() }) else {
            rest.push(g);
            continue;
        };
        let mut out: *mut addrinfo = std::ptr::null_mut();
        // SAFETY: the request's own name, service and hints (getaddrinfo's contract).
        match unsafe { ai::getaddrinfo(req.ar_name, req.ar_service, req.ar_request, &mut out) } {
            Detour::Done(rc) | Detour::Return(rc, _) => {
                if rc == 0 {
                    req.ar_result = out;
                }
                req.ret = rc;
                answered += 1;
                rest.push(std::ptr::null_mut());
            }
            _ => rest.push(g),
        }
    }
    if answered == 0 {
        return Detour::Bypass(Bypass::NotTailnet);
    }
    crate::log::log!(Debug, "getaddrinfo_a: {answered} of {ent} requests are tailnet names, answered by tsproxy");
    // Not a cancellation point (glibc defers cancellation while GAI_WAIT waits), so calling it
    // here, with `rest` alive, is safe; glibc keeps no pointer to `rest`.
    // SAFETY: the caller's mode and sigevent; `rest` holds `ent` pointers, null or the caller's.
    passed(unsafe { real(mode, rest.as_mut_ptr(), ent, sig) })
}

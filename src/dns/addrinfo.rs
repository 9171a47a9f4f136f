//! getaddrinfo() for tailnet names.
//!
//! The answer is built by glibc itself: we call the real getaddrinfo with a NULL node and the
//! application's service and hints, which expands socket types and protocols, resolves service
//! names and reports EAI_SERVICE/EAI_SOCKTYPE/EAI_FAMILY exactly as for any name, then write our
//! placeholders over the loopback addresses it returned. The list is glibc's own allocation, so
//! libc's freeaddrinfo frees it (that is why freeaddrinfo needs no hook), and AI_ADDRCONFIG
//! decides the families as it would for any name. AF_UNSPEC gets both placeholders, IPv4 first.
use crate::boundary::{passed, Bypass, Detour};
use crate::log::log;
use libc::{addrinfo, c_char, c_int};
use std::ffi::CStr;
use tsproxy_core::names;
#[allow(unused_imports)]
use tsproxy_core::Errno;

fn real(node: *const c_char, service: *const c_char, hints: *const addrinfo, res: *mut *mut addrinfo) -> c_int {
    let f = real!(getaddrinfo: fn(*const c_char, *const c_char, *const addrinfo, *mut *mut addrinfo) -> c_int);
    // SAFETY: arguments as getaddrinfo(3) requires, from the caller or built here.
    unsafe { f(node, service, hints, res) }
}

/// The ASCII name glibc's AI_IDN would ask for `node`, by the same call glibc makes
/// (`idn2_lookup_ul` from libidn2, flags 0, in the program's locale), loaded on first use only
/// (nothing at load time; a program that never passes AI_IDN with a non-ASCII name never loads
/// it). None when libidn2 is not there or cannot map the name: glibc then fails the lookup
/// itself (EAI_IDN_ENCODE), with nothing asked.
fn idna_lookup(node: *const c_char) -> Option<String> {
    type Lookup = unsafe extern "C" fn(*const c_char, *mut *mut c_char, c_int) -> c_int;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // The function's address once found (1: libidn2 or the symbol is missing), so dlopen runs
    // once per process (a race only repeats it; dlopen of a loaded library is a reference).
    static F: AtomicUsize = AtomicUsize::new(0);
    let mut p = F.load(Ordering::Relaxed);
    if p == 0 {
        // SAFETY: dlopen and dlsym with NUL-terminated names; the handle is never closed, so
        // the address stays valid for the process's life.
        p = unsafe {
            let h = libc::dlopen(c"libidn2.so.0".as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
            if h.is_null() {
                1
            } else {
                (libc::dlsym(h, c"idn2_lookup_ul".as_ptr()) as usize).max(1)
            }
        };
        F.store(p, Ordering::Relaxed);
    }
    if p == 1 {
        return None;
    }
    // SAFETY: p is the address dlsym gave for idn2_lookup_ul, whose C prototype is `Lookup`.
    let f = unsafe { std::mem::transmute::<usize, Lookup>(p) };
    let mut out: *mut c_char = std::ptr::null_mut();
    // SAFETY: node is NUL-terminated (our caller's contract); out receives a malloc'd string.
    if unsafe { f(node, &mut out, 0) } != 0 || out.is_null() {
        return None;
    }
    // SAFETY: libidn2 returned a NUL-terminated string, which it allocated with malloc.
    let s = unsafe { CStr::from_ptr(out) }.to_str().ok().map(str::to_owned);
    // SAFETY: as above; freed once.
    unsafe { libc::free(out.cast()) };
    s
}

/// # Safety
/// getaddrinfo(3)'s contract.
pub unsafe fn getaddrinfo(node: *const c_char, service: *const c_char, hints: *const addrinfo, res: *mut *mut addrinfo) -> Detour<c_int> {
    let pass = || Detour::Bypass(Bypass::NotTailnet);
    if node.is_null() || res.is_null() {
        return pass();
    }
    // glibc's defaults for NULL hints.
    // SAFETY: all-zero addrinfo is valid.
    let mut h: addrinfo = unsafe { std::mem::zeroed() };
    h.ai_flags = libc::AI_V4MAPPED | libc::AI_ADDRCONFIG;
    // SAFETY: hints is null or a valid addrinfo (contract).
    if let Some(given) = unsafe { hints.as_ref() } {
        h.ai_flags = given.ai_flags;
        h.ai_family = given.ai_family;
        h.ai_socktype = given.ai_socktype;
        h.ai_protocol = given.ai_protocol;
    }
    if h.ai_flags & libc::AI_NUMERICHOST != 0 || ![libc::AF_UNSPEC, libc::AF_INET, libc::AF_INET6].contains(&h.ai_family) {
        return pass();
    }
    // SAFETY: node is a NUL-terminated string (contract).
    let Ok(name) = unsafe { CStr::from_ptr(node) }.to_str() else { return pass() };
    const AI_IDN: c_int = 0x0040;
    const AI_CANONIDN: c_int = 0x0080;
    // AI_IDN: glibc maps a non-ASCII name to its ASCII form (libidn2, UTS #46: fullwidth
    // letters, `。`) before it asks; judge that form (`idna_lookup`), else the name as sent.
    let mapped = if h.ai_flags & AI_IDN != 0 && !name.is_ascii() { idna_lookup(node) } else { None };
    let sent = match mapped {
        Some(a) => std::borrow::Cow::Owned(a),
        None => super::as_sent(name),
    };
    let name: &str = &sent;
    let slot = match super::tailnet_slot(name) {
        None => return pass(),
        Some(Err(())) => return Detour::Done(libc::EAI_AGAIN),
        Some(Ok(s)) => s,
    };

    // AF_UNSPEC gets both placeholders, IPv4 first (glibc's NULL-node answer has ::1 and
    // 127.0.0.1; AI_ADDRCONFIG drops a family the machine has no address of, as for any name).
    // Both lead to the same name at the proxy; `net::siblings` keeps a client that tries them
    // in turn from paying a failure twice, and happy eyeballs from opening two tunnels.
    let want_canon = h.ai_flags & libc::AI_CANONNAME != 0;
    h.ai_flags &= !(libc::AI_CANONNAME | libc::AI_PASSIVE | AI_IDN | AI_CANONIDN);
    let svc = if service.is_null() { c"0".as_ptr() } else { service };
    let mut out: *mut addrinfo = std::ptr::null_mut();
    let rc = real(std::ptr::null(), svc, &h, &mut out);
    if rc != 0 {
        return passed(rc);
    }
    let (v4, v6) = (names::v4(slot), names::v6(slot));
    let mut nodes = Vec::new();
    let mut p = out;
    while !p.is_null() {
        nodes.push(p);
        // SAFETY: p is a node of the list glibc just returned.
        p = unsafe { (*p).ai_next };
    }
    nodes.sort_by_key(|&n| {
        // SAFETY: n is a node of the list glibc just returned, not yet freed.
        (unsafe { (*n).ai_family } != libc::AF_INET) as u8
    });
    for (i, &n) in nodes.iter().enumerate() {
        // SAFETY: each node's ai_addr holds a sockaddr of its ai_family (glibc's allocation).
        unsafe {
            match (*n).ai_family {
                libc::AF_INET => (*(*n).ai_addr.cast::<libc::sockaddr_in>()).sin_addr.s_addr = u32::from(v4).to_be(),
                libc::AF_INET6 => {
                    let s = &mut *(*n).ai_addr.cast::<libc::sockaddr_in6>();
                    s.sin6_addr.s6_addr = v6.octets();
                    s.sin6_scope_id = 0;
                }
                _ => {}
            }
            (*n).ai_next = nodes.get(i + 1).copied().unwrap_or(std::ptr::null_mut());
        }
    }
    if want_canon {
        let canon = name.strip_suffix('.').unwrap_or(name);
        if let Ok(c) = std::ffi::CString::new(canon) {
            // SAFETY: nodes[0] exists (rc == 0 means a non-empty list); strdup'd memory is freed
            // by freeaddrinfo with free(), as glibc's own canonname is.
            unsafe { (*nodes[0]).ai_canonname = libc::strdup(c.as_ptr()) };
        }
    }
    // SAFETY: res is a valid out-pointer (checked non-null above).
    unsafe { *res = nodes[0] };
    log!(Debug, "getaddrinfo {name} -> tailnet name, placeholder {v4} / {v6}");
    Detour::Done(0)
}

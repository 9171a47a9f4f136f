//! gethostbyname*, gethostbyaddr for tailnet names and placeholders. The reentrant forms fill
//! the caller's buffer (ERANGE when it is too small); the others use a per-thread buffer
//! (glibc's is process-wide; per-thread is strictly safer).
use crate::boundary::{Bypass, Detour};
use libc::{c_char, c_int, c_void, hostent, socklen_t};
use std::cell::UnsafeCell;
use std::ffi::CStr;
#[allow(unused_imports)]
use tsproxy_core::Errno;

/// netdb.h: a temporary failure (h_errno).
const TRY_AGAIN: c_int = 2;
use tsproxy_core::names;

extern "C" {
    fn __h_errno_location() -> *mut c_int;
}

const NETDB_INTERNAL: c_int = -1;
const HOST_NOT_FOUND: c_int = 1;

fn set_h_errno(v: c_int) {
    // SAFETY: glibc returns this thread's h_errno.
    unsafe { *__h_errno_location() = v };
}

/// Lay out a one-address hostent for `name` in `buf`. Err(()) when `buf` is too small.
///
/// # Safety
/// `buf` points to `buflen` writable bytes.
unsafe fn fill(ret: &mut hostent, buf: *mut c_char, buflen: usize, name: &str, af: c_int, addr: &[u8]) -> Result<(), ()> {
    let ptr = std::mem::size_of::<*mut c_char>();
    let pad = buf.align_offset(ptr);
    let need = pad + 16 + 3 * ptr + name.len() + 1;
    if buf.is_null() || buflen < need {
        return Err(());
    }
    // SAFETY: all offsets below stay within `need` <= buflen bytes; the pointer array is
    // aligned by `pad`.
    unsafe {
        let base = buf.add(pad).cast::<u8>();
        let list = base.cast::<*mut c_char>();
        let addr_at = base.add(3 * ptr);
        let name_at = addr_at.add(16);
        std::ptr::copy_nonoverlapping(addr.as_ptr(), addr_at, addr.len());
        std::ptr::copy_nonoverlapping(name.as_ptr(), name_at, name.len());
        *name_at.add(name.len()) = 0;
        *list = addr_at.cast(); // h_addr_list[0]
        *list.add(1) = std::ptr::null_mut(); // h_addr_list[1]
        *list.add(2) = std::ptr::null_mut(); // h_aliases[0]
        ret.h_name = name_at.cast();
        ret.h_aliases = list.add(2);
        ret.h_addrtype = af;
        ret.h_length = addr.len() as c_int;
        ret.h_addr_list = list;
    }
    Ok(())
}

fn placeholder(slot: u32, af: c_int) -> Vec<u8> {
    if slot == u32::MAX {
        return Vec::new();
    }
    if af == libc::AF_INET6 {
        names::v6(slot).octets().to_vec()
    } else {
        names::v4(slot).octets().to_vec()
    }
}

/// The tailnet slot of a C name, for AF_INET/AF_INET6 lookups.
///
/// # Safety
/// `name` is null or NUL-terminated.
unsafe fn slot_for(name: *const c_char, af: c_int) -> Option<(u32, &'static str)> {
    if name.is_null() || (af != libc::AF_INET && af != libc::AF_INET6) {
        return None;
    }
    // SAFETY: contract.
    let n = unsafe { CStr::from_ptr(name) }.to_str().ok()?;
    match super::tailnet_slot(&super::as_sent(n))? {
        Ok(slot) => Some((slot, names::name(slot)?)),
        // A tailnet name without a placeholder: it must not reach libc's resolver either. The
        // empty name makes the fill fail ("try again"-like: no address) without asking libc.
        Err(()) => Some((u32::MAX, "")),
    }
}

/// # Safety
/// gethostbyname2_r's contract.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gethostbyname2_r(
    name: *const c_char,
    af: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: usize,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> Detour<c_int> {
    // SAFETY: contract.
    let Some((slot, n)) = (unsafe { slot_for(name, af) }) else {
        return Detour::Bypass(Bypass::NotTailnet);
    };
    // SAFETY: contract.
    unsafe { fill_r(ret, buf, buflen, result, h_errnop, n, af, &placeholder(slot, af)) }
}

/// The reentrant forms' answer: fill the caller's hostent and buffer, or ERANGE.
///
/// # Safety
/// ret, result and h_errnop are valid pointers; buf has buflen writable bytes.
#[allow(clippy::too_many_arguments)]
unsafe fn fill_r(
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: usize,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
    name: &str,
    af: c_int,
    addr: &[u8],
) -> Detour<c_int> {
    if name.is_empty() {
        // A tailnet name without a placeholder (see dns::tailnet_slot): "try again".
        // SAFETY: the caller's guarantee.
        unsafe {
            *result = std::ptr::null_mut();
            *h_errnop = TRY_AGAIN;
        }
        return Detour::Done(libc::EAGAIN);
    }
    // SAFETY: the caller's guarantee.
    unsafe {
        match fill(&mut *ret, buf, buflen, name, af, addr) {
            Ok(()) => {
                *result = ret;
                *h_errnop = 0;
                Detour::Done(0)
            }
            Err(()) => {
                *result = std::ptr::null_mut();
                *h_errnop = NETDB_INTERNAL;
                Detour::Return(libc::ERANGE, Errno(libc::ERANGE))
            }
        }
    }
}

/// # Safety
/// gethostbyname_r's contract.
pub unsafe fn gethostbyname_r(
    name: *const c_char,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: usize,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> Detour<c_int> {
    // SAFETY: contract.
    if unsafe { slot_for(name, libc::AF_INET) }.is_none() {
        return Detour::Bypass(Bypass::NotTailnet);
    }
    // SAFETY: contract.
    unsafe { gethostbyname2_r(name, libc::AF_INET, ret, buf, buflen, result, h_errnop) }
}

struct Static {
    he: hostent,
    buf: [c_char; 320],
}

thread_local! {
    static STATIC: UnsafeCell<Static> = const {
        UnsafeCell::new(Static {
            he: hostent { h_name: std::ptr::null_mut(), h_aliases: std::ptr::null_mut(), h_addrtype: 0, h_length: 0, h_addr_list: std::ptr::null_mut() },
            buf: [0; 320],
        })
    };
}

/// Fill this thread's static hostent.
fn fill_static(n: &str, af: c_int, addr: &[u8]) -> Detour<*mut hostent> {
    if n.is_empty() {
        set_h_errno(TRY_AGAIN);
        return Detour::Done(std::ptr::null_mut());
    }
    STATIC.with(|s| {
        let s = s.get();
        // SAFETY: this thread's buffer; the previous result it held is invalidated, as
        // gethostbyname(3) documents for its static storage.
        let r = unsafe { fill(&mut (*s).he, (*s).buf.as_mut_ptr(), (*s).buf.len(), n, af, addr) };
        match r {
            Ok(()) => {
                set_h_errno(0);
                // SAFETY: s points to this thread's own static storage (thread-local), alive for
                // the thread's lifetime; only a pointer to a field is formed.
                Detour::Done(unsafe { std::ptr::addr_of_mut!((*s).he) })
            }
            Err(()) => {
                set_h_errno(HOST_NOT_FOUND);
                Detour::Done(std::ptr::null_mut())
            }
        }
    })
}

/// # Safety
/// gethostbyname2's contract.
pub unsafe fn gethostbyname2(name: *const c_char, af: c_int) -> Detour<*mut hostent> {
    // SAFETY: contract.
    match unsafe { slot_for(name, af) } {
        Some((slot, n)) => fill_static(n, af, &placeholder(slot, af)),
        None => Detour::Bypass(Bypass::NotTailnet),
    }
}

/// # Safety
/// gethostbyname's contract.
pub unsafe fn gethostbyname(name: *const c_char) -> Detour<*mut hostent> {
    // SAFETY: contract.
    match unsafe { slot_for(name, libc::AF_INET) } {
        Some((slot, n)) => fill_static(n, libc::AF_INET, &placeholder(slot, libc::AF_INET)),
        None => Detour::Bypass(Bypass::NotTailnet),
    }
}

/// # Safety
/// gethostbyaddr's contract.
pub unsafe fn gethostbyaddr(addr: *const c_void, len: socklen_t, ty: c_int) -> Detour<*mut hostent> {
    // SAFETY: addr holds len bytes (contract).
    match unsafe { placeholder_name(addr, len, ty) } {
        Some(n) => {
            // SAFETY: len bytes readable (matched above).
            let bytes = unsafe { std::slice::from_raw_parts(addr.cast::<u8>(), len as usize) };
            fill_static(n, ty, bytes)
        }
        // SAFETY: as above.
        None if unsafe { withheld(addr, len, ty) } => {
            set_h_errno(HOST_NOT_FOUND);
            Detour::Done(std::ptr::null_mut())
        }
        None => Detour::Bypass(Bypass::NotTailnet),
    }
}

/// # Safety
/// gethostbyaddr_r's contract.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gethostbyaddr_r(
    addr: *const c_void,
    len: socklen_t,
    ty: c_int,
    ret: *mut hostent,
    buf: *mut c_char,
    buflen: usize,
    result: *mut *mut hostent,
    h_errnop: *mut c_int,
) -> Detour<c_int> {
    // SAFETY: addr holds len bytes (contract).
    match unsafe { placeholder_name(addr, len, ty) } {
        Some(n) => {
            // SAFETY: len bytes readable (placeholder_name checked); the rest is the contract.
            unsafe {
                let bytes = std::slice::from_raw_parts(addr.cast::<u8>(), len as usize);
                fill_r(ret, buf, buflen, result, h_errnop, n, ty, bytes)
            }
        }
        // Not found, as glibc reports it: 0, no result, HOST_NOT_FOUND.
        // SAFETY: as above; result and h_errnop are valid (contract).
        None if unsafe { withheld(addr, len, ty) } => unsafe {
            *result = std::ptr::null_mut();
            *h_errnop = HOST_NOT_FOUND;
            Detour::Done(0)
        },
        None => Detour::Bypass(Bypass::NotTailnet),
    }
}

/// An address whose reverse lookup must not reach the system resolver (`dns::reverse_withheld`):
/// answered "not found" here.
///
/// # Safety
/// `addr` is null or holds `len` readable bytes.
unsafe fn withheld(addr: *const c_void, len: socklen_t, ty: c_int) -> bool {
    // SAFETY: forwarded contract.
    unsafe { raw_ip(addr, len, ty) }.is_some_and(super::reverse_withheld)
}

/// The address in raw bytes of family `ty`.
///
/// # Safety
/// `addr` is null or holds `len` readable bytes.
unsafe fn raw_ip(addr: *const c_void, len: socklen_t, ty: c_int) -> Option<std::net::IpAddr> {
    Some(match (ty, len) {
        // SAFETY: len says 4 readable bytes.
        (libc::AF_INET, 4) if !addr.is_null() => std::net::IpAddr::from(unsafe { *addr.cast::<[u8; 4]>() }),
        // SAFETY: len says 16 readable bytes.
        (libc::AF_INET6, 16) if !addr.is_null() => std::net::IpAddr::from(unsafe { *addr.cast::<[u8; 16]>() }),
        _ => return None,
    })
}

/// The tailnet name of a placeholder given as raw address bytes.
///
/// # Safety
/// `addr` is null or holds `len` readable bytes.
unsafe fn placeholder_name(addr: *const c_void, len: socklen_t, ty: c_int) -> Option<&'static str> {
    // SAFETY: forwarded contract.
    super::name_of(unsafe { raw_ip(addr, len, ty) }?)
}

//! getsockopt(SO_ERROR) on a socket whose handshake we run.
use crate::boundary::{Bypass, Detour};

/// 0 while the handshake runs, the mapped errno once if it failed with something the socket
/// cannot say itself; otherwise the kernel's answer.
///
/// # Safety
/// getsockopt(2)'s contract.
pub unsafe fn so_error(fd: i32, val: *mut libc::c_void, len: *mut libc::socklen_t) -> Detour<i32> {
    if val.is_null() || len.is_null() {
        return Detour::Bypass(Bypass::NotApplicable);
    }
    // SAFETY: len is valid (contract).
    let cap = unsafe { *len } as usize;
    match super::pending::so_error(fd) {
        Some(e) if cap >= std::mem::size_of::<i32>() => {
            // SAFETY: checked above: room for an int.
            unsafe {
                std::ptr::write_unaligned(val.cast::<i32>(), e);
                *len = std::mem::size_of::<i32>() as libc::socklen_t;
            }
            Detour::Done(0)
        }
        _ => Detour::Bypass(Bypass::NotOurs),
    }
}

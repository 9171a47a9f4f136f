//! Calls on a socket whose nonblocking handshake is still running (see `pending`).
use crate::ffi::Ret;

/// Run the real call unless `fd` is a socket still handshaking: then EAGAIN, as the kernel
/// answers for a socket in SYN_SENT.
pub fn gated<T: From<i8>>(fd: i32, real: impl FnOnce() -> T) -> Ret<T> {
    match super::pending::gate(fd, libc::EAGAIN) {
        Some(e) => Ret::err(T::from(-1), e),
        None => Ret::passed(real()),
    }
}

type GetSockOpt = unsafe extern "C" fn(i32, i32, i32, *mut libc::c_void, *mut libc::socklen_t) -> i32;

/// getsockopt(SO_ERROR): 0 while the handshake runs, the mapped errno once if it failed with
/// something the socket cannot say itself; otherwise the kernel's answer.
///
/// # Safety
/// getsockopt(2)'s contract.
pub unsafe fn so_error(fd: i32, val: *mut libc::c_void, len: *mut libc::socklen_t, real: GetSockOpt) -> Ret<i32> {
    match super::pending::so_error(fd) {
        // SAFETY: val/len as the caller passed them, checked for size.
        Some(e) if !val.is_null() && !len.is_null() && unsafe { *len } as usize >= std::mem::size_of::<i32>() => {
            // SAFETY: checked above.
            unsafe {
                std::ptr::write_unaligned(val.cast::<i32>(), e);
                *len = std::mem::size_of::<i32>() as libc::socklen_t;
            }
            Ret::ok(0)
        }
        // SAFETY: the caller's arguments, passed on.
        _ => Ret::passed(unsafe { real(fd, libc::SOL_SOCKET, libc::SO_ERROR, val, len) }),
    }
}

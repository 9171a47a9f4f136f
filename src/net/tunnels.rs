//! Sockets we tunnelled, by fd, with the destination the application asked for (what
//! getpeername must answer). An entry is trusted only while the fd still refers to the same
//! socket (same inode), so close/dup2 need no hook. Fork-safe: the lock is taken around fork
//! by pthread_atfork handlers, so the child never inherits it locked.
use crate::spin::SpinLock;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Copy)]
pub struct Entry {
    ino: u64,
    pub addr: libc::sockaddr_storage,
    pub len: libc::socklen_t,
}

static ANY: AtomicBool = AtomicBool::new(false);
static TABLE: SpinLock<BTreeMap<i32, Entry>> = SpinLock::new(BTreeMap::new());
pub fn lock_for_fork() {
    TABLE.hold_for_fork();
}

pub fn unlock_after_fork() {
    TABLE.release_after_fork();
}

fn inode(fd: i32) -> Option<u64> {
    // SAFETY: all-zero is a valid stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: st is writable; fstat validates fd.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some(st.st_ino)
}

/// Remember that `fd` is tunnelled to the address the application passed.
///
/// # Safety
/// `addr` points to `len` readable bytes.
pub unsafe fn record(fd: i32, addr: *const libc::sockaddr, len: libc::socklen_t) {
    let Some(ino) = inode(fd) else { return };
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let n = (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: caller guarantees `len` readable bytes at addr; st has room for n.
    unsafe { std::ptr::copy_nonoverlapping(addr.cast::<u8>(), std::ptr::addr_of_mut!(st).cast::<u8>(), n) };
    crate::fork::arm();
    TABLE.lock().insert(fd, Entry { ino, addr: st, len: n as libc::socklen_t });
    ANY.store(true, Ordering::Release);
}

/// The recorded destination of `fd`, if it is still the socket we tunnelled.
pub fn lookup(fd: i32) -> Option<Entry> {
    if !ANY.load(Ordering::Relaxed) {
        return None;
    }
    let e = *TABLE.lock().get(&fd)?;
    (inode(fd) == Some(e.ino)).then_some(e)
}

/// getpeername(): the kernel's answer, except that a tunnelled socket reports the destination
/// the application connected to rather than the proxy.
///
/// # Safety
/// getpeername(2)'s contract.
pub unsafe fn getpeername(fd: i32, addr: *mut libc::sockaddr, len: *mut libc::socklen_t) -> crate::ffi::Ret<libc::c_int> {
    if let Some(e) = super::pending::gate(fd, libc::ENOTCONN) {
        return crate::ffi::Ret::err(-1, e);
    }
    let f = real!(getpeername: fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int);
    // SAFETY: the caller's arguments, passed on.
    let r = unsafe { f(fd, addr, len) };
    if r != 0 || addr.is_null() || len.is_null() {
        return crate::ffi::Ret::passed(r);
    }
    let Some(e) = lookup(fd) else { return crate::ffi::Ret::passed(r) };
    // SAFETY: len is valid (the kernel just wrote it); addr has the caller's original *len
    // bytes, which is at least what the kernel reported as capacity... so we copy at most the
    // smaller of the recorded length and the capacity the caller gave.
    unsafe {
        let cap = *len as usize;
        std::ptr::copy_nonoverlapping(std::ptr::addr_of!(e.addr).cast::<u8>(), addr.cast::<u8>(), cap.min(e.len as usize));
        *len = e.len;
    }
    crate::ffi::Ret::ok(0)
}

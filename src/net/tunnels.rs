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
    super::pending::table::inode(fd)
}

/// Remember that `fd` is tunnelled to the address the application passed. `ino`: the socket's
/// inode when the caller has just read it (saves the fstat).
///
/// # Safety
/// `addr` points to `len` readable bytes.
pub unsafe fn record(fd: i32, addr: *const libc::sockaddr, len: libc::socklen_t, ino: Option<u64>) {
    let Some(ino) = ino.or_else(|| inode(fd)) else { return };
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

/// Has any socket been tunnelled in this process? (getpeername's fast check)
pub fn any() -> bool {
    ANY.load(Ordering::Relaxed)
}

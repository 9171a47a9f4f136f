//! Waking threads that wait for a handshake to end (in poll/select, or in a blocking read on a
//! socket still handshaking): each such thread has one eventfd of its own, made on first need,
//! close-on-exec and moved out of the program's way (see `fds::high`). A waiter adds it to the
//! conn's list before waiting and removes it after; the end of a handshake writes to each. A
//! thread that exits (or is cancelled mid-wait) removes itself from every list before its
//! eventfd is closed, so a number we write to is always ours.
use super::table::TABLE;
use std::cell::{Cell, UnsafeCell};
use tsproxy_core::sys;

struct Wake {
    fd: Cell<i32>,
    pid: Cell<i32>,
    /// `fds::EVICTIONS` when made: a later eviction may have taken our number.
    gen: Cell<u32>,
}

impl Drop for Wake {
    fn drop(&mut self) {
        let fd = self.fd.get();
        if fd >= 0 && self.pid.get() == sys::pid() && self.gen.get() == crate::net::fds::EVICTIONS.load(std::sync::atomic::Ordering::Acquire) {
            let mut t = TABLE.lock();
            t.drop_waiter(fd);
            drop(t);
            crate::net::fds::release_ours(fd);
        }
    }
}

thread_local! {
    static WAKE: Wake = const { Wake { fd: Cell::new(-1), pid: Cell::new(0), gen: Cell::new(0) } };
    static ONE: UnsafeCell<libc::pollfd> = const { UnsafeCell::new(libc::pollfd { fd: -1, events: 0, revents: 0 }) };
}

/// This thread's wake-up eventfd (made on first use; a forked child makes its own).
pub fn mine() -> Option<i32> {
    WAKE.try_with(|w| {
        let pid = sys::pid();
        let gen = crate::net::fds::EVICTIONS.load(std::sync::atomic::Ordering::Acquire);
        if w.fd.get() >= 0 && w.pid.get() == pid && w.gen.get() == gen {
            return Some(w.fd.get());
        }
        // A child of fork() inherited its parent thread's eventfd: leave that one alone (it is
        // the parent's too) and make our own.
        let fd = tsproxy_core::syscall!(SYS_eventfd2, 0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK).ok()? as i32;
        let fd = crate::net::fds::move_high(fd);
        w.fd.set(fd);
        w.pid.set(pid);
        w.gen.set(gen);
        Some(fd)
    })
    .ok()
    .flatten()
}

/// Make `fd` readable for its waiter.
pub fn signal(fd: i32) {
    let one: u64 = 1;
    let _ = tsproxy_core::syscall!(SYS_write, fd, &one as *const u64, 8);
}

/// Consume pending wake-ups of this thread's eventfd.
pub fn drain(fd: i32) {
    let mut v: u64 = 0;
    let _ = tsproxy_core::syscall!(SYS_read, fd, &mut v as *mut u64, 8);
}

/// A one-entry poll array in thread-local storage, for a `Detour::Wait` on one descriptor.
pub fn one(fd: i32, events: i16) -> *mut libc::pollfd {
    ONE.with(|p| {
        let p = p.get();
        // SAFETY: thread-local, so only this thread touches it; the pointer stays valid for the
        // thread's life, across the wait the boundary makes on it.
        unsafe { *p = libc::pollfd { fd, events, revents: 0 } };
        p
    })
}

impl super::table::Table {
    /// Remove `wake` from every conn's waiters.
    pub fn drop_waiter(&mut self, wake: i32) {
        self.each_conn(|c| c.waiters.retain(|&w| w != wake));
    }
}

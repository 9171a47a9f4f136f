//! fork(): our locks are taken around it (pthread_atfork) so that a child never inherits one
//! held by a thread that does not exist in it. Registered on first use of a lock, never in a
//! constructor (at load only a child handler that caches the pid: `at_load`). Order: the
//! pending table, then the tunnel table (the order code nests them).
use std::sync::atomic::{AtomicBool, Ordering};

static ARMED: AtomicBool = AtomicBool::new(false);

/// Register the handlers once (a flag, not `Once`: a fork while another thread registers must
/// not leave the child waiting on it).
pub fn arm() {
    if !ARMED.load(Ordering::Relaxed) && !ARMED.swap(true, Ordering::AcqRel) {
        // SAFETY: plain functions valid for the life of the process.
        unsafe { libc::pthread_atfork(Some(prepare), Some(after), Some(child)) };
    }
}

/// At load time: cache the pid, and have every fork child cache its own (one `getpid` per
/// child), also in a process that never armed the lock handlers: `sys::in_borrowed_memory`
/// must never take a fork child for a vfork child running in its parent's memory.
pub fn at_load() {
    tsproxy_core::sys::refresh_pid();
    // SAFETY: a plain function valid for the life of the process.
    unsafe { libc::pthread_atfork(None, None, Some(pid_in_child)) };
}

extern "C" fn pid_in_child() {
    tsproxy_core::sys::refresh_pid();
}

extern "C" fn prepare() {
    crate::net::pending::epoll::lock_for_fork();
    crate::net::pending::table::lock_for_fork();
    crate::net::tunnels::lock_for_fork();
    crate::dns::wire::lock_for_fork();
    crate::net::udp::lock_for_fork();
}

extern "C" fn after() {
    crate::net::udp::unlock_after_fork();
    crate::dns::wire::unlock_after_fork();
    crate::net::tunnels::unlock_after_fork();
    crate::net::pending::table::unlock_after_fork();
    crate::net::pending::epoll::unlock_after_fork();
}

extern "C" fn child() {
    tsproxy_core::sys::refresh_pid();
    crate::net::pending::driver::after_fork_child();
    after();
    crate::net::pending::adopt::after_fork_child();
}

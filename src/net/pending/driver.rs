//! The driver thread: it advances every nonblocking handshake, so that no application thread
//! has to — in particular none already blocked in the kernel (`epoll_wait` entered before the
//! connect started), which nothing of ours could wake without showing it something.
//!
//! It is started on the first nonblocking connect to a proxied destination (never at load
//! time), waits in a private epoll set of its own (close-on-exec, out of the program's way,
//! never added to any set of the program's: its tokens cannot reach the program), runs with
//! every signal blocked (signals are for the program's threads), and exits after a second
//! with nothing to do. A fork() child has no driver thread: handshakes inherited from the
//! parent stay the parent's (the child never drives them or touches this set, which it shares
//! with the parent); a child's own new ones start a driver of its own.
use super::table::{Driver, Table, TABLE};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};
use tsproxy_core::{sys, Errno};

/// The driver's epoll set, -1 before the first use (and in a fork child).
static EP: AtomicI32 = AtomicI32::new(-1);
static RUNNING: AtomicBool = AtomicBool::new(false);
/// The process the values above belong to.
static PID: AtomicI32 = AtomicI32::new(0);

const IDLE: Duration = Duration::from_secs(1);

/// The driver's epoll set (-1 if none in this process).
pub fn ep() -> i32 {
    if PID.load(Ordering::Relaxed) != sys::pid() {
        return -1;
    }
    EP.load(Ordering::Relaxed)
}

/// Make sure the epoll set exists and the thread runs. Called without the table lock.
pub fn ensure() -> Result<i32, Errno> {
    let pid = sys::pid();
    if PID.load(Ordering::Acquire) != pid {
        // First use in this process (or a fork child: the parent's set is not ours to use).
        let fd = tsproxy_core::syscall!(SYS_epoll_create1, libc::EPOLL_CLOEXEC).map_err(|e| Errno::of(&e))? as i32;
        let fd = crate::net::fds::move_high(fd);
        // The poke: an eventfd in the set, so another thread can make the driver look at the
        // table at once (a held handshake to start: see `Table::release_abandoned`).
        let poke = tsproxy_core::syscall!(SYS_eventfd2, 0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK).map(|p| crate::net::fds::move_high(p as i32)).unwrap_or(-1);
        if poke >= 0 {
            let _ = sys::epoll_ctl(fd, libc::EPOLL_CTL_ADD, poke, libc::EPOLLIN as u32, POKE_TOKEN);
        }
        let _t = TABLE.lock();
        if PID.load(Ordering::Acquire) == pid {
            crate::net::fds::release_ours(fd);
            if poke >= 0 {
                crate::net::fds::release_ours(poke);
            }
        } else {
            POKE.store(poke, Ordering::Relaxed);
            EP.store(fd, Ordering::Relaxed);
            RUNNING.store(false, Ordering::Relaxed);
            PID.store(pid, Ordering::Release);
        }
    }
    let ep = EP.load(Ordering::Relaxed);
    if !RUNNING.swap(true, Ordering::AcqRel) {
        spawn(ep)?;
    }
    Ok(ep)
}

fn spawn(ep: i32) -> Result<(), Errno> {
    // Block every signal in the new thread: set the mask here, spawn (the thread inherits it),
    // put ours back.
    // SAFETY: sigset_t is plain data; sigfillset/pthread_sigmask only touch the sets given.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: sigset_t is plain data for which all-zero is a valid (empty) set.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid sets, valid how.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    let r = std::thread::Builder::new().name("tsproxy".into()).stack_size(128 * 1024).spawn(move || run(ep));
    // SAFETY: restoring the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    match r {
        Ok(_) => Ok(()),
        Err(e) => {
            RUNNING.store(false, Ordering::Release);
            crate::log::log!(Error, "cannot start the handshake thread: {e}; refusing the connect");
            Err(Errno(libc::EAGAIN))
        }
    }
}

/// The thread: wait, advance, expire, and leave when idle.
fn run(ep: i32) {
    // Nothing this thread does may be intercepted as if the program did it.
    let _inside = crate::boundary::Guard::enter();
    let pid = sys::pid();
    let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 64];
    let mut idle_since: Option<Instant> = None;
    // The earliest deadline at the last scan. Every handshake gets the same time limit, so a
    // newer one never ends earlier: the table is scanned again only when this one passes (or
    // nothing is pending any more), not on every wake-up — 1000 concurrent connects would
    // otherwise pay an O(n) scan per event.
    let mut next: Option<Instant> = None;
    loop {
        let timeout = {
            let mut t = TABLE.lock();
            if !super::active() || next.map_or(true, |d| d <= Instant::now()) || RESCAN.swap(false, Ordering::AcqRel) {
                next = next_deadline(&mut t, pid, ep);
            }
            match next {
                Some(d) => {
                    idle_since = None;
                    d.saturating_duration_since(Instant::now()).as_millis().clamp(1, 60_000) as i32
                }
                None => {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= IDLE {
                        RUNNING.store(false, Ordering::Release);
                        return;
                    }
                    IDLE.saturating_sub(since.elapsed()).as_millis().max(1) as i32
                }
            }
        };
        let n = match tsproxy_core::syscall!(SYS_epoll_wait, ep, evs.as_mut_ptr(), evs.len(), timeout) {
            Ok(n) => n as usize,
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(_) => {
                // The set is gone (cannot happen: the program cannot close it): fail every
                // handshake we run rather than leave it hanging.
                let mut t = TABLE.lock();
                for slot in t.thread_slots(pid) {
                    t.expire(slot, Errno(libc::ECONNREFUSED), ep);
                }
                if EP.load(Ordering::Relaxed) == ep {
                    PID.store(0, Ordering::Release);
                }
                RUNNING.store(false, Ordering::Release);
                return;
            }
        };
        for e in evs.iter().take(n) {
            if e.u64 == POKE_TOKEN {
                let mut b = [0u8; 8];
                let _ = tsproxy_core::syscall!(SYS_read, POKE.load(Ordering::Relaxed), b.as_mut_ptr(), 8usize);
                RESCAN.store(true, Ordering::Release);
                continue;
            }
            advance(e.u64, ep);
        }
    }
}

/// One event of the driver's set: advance that handshake. The lock is held only to take the
/// handshake out and to put it back — its syscalls (connect, send, recv to the proxy) run
/// without it, so the program's threads, which need the table for every hooked call while
/// something is pending, never wait for a proxy round of ours.
fn advance(tok: u64, ep: i32) {
    let Some((slot, mut hs)) = ({
        let mut t = TABLE.lock();
        // None: a conn that ended meanwhile (its socket left our set when it did).
        t.by_token(tok).and_then(|slot| t.take(slot).map(|(hs, _, _)| (slot, hs)))
    }) else {
        return;
    };
    let step = hs.resume(&mut |l, a| crate::log::write(l, a));
    let mut t = TABLE.lock();
    // Closed by the program meanwhile (close() removed the conn): the handshake is dropped.
    if t.by_token(tok) == Some(slot) {
        t.apply(slot, hs, step, ep);
    }
}

/// The earliest deadline of a handshake we drive, expiring those already past.
fn next_deadline(t: &mut Table, pid: i32, ep: i32) -> Option<Instant> {
    let now = Instant::now();
    let mut next: Option<Instant> = None;
    for slot in t.thread_slots(pid) {
        let Some(c) = t.conn(slot) else { continue };
        if c.driver != Driver::Thread {
            continue;
        }
        if c.deadline <= now {
            t.expire(slot, Errno(libc::ETIMEDOUT), ep);
            continue;
        }
        let mut due = c.deadline;
        if let Some(Some(at)) = c.held {
            if at <= now {
                t.start_held(slot, ep);
                continue;
            }
            due = due.min(at);
        }
        next = Some(next.map_or(due, |n: Instant| n.min(due)));
    }
    if let Some(k) = super::adopt::expire(t, now) {
        next = Some(next.map_or(k, |n: Instant| n.min(k)));
    }
    next
}

/// Look at the table again before the next wait (a held handshake got a start time).
static RESCAN: AtomicBool = AtomicBool::new(false);

/// Ask the driver to look at the table again before its next wait.
pub fn rescan() {
    RESCAN.store(true, Ordering::Release);
}

/// The driver's poke eventfd (-1: none).
static POKE: AtomicI32 = AtomicI32::new(-1);
/// Its token in the driver's set (no conn's token is all ones).
const POKE_TOKEN: u64 = u64::MAX;

/// Wake the driver from another thread: it looks at the table at once.
pub fn poke() {
    if ep() < 0 {
        return;
    }
    let p = POKE.load(Ordering::Relaxed);
    if p >= 0 {
        let one = 1u64.to_ne_bytes();
        let _ = tsproxy_core::syscall!(SYS_write, p, one.as_ptr(), 8usize);
    }
}

/// The program dup2()s over `fd`: if it is our epoll set, forget it (the thread notices its
/// set is gone, fails what it ran and leaves; the next connect makes a new one).
pub fn evicted(fd: i32) {
    if EP.load(Ordering::Relaxed) == fd {
        PID.store(0, Ordering::Release);
    }
}

/// In a fork child: no driver thread and no epoll set of ours yet.
pub fn after_fork_child() {
    RUNNING.store(false, Ordering::Relaxed);
}

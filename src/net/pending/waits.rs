//! poll/ppoll/select/pselect on sockets still handshaking. Each such entry waits on the
//! thread's wake-up eventfd instead of the socket (which is connected to the proxy and would
//! look writable long before the tunnel is up); when the handshake ends the entry gets the
//! socket's real readiness. The caller's own array is used for the wait (its entries are put
//! back before returning), so nothing of ours has to live on the exported frame while libc's
//! poll sleeps; what we must remember between rounds is kept per thread, in a stack (a signal
//! handler may poll while we wait).
use super::table::TABLE;
use super::wake;
use crate::boundary::{Bypass, Ctx, Detour, Wait};
use crate::fdset;
use libc::{c_int, nfds_t, pollfd};
use std::cell::RefCell;
use std::time::{Duration, Instant};
use tsproxy_core::Errno;

/// Entries swapped for the wake-up eventfd: (index, the application's fd, its events).
type Saved = Vec<(usize, i32, i16)>;

struct Frame {
    saved: Saved,
    deadline: Option<Instant>,
    wake: i32,
    /// select: the pollfd array we made (freed at the end; leaked only if the thread is
    /// cancelled while it waits).
    owned: Option<(*mut pollfd, usize)>,
}

thread_local! {
    static FRAMES: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
}

fn push(f: Frame) {
    let _ = FRAMES.try_with(|s| s.borrow_mut().push(f));
}

fn pop() -> Option<Frame> {
    FRAMES.try_with(|s| s.borrow_mut().pop()).ok().flatten()
}

fn ms(deadline: Option<Instant>) -> c_int {
    deadline.map_or(-1, |d| d.saturating_duration_since(Instant::now()).as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as c_int)
}

/// Swap the entries that are still handshaking for the wake-up eventfd and register as a
/// waiter. None: no entry is handshaking (any more). The bool: one of them is another
/// process's handshake (its end wakes nobody here), so the wait must look again soon.
fn arm(app: &mut [pollfd], wake: i32) -> Option<(Saved, bool)> {
    let mut saved = Vec::new();
    let mut foreign = false;
    let mut t = TABLE.lock();
    for (i, p) in app.iter().enumerate() {
        if p.fd < 0 {
            continue;
        }
        if let Some(slot) = super::pending_slot(&mut t, p.fd) {
            foreign |= super::foreign(&mut t, slot);
            if let Some(c) = t.conn(slot) {
                if !c.waiters.contains(&wake) {
                    c.waiters.push(wake);
                }
                saved.push((i, p.fd, p.events));
            }
        }
    }
    drop(t);
    if saved.is_empty() {
        return None;
    }
    wake::drain(wake);
    for &(i, _, _) in &saved {
        if let Some(p) = app.get_mut(i) {
            *p = pollfd { fd: wake, events: libc::POLLIN, revents: 0 };
        }
    }
    Some((saved, foreign))
}

/// The wait's timeout: the caller's time left, at most `FOREIGN_LOOK` when a handshake of
/// another process is among the entries.
fn slice(deadline: Option<Instant>, foreign: bool) -> c_int {
    let left = ms(deadline);
    if !foreign {
        return left;
    }
    let look = super::FOREIGN_LOOK.as_millis() as c_int;
    if left < 0 {
        look
    } else {
        left.min(look)
    }
}

/// Put the application's entries back and give each its readiness now: nothing while still
/// handshaking, the socket's own state once ended. Returns how many entries have events.
fn disarm(app: &mut [pollfd], saved: &[(usize, i32, i16)], wake: i32) -> c_int {
    let mut t = TABLE.lock();
    t.drop_waiter(wake);
    let mut ended = Vec::with_capacity(saved.len());
    for &(_, fd, _) in saved {
        ended.push(super::pending_slot(&mut t, fd).is_none());
    }
    drop(t);
    wake::drain(wake);
    for (&(i, fd, events), done) in saved.iter().zip(ended) {
        if let Some(p) = app.get_mut(i) {
            let revents =
                if done { tsproxy_core::sys::poll1(fd, events, 0).unwrap_or(0) & (events | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) } else { 0 };
            *p = pollfd { fd, events, revents };
        }
    }
    app.iter().filter(|p| p.revents != 0).count() as c_int
}

/// poll/ppoll. Bypass when no entry is a socket still handshaking.
///
/// # Safety
/// poll's contract: `fds` holds `n` entries.
pub unsafe fn poll(fds: *mut pollfd, n: nfds_t, timeout: Option<Duration>, sigmask: *const libc::sigset_t, ctx: &mut Ctx) -> Detour<c_int> {
    if fds.is_null() || n == 0 {
        return Detour::Bypass(Bypass::NotApplicable);
    }
    // SAFETY: poll's contract.
    let app = unsafe { std::slice::from_raw_parts_mut(fds, n as usize) };
    let frame = if ctx.round == 0 {
        let Some(wake) = wake::mine() else { return Detour::Bypass(Bypass::NotOurs) };
        Frame { saved: Vec::new(), deadline: timeout.map(|t| Instant::now() + t), wake, owned: None }
    } else {
        let Some(f) = pop() else { return Detour::Fail(Errno(libc::EINTR)) };
        let (r, e) = ctx.woke.unwrap_or((-1, Errno(libc::EINTR)));
        let count = disarm(app, &f.saved, f.wake);
        if r < 0 {
            return Detour::Return(-1, e);
        }
        if count > 0 || ms(f.deadline) == 0 {
            return Detour::Done(count);
        }
        f
    };
    match arm(app, frame.wake) {
        None if ctx.round == 0 => Detour::Bypass(Bypass::NotOurs),
        // Every handshake ended meanwhile: one more real poll, for the time left.
        None => {
            let deadline = frame.deadline;
            push(Frame { saved: Vec::new(), ..frame });
            Detour::Wait(Wait { fds, n, timeout_ms: ms(deadline), sigmask })
        }
        Some((saved, foreign)) => {
            let deadline = frame.deadline;
            push(Frame { saved, ..frame });
            Detour::Wait(Wait { fds, n, timeout_ms: slice(deadline, foreign), sigmask })
        }
    }
}

/// select/pselect with a socket still handshaking among the sets: as poll (the kernel defines
/// select's readiness through poll), the sets read and written by bit arithmetic.
///
/// # Safety
/// select's contract: each set is null or valid for `nfds` descriptors.
pub unsafe fn select(nfds: c_int, sets: [*mut libc::fd_set; 3], timeout: Option<Duration>, sigmask: *const libc::sigset_t, ctx: &mut Ctx) -> Detour<c_int> {
    if ctx.round == 0 {
        // Fast check: is any descriptor of ours below nfds in a set?
        let ours = {
            let t = TABLE.lock();
            t.fds_in(0, nfds - 1)
        };
        // SAFETY: fd < nfds, so its word is inside each non-null set (contract).
        if !ours.iter().any(|&fd| sets.iter().any(|&s| unsafe { fdset::isset(s, fd) })) {
            return Detour::Bypass(Bypass::NotOurs);
        }
        let Some(wake) = wake::mine() else { return Detour::Bypass(Bypass::NotOurs) };
        let mut v: Vec<pollfd> = Vec::new();
        for fd in 0..nfds {
            // SAFETY: fd < nfds, so its word lies inside every non-null set (select's contract).
            let has = |s: *mut libc::fd_set| unsafe { fdset::isset(s, fd) };
            let ev = if has(sets[0]) { libc::POLLIN } else { 0 } | if has(sets[1]) { libc::POLLOUT } else { 0 } | if has(sets[2]) { libc::POLLPRI } else { 0 };
            if ev != 0 {
                v.push(pollfd { fd, events: ev, revents: 0 });
            }
        }
        let len = v.len();
        let ptr = Box::into_raw(v.into_boxed_slice()).cast::<pollfd>();
        // SAFETY: ptr holds len entries we own.
        let app = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
        let deadline = timeout.map(|t| Instant::now() + t);
        let (saved, foreign) = arm(app, wake).unwrap_or_default();
        push(Frame { saved, deadline, wake, owned: Some((ptr, len)) });
        return Detour::Wait(Wait { fds: ptr, n: len as nfds_t, timeout_ms: slice(deadline, foreign), sigmask });
    }
    let Some(f) = pop() else { return Detour::Fail(Errno(libc::EINTR)) };
    let Some((ptr, len)) = f.owned else { return Detour::Fail(Errno(libc::EINTR)) };
    // SAFETY: our own array from round 0.
    let app = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
    let (r, e) = ctx.woke.unwrap_or((-1, Errno(libc::EINTR)));
    let count = disarm(app, &f.saved, f.wake);
    let finish = |d: Detour<c_int>| {
        // SAFETY: made by Box::into_raw in round 0, freed once.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) });
        d
    };
    if r < 0 {
        return finish(Detour::Return(-1, e));
    }
    if count == 0 && ms(f.deadline) != 0 {
        let deadline = f.deadline;
        let (saved, foreign) = arm(app, f.wake).unwrap_or_default();
        push(Frame { saved, deadline, wake: f.wake, owned: Some((ptr, len)) });
        return Detour::Wait(Wait { fds: ptr, n: len as nfds_t, timeout_ms: slice(deadline, foreign), sigmask });
    }
    if app.iter().any(|p| p.revents & libc::POLLNVAL != 0) {
        return finish(Detour::Fail(Errno(libc::EBADF)));
    }
    for &s in &sets {
        // SAFETY: valid for nfds descriptors (contract).
        unsafe { fdset::zero(s, nfds) };
    }
    let mut n = 0;
    for p in app.iter() {
        for (k, asked, got) in [
            (0, libc::POLLIN, libc::POLLIN | libc::POLLHUP | libc::POLLERR),
            (1, libc::POLLOUT, libc::POLLOUT | libc::POLLERR),
            (2, libc::POLLPRI, libc::POLLPRI),
        ] {
            if p.events & asked != 0 && p.revents & got != 0 {
                // SAFETY: p.fd < nfds, inside the set (contract).
                unsafe { fdset::set(sets[k], p.fd) };
                n += 1;
            }
        }
    }
    finish(Detour::Done(n))
}

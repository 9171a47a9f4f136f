//! poll/ppoll/select/pselect: one relaxed load when nothing is pending; otherwise sockets still
//! handshaking are waited on for the handshake's sake and hidden (see net::pending).
use crate::ffi::{shield, Ret};
use crate::net::pending;
use libc::{c_int, fd_set, nfds_t, pollfd, sigset_t, size_t, timespec, timeval};
use std::time::Duration;

fn to_ms(t: Option<Duration>) -> c_int {
    t.map(|d| d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as c_int).unwrap_or(-1)
}

fn ts(t: Option<Duration>) -> Option<timespec> {
    t.map(|d| timespec { tv_sec: d.as_secs() as _, tv_nsec: d.subsec_nanos() as _ })
}

fn from_ts(t: *const timespec) -> Option<Duration> {
    // SAFETY: null or a valid timespec (the callers' contract).
    unsafe { t.as_ref() }.map(|t| Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32))
}

#[no_mangle]
pub unsafe extern "C" fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int {
    let real = real!(poll: fn(*mut pollfd, nfds_t, c_int) -> c_int);
    if !pending::active() {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { real(fds, n, timeout) };
    }
    // SAFETY: a copy of the caller's array of n entries, or the array itself.
    let wait = |p: *mut pollfd, k: nfds_t, t: Option<Duration>| unsafe { real(p, k, to_ms(t)) };
    let t = (timeout >= 0).then(|| Duration::from_millis(timeout as u64));
    shield(Ret::err(-1, libc::EINTR), || pending::wait_poll(fds, n, t, &wait))
}

#[no_mangle]
pub unsafe extern "C" fn __poll_chk(fds: *mut pollfd, n: nfds_t, timeout: c_int, fdslen: size_t) -> c_int {
    let real = real!(__poll_chk: fn(*mut pollfd, nfds_t, c_int, size_t) -> c_int);
    if !pending::active() {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { real(fds, n, timeout, fdslen) };
    }
    // SAFETY: as in poll; the size check stays glibc's.
    let wait = |p: *mut pollfd, k: nfds_t, t: Option<Duration>| unsafe { real(p, k, to_ms(t), fdslen) };
    let t = (timeout >= 0).then(|| Duration::from_millis(timeout as u64));
    shield(Ret::err(-1, libc::EINTR), || pending::wait_poll(fds, n, t, &wait))
}

#[no_mangle]
pub unsafe extern "C" fn ppoll(fds: *mut pollfd, n: nfds_t, timeout: *const timespec, sigmask: *const sigset_t) -> c_int {
    let real = real!(ppoll: fn(*mut pollfd, nfds_t, *const timespec, *const sigset_t) -> c_int);
    if !pending::active() {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { real(fds, n, timeout, sigmask) };
    }
    let wait = |p: *mut pollfd, k: nfds_t, t: Option<Duration>| {
        let t = ts(t);
        // SAFETY: as in poll; t lives across the call.
        unsafe { real(p, k, t.as_ref().map_or(std::ptr::null(), |t| t as *const timespec), sigmask) }
    };
    shield(Ret::err(-1, libc::EINTR), || pending::wait_poll(fds, n, from_ts(timeout), &wait))
}

#[no_mangle]
pub unsafe extern "C" fn __ppoll_chk(fds: *mut pollfd, n: nfds_t, timeout: *const timespec, sigmask: *const sigset_t, fdslen: size_t) -> c_int {
    let real = real!(__ppoll_chk: fn(*mut pollfd, nfds_t, *const timespec, *const sigset_t, size_t) -> c_int);
    if !pending::active() {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { real(fds, n, timeout, sigmask, fdslen) };
    }
    let wait = |p: *mut pollfd, k: nfds_t, t: Option<Duration>| {
        let t = ts(t);
        // SAFETY: as in ppoll.
        unsafe { real(p, k, t.as_ref().map_or(std::ptr::null(), |t| t as *const timespec), sigmask, fdslen) }
    };
    shield(Ret::err(-1, libc::EINTR), || pending::wait_poll(fds, n, from_ts(timeout), &wait))
}

#[no_mangle]
pub unsafe extern "C" fn select(n: c_int, r: *mut fd_set, w: *mut fd_set, x: *mut fd_set, timeout: *mut timeval) -> c_int {
    let real = real!(select: fn(c_int, *mut fd_set, *mut fd_set, *mut fd_set, *mut timeval) -> c_int);
    // SAFETY: the sets are null or valid (select's contract).
    if !pending::active() || !unsafe { pending::select_touches(n, [r, w, x]) } {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { real(n, r, w, x, timeout) };
    }
    // SAFETY: null or a valid timeval (contract).
    let t = unsafe { timeout.as_ref() }.map(|t| Duration::new(t.tv_sec.max(0) as u64, (t.tv_usec.clamp(0, 999_999) * 1000) as u32));
    let start = std::time::Instant::now();
    // SAFETY: select's contract is our caller's.
    let ret = shield(Ret::err(-1, libc::EINTR), || unsafe { pending::select(n, r, w, x, t, std::ptr::null()) });
    if let (Some(t), false) = (t, timeout.is_null()) {
        // Linux reports the time left, as the kernel's select does.
        let left = t.saturating_sub(start.elapsed());
        // SAFETY: non-null, valid (contract).
        unsafe { *timeout = timeval { tv_sec: left.as_secs() as _, tv_usec: left.subsec_micros() as _ } };
    }
    ret
}

#[no_mangle]
pub unsafe extern "C" fn pselect(n: c_int, r: *mut fd_set, w: *mut fd_set, x: *mut fd_set, timeout: *const timespec, sigmask: *const sigset_t) -> c_int {
    let real = real!(pselect: fn(c_int, *mut fd_set, *mut fd_set, *mut fd_set, *const timespec, *const sigset_t) -> c_int);
    // SAFETY: the sets are null or valid (pselect's contract).
    if !pending::active() || !unsafe { pending::select_touches(n, [r, w, x]) } {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { real(n, r, w, x, timeout, sigmask) };
    }
    // SAFETY: pselect's contract is our caller's.
    shield(Ret::err(-1, libc::EINTR), || unsafe { pending::select(n, r, w, x, from_ts(timeout), sigmask) })
}

//! poll/ppoll/select/pselect: one relaxed load when nothing is pending; otherwise sockets still
//! handshaking are waited on through the thread's wake-up eventfd (see net::pending::waits).
use crate::net::pending::{self, waits};
use libc::{c_int, fd_set, nfds_t, pollfd, sigset_t, size_t, timespec, timeval};
use std::time::Duration;

fn ms(timeout: c_int) -> Option<Duration> {
    (timeout >= 0).then(|| Duration::from_millis(timeout as u64))
}

fn from_ts(t: *const timespec) -> Option<Duration> {
    // SAFETY: null or a valid timespec (the callers' contract).
    unsafe { t.as_ref() }.map(|t| Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32))
}

hook! {
    fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int;
    fast: !pending::active();
    fail: -1, on_panic: ENOMEM;
    |real, ctx| waits::poll(fds, n, ms(timeout), std::ptr::null(), ctx)
}

hook! {
    fn __poll_chk(fds: *mut pollfd, n: nfds_t, timeout: c_int, fdslen: size_t) -> c_int;
    fast: !pending::active();
    fail: -1, on_panic: ENOMEM;
    |real, ctx| waits::poll(fds, n, ms(timeout), std::ptr::null(), ctx)
}

hook! {
    fn ppoll(fds: *mut pollfd, n: nfds_t, timeout: *const timespec, sigmask: *const sigset_t) -> c_int;
    fast: !pending::active();
    fail: -1, on_panic: ENOMEM;
    |real, ctx| waits::poll(fds, n, from_ts(timeout), sigmask, ctx)
}

hook! {
    fn __ppoll_chk(fds: *mut pollfd, n: nfds_t, timeout: *const timespec, sigmask: *const sigset_t, fdslen: size_t) -> c_int;
    fast: !pending::active();
    fail: -1, on_panic: ENOMEM;
    |real, ctx| waits::poll(fds, n, from_ts(timeout), sigmask, ctx)
}

hook! {
    fn select(n: c_int, r: *mut fd_set, w: *mut fd_set, x: *mut fd_set, timeout: *mut timeval) -> c_int;
    fast: !pending::active();
    fail: -1, on_panic: ENOMEM;
    |real, ctx| {
        // SAFETY: null or a valid timeval (contract).
        let t = timeout.as_ref().map(|t| Duration::new(t.tv_sec.max(0) as u64, (t.tv_usec.clamp(0, 999_999) * 1000) as u32));
        let start = *ctx.start.get_or_insert_with(std::time::Instant::now);
        let d = waits::select(n, [r, w, x], t, std::ptr::null(), ctx);
        if let (Some(t), false, false) = (t, timeout.is_null(), matches!(d, crate::boundary::Detour::Wait(_) | crate::boundary::Detour::Bypass(_))) {
            // Linux reports the time left, as the kernel's select does.
            let left = t.saturating_sub(start.elapsed());
            *timeout = timeval { tv_sec: left.as_secs() as _, tv_usec: left.subsec_micros() as _ };
        }
        d
    }
}

hook! {
    fn pselect(n: c_int, r: *mut fd_set, w: *mut fd_set, x: *mut fd_set, timeout: *const timespec, sigmask: *const sigset_t) -> c_int;
    fast: !pending::active();
    fail: -1, on_panic: ENOMEM;
    |real, ctx| waits::select(n, [r, w, x], from_ts(timeout), sigmask, ctx)
}

//! epoll: remember instances as they are created (cheap, rare); while a handshake is pending,
//! epoll_ctl keeps the application's registration of that socket aside and the waits drive the
//! handshake (see net::pending). One relaxed load otherwise.
use crate::ffi::{shield, side, Ret};
use crate::net::pending;
use libc::{c_int, epoll_event, sigset_t, timespec};
use std::time::Duration;

#[no_mangle]
pub unsafe extern "C" fn epoll_create(size: c_int) -> c_int {
    let real = real!(epoll_create: fn(c_int) -> c_int);
    // SAFETY: the caller's argument, passed on.
    let fd = unsafe { real(size) };
    side(|| pending::on_epoll_create(fd));
    fd
}

#[no_mangle]
pub unsafe extern "C" fn epoll_create1(flags: c_int) -> c_int {
    let real = real!(epoll_create1: fn(c_int) -> c_int);
    // SAFETY: the caller's argument, passed on.
    let fd = unsafe { real(flags) };
    side(|| pending::on_epoll_create(fd));
    fd
}

#[no_mangle]
pub unsafe extern "C" fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, ev: *mut epoll_event) -> c_int {
    let real = real!(epoll_ctl: fn(c_int, c_int, c_int, *mut epoll_event) -> c_int);
    if op == libc::EPOLL_CTL_ADD {
        crate::net::fds::added_to_epoll(fd);
    }
    if pending::active() {
        if let Some(r) = shield(Ret::ok(None), || Ret::ok(pending::epoll_ctl(epfd, op, fd, ev))) {
            if let Some(e) = r.errno {
                tsproxy_core::sys::set_errno(e);
            }
            return r.val;
        }
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { real(epfd, op, fd, ev) }
}

fn ms(timeout: c_int) -> Option<Duration> {
    (timeout >= 0).then(|| Duration::from_millis(timeout as u64))
}

fn ms_back(t: Option<Duration>) -> c_int {
    t.map(|d| d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as c_int).unwrap_or(-1)
}

#[no_mangle]
pub unsafe extern "C" fn epoll_wait(epfd: c_int, evs: *mut epoll_event, max: c_int, timeout: c_int) -> c_int {
    let real = real!(epoll_wait: fn(c_int, *mut epoll_event, c_int, c_int) -> c_int);
    if !pending::active() {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { real(epfd, evs, max, timeout) };
    }
    // SAFETY: the caller's epfd and buffer; each call passes a slice of the caller's array.
    let wait = |e: *mut epoll_event, m: c_int, t: Option<Duration>| unsafe { real(epfd, e, m, ms_back(t)) };
    shield(Ret::err(-1, libc::EINTR), || pending::wait_epoll(evs, max, ms(timeout), &wait))
}

#[no_mangle]
pub unsafe extern "C" fn epoll_pwait(epfd: c_int, evs: *mut epoll_event, max: c_int, timeout: c_int, sigmask: *const sigset_t) -> c_int {
    let real = real!(epoll_pwait: fn(c_int, *mut epoll_event, c_int, c_int, *const sigset_t) -> c_int);
    if !pending::active() {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { real(epfd, evs, max, timeout, sigmask) };
    }
    // SAFETY: as in epoll_wait.
    let wait = |e: *mut epoll_event, m: c_int, t: Option<Duration>| unsafe { real(epfd, e, m, ms_back(t), sigmask) };
    shield(Ret::err(-1, libc::EINTR), || pending::wait_epoll(evs, max, ms(timeout), &wait))
}

#[no_mangle]
pub unsafe extern "C" fn epoll_pwait2(epfd: c_int, evs: *mut epoll_event, max: c_int, timeout: *const timespec, sigmask: *const sigset_t) -> c_int {
    let real = real!(epoll_pwait2: fn(c_int, *mut epoll_event, c_int, *const timespec, *const sigset_t) -> c_int);
    if !pending::active() {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { real(epfd, evs, max, timeout, sigmask) };
    }
    // SAFETY: timeout is null or a valid timespec (contract).
    let t = unsafe { timeout.as_ref() }.map(|t| Duration::new(t.tv_sec.max(0) as u64, t.tv_nsec.clamp(0, 999_999_999) as u32));
    let wait = |e: *mut epoll_event, m: c_int, t: Option<Duration>| {
        let ts = t.map(|d| timespec { tv_sec: d.as_secs() as _, tv_nsec: d.subsec_nanos() as _ });
        // SAFETY: as in epoll_wait; ts lives across the call.
        unsafe { real(epfd, e, m, ts.as_ref().map_or(std::ptr::null(), |t| t as *const timespec), sigmask) }
    };
    shield(Ret::err(-1, libc::EINTR), || pending::wait_epoll(evs, max, t, &wait))
}

//! close/dup/fcntl: keep the table of pending sockets in step with the fd table. One relaxed
//! load when nothing is pending.
use crate::ffi::side;
use crate::net::{fds, pending};
use libc::{c_int, c_uint, c_ulong};

#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, proto: c_int) -> c_int {
    let real = real!(socket: fn(c_int, c_int, c_int) -> c_int);
    // SAFETY: the caller's arguments, passed on.
    let fd = unsafe { real(domain, ty, proto) };
    if fd >= 0 && (domain == libc::AF_INET || domain == libc::AF_INET6) {
        fds::created(fd, ty);
    }
    fd
}

#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    let real = real!(close: fn(c_int) -> c_int);
    fds::forget(fd);
    if pending::active() {
        side(|| pending::on_close(fd));
    }
    // SAFETY: the caller's argument, passed on.
    unsafe { real(fd) }
}

#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    let real = real!(close_range: fn(c_uint, c_uint, c_int) -> c_int);
    if flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 {
        fds::forget_range(first, last);
        if pending::active() {
            side(|| pending::on_close_range(first, last));
        }
    }
    // SAFETY: the caller's arguments, passed on.
    unsafe { real(first, last, flags) }
}

#[no_mangle]
pub unsafe extern "C" fn dup(old: c_int) -> c_int {
    let real = real!(dup: fn(c_int) -> c_int);
    // SAFETY: the caller's argument, passed on.
    let new = unsafe { real(old) };
    after_dup(old, new)
}

#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    let real = real!(dup2: fn(c_int, c_int) -> c_int);
    // SAFETY: the caller's arguments, passed on.
    let r = unsafe { real(old, new) };
    after_dup(old, r)
}

#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    let real = real!(dup3: fn(c_int, c_int, c_int) -> c_int);
    // SAFETY: the caller's arguments, passed on.
    let r = unsafe { real(old, new, flags) };
    after_dup(old, r)
}

/// fcntl is variadic in C; on x86_64 and aarch64 the optional third argument travels in the
/// same register as a fixed one, so taking it as `c_ulong` and passing it on is exact.
#[no_mangle]
pub unsafe extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    let real = real!(fcntl: fn(c_int, c_int, c_ulong) -> c_int);
    // SAFETY: the caller's arguments, passed on.
    after_fcntl(fd, cmd, unsafe { real(fd, cmd, arg) })
}

#[no_mangle]
pub unsafe extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    let real = real!(fcntl64: fn(c_int, c_int, c_ulong) -> c_int);
    // SAFETY: the caller's arguments, passed on.
    after_fcntl(fd, cmd, unsafe { real(fd, cmd, arg) })
}

fn after_fcntl(fd: c_int, cmd: c_int, r: c_int) -> c_int {
    if cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC {
        return after_dup(fd, r);
    }
    r
}

fn after_dup(old: c_int, new: c_int) -> c_int {
    if new >= 0 && new != old {
        fds::duplicated(old, new);
    }
    if new >= 0 && pending::active() {
        side(|| pending::on_dup(old, new));
    }
    new
}

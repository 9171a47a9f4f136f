//! socket/close/dup/fcntl: keep what we know per fd in step with the fd table. One relaxed
//! load when nothing is pending. Descriptors of tsproxy's own (the driver's epoll set, wake-up
//! eventfds) do not exist for the program: its close() of one answers EBADF, as for any
//! number it never opened.
use crate::boundary::{passed, Bypass, Detour};
use crate::net::{fds, pending};
use libc::{c_int, c_uint, c_ulong};

hook! {
    fn socket(domain: c_int, ty: c_int, proto: c_int) -> c_int;
    fast: false;
    fail: -1, on_panic: ENOMEM;
    |real, ctx| {
        let fd = real(domain, ty, proto);
        if fd >= 0 && (domain == libc::AF_INET || domain == libc::AF_INET6) {
            fds::created(fd, ty);
        }
        passed(fd)
    }
}

hook! {
    fn close(fd: c_int) -> c_int;
    fast: {
        let k = fds::get(fd);
        if k & fds::OURS == 0 && k != 0 {
            fds::forget(fd);
        }
        k & (fds::OURS | fds::UDP) == 0 && !pending::active()
    };
    fail: -1, on_panic: EBADF;
    |real, ctx| {
        if fds::is_ours(fd) {
            Detour::Fail(tsproxy_core::Errno(libc::EBADF))
        } else {
            pending::on_close(fd);
            crate::net::udp::on_close(fd);
            Detour::Bypass(Bypass::NotOurs)
        }
    }
}

hook! {
    fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int;
    fast: false;
    fail: -1, on_panic: EINVAL;
    |real, ctx| {
        if flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 {
            fds::forget_range(first, last);
            pending::on_close_range(first, last);
            crate::net::udp::on_close_range(first, last);
        }
        // Keep our own descriptors: close the range around them.
        let ours = fds::ours_in(first, last);
        if ours.is_empty() {
            return Detour::Bypass(Bypass::NotOurs);
        }
        let mut lo = first;
        for o in ours {
            if o > lo && real(lo, o - 1, flags) != 0 {
                return passed(-1);
            }
            lo = o.saturating_add(1);
        }
        if lo <= last && lo != 0 {
            return passed(real(lo, last, flags));
        }
        Detour::Done(0)
    }
}

hook! {
    fn dup(old: c_int) -> c_int;
    fast: false;
    fail: -1, on_panic: EBADF;
    |real, ctx| {
        let new = real(old);
        after_dup(old, new);
        passed(new)
    }
}

hook! {
    fn dup2(old: c_int, new: c_int) -> c_int;
    fast: false;
    fail: -1, on_panic: EBADF;
    |real, ctx| onto(old, new, || real(old, new))
}

hook! {
    fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int;
    fast: false;
    fail: -1, on_panic: EBADF;
    |real, ctx| onto(old, new, || real(old, new, flags))
}

// fcntl is variadic in C; on x86_64 and aarch64 the optional third argument travels in the
// same register as a fixed one, so taking it as `c_ulong` and passing it on is exact.
hook! {
    fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int;
    fast: cmd != libc::F_DUPFD && cmd != libc::F_DUPFD_CLOEXEC;
    fail: -1, on_panic: EBADF;
    |real, ctx| {
        let r = real(fd, cmd, arg);
        after_dup(fd, r);
        passed(r)
    }
}

hook! {
    fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int;
    fast: cmd != libc::F_DUPFD && cmd != libc::F_DUPFD_CLOEXEC;
    fail: -1, on_panic: EBADF;
    |real, ctx| {
        let r = real(fd, cmd, arg);
        after_dup(fd, r);
        passed(r)
    }
}

/// dup2/dup3: a descriptor of ours in the way is given up first (the number is the program's
/// to take), then the duplicate is recorded.
fn onto(old: c_int, new: c_int, dup: impl FnOnce() -> c_int) -> Detour<c_int> {
    if fds::is_ours(new) {
        crate::dns::wire::evicted(new);
        fds::evict(new);
    }
    if old != new {
        crate::net::udp::on_close(new);
    }
    let r = dup();
    after_dup(old, r);
    passed(r)
}

fn after_dup(old: c_int, new: c_int) {
    if new >= 0 && new != old {
        fds::duplicated(old, new);
        pending::on_dup(old, new);
        crate::net::udp::on_dup(old, new);
        crate::dns::wire::on_dup(old, new);
    }
}

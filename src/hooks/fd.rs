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
        let theirs = k & fds::OURS == 0 && k != 0;
        // Forgetting a FRESH or IN_EPOLL bit only costs the parent speed; the others say the
        // socket is in a table, and a vfork child must not clear them (one getpid, for those).
        if theirs && k & (fds::PENDING | fds::DNS | fds::UDP) != 0 && in_vfork_child() {
            true
        } else {
            if theirs {
                fds::forget(fd);
            }
            k & (fds::OURS | fds::UDP) == 0 && !pending::active()
        }
    };
    fail: -1, on_panic: EBADF;
    |real, ctx| {
        if fds::is_ours(fd) {
            Detour::Fail(tsproxy_core::Errno(libc::EBADF))
        } else if in_vfork_child() {
            Detour::Bypass(Bypass::NotOurs)
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
        if flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 && !in_vfork_child() {
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
    if in_vfork_child() {
        return passed(dup());
    }
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
    if new >= 0 && new != old && !in_vfork_child() {
        fds::duplicated(old, new);
        pending::on_dup(old, new);
        crate::net::udp::on_dup(old, new);
        crate::dns::wire::on_dup(old, new);
    }
}

/// A vfork child (CPython's subprocess, Java's VFORK launch mechanism) runs in its parent's
/// memory with a descriptor table of its own until it execs: its close/dup2/close_range act on
/// its own table only, so they must leave our tables — the parent's — alone. Done there, they
/// took the parent's pending handshakes out of its driver (its event loop then never saw the
/// socket connect, and the proxy's reply was left in the stream for the program to read).
/// Descriptors of ours stay ours in the child too (its copies are close-on-exec).
fn in_vfork_child() -> bool {
    tsproxy_core::sys::in_borrowed_memory()
}

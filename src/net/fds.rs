//! What tsproxy knows about an fd number without asking the kernel: one byte per fd below
//! 65536, kept by the socket/close/dup/epoll_ctl hooks with a relaxed load (and a store only
//! when something changes). It saves the proxied-connect path syscalls; an unknown fd (0) just
//! takes the slow path, so a stale or missing entry costs speed, never correctness... except
//! where noted: a FRESH bit is trusted to mean "this socket has never been connected".
use std::sync::atomic::{AtomicU8, Ordering};

/// Descriptors the table covers: 0..N.
pub const N: usize = 65536;

/// Created by socket() as SOCK_STREAM and never passed to connect() since.
pub const FRESH_STREAM: u8 = 1;
/// Created by socket() as a datagram/raw socket (never proxied).
pub const FRESH_OTHER: u8 = 2;
/// Was added to an epoll set (EPOLL_CTL_ADD) since it was created.
pub const IN_EPOLL: u8 = 4;

/// One of tsproxy's own descriptors (the driver's epoll set, a wake-up eventfd): the program
/// never opened it, so its close/close_range/dup2 must not take it away.
pub const OURS: u8 = 8;

/// In the table of handshakes (pending, or an errno owed): the hooks look at the table — and
/// take its lock — only for such descriptors, so a read() of a file while some socket of the
/// process handshakes stays a relaxed load away from libc.
pub const PENDING: u8 = 16;

/// A datagram socket whose DNS tsproxy answers (`dns::wire`): its sends and receives go
/// through that module.
pub const DNS: u8 = 32;

/// A datagram socket relayed through a SOCKS5 UDP association (`net::udp`): its sends to
/// proxied destinations and all its receives go through that module.
pub const UDP: u8 = 64;

static FDS: [AtomicU8; N] = [const { AtomicU8::new(0) }; N];

fn slot(fd: i32) -> Option<&'static AtomicU8> {
    (fd >= 0).then(|| FDS.get(fd as usize)).flatten()
}

pub fn get(fd: i32) -> u8 {
    slot(fd).map_or(0, |s| s.load(Ordering::Relaxed))
}

/// A new socket from socket(2).
pub fn created(fd: i32, ty: i32) {
    if let Some(s) = slot(fd) {
        let t = ty & 0xf;
        s.store(if t == libc::SOCK_STREAM { FRESH_STREAM } else { FRESH_OTHER }, Ordering::Relaxed);
    }
}

/// The fd number no longer means what we knew (close, or the target of dup2/dup3).
pub fn forget(fd: i32) {
    if let Some(s) = slot(fd) {
        if s.load(Ordering::Relaxed) != 0 {
            s.store(0, Ordering::Relaxed);
        }
    }
}

/// The program's close_range: forget what we knew of its descriptors in the range — not of
/// ours, which the hook then closes the range around (clearing their mark first made them look
/// like the program's, and the driver's epoll set and eventfds were closed under it).
pub fn forget_range(first: u32, last: u32) {
    let hi = (last as usize).min(N - 1);
    for s in FDS.iter().take(hi + 1).skip(first as usize) {
        let b = s.load(Ordering::Relaxed);
        if b != 0 && b & OURS == 0 {
            s.store(0, Ordering::Relaxed);
        }
    }
}

/// `new` is a duplicate of `old`: same socket, but no epoll registration of its own.
pub fn duplicated(old: i32, new: i32) {
    if let Some(s) = slot(new) {
        s.store(get(old) & !IN_EPOLL, Ordering::Relaxed);
    }
}

/// connect() was called: the socket is no longer fresh.
pub fn connecting(fd: i32) {
    if let Some(s) = slot(fd) {
        let b = s.load(Ordering::Relaxed);
        if b & (FRESH_STREAM | FRESH_OTHER) != 0 {
            s.store(b & IN_EPOLL, Ordering::Relaxed);
        }
    }
}

pub fn added_to_epoll(fd: i32) {
    if let Some(s) = slot(fd) {
        let b = s.load(Ordering::Relaxed);
        if b & IN_EPOLL == 0 {
            s.store(b | IN_EPOLL, Ordering::Relaxed);
        }
    }
}

pub fn is_ours(fd: i32) -> bool {
    get(fd) & OURS != 0
}

/// Move a descriptor of ours out of the program's way: close-on-exec, in the top quarter of the
/// program's descriptor limit (the program's own descriptors grow from the bottom), and marked
/// so that the program's close() cannot take it.
pub fn move_high(fd: i32) -> i32 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    let soft = match tsproxy_core::syscall!(SYS_getrlimit, libc::RLIMIT_NOFILE, &mut lim as *mut libc::rlimit) {
        Ok(_) => lim.rlim_cur.min(N as u64) as i32,
        Err(_) => 1024,
    };
    // The top quarter of the range: room for one wake-up eventfd per thread of a busy program
    // (64 threads waiting at once must not push one down among the program's own numbers).
    let base = (soft - soft / 4).max(3);
    let moved = match tsproxy_core::syscall!(SYS_fcntl, fd, libc::F_DUPFD_CLOEXEC, base) {
        Ok(n) => {
            let _ = tsproxy_core::syscall!(SYS_close, fd);
            n as i32
        }
        Err(_) => fd,
    };
    if let Some(s) = slot(moved) {
        s.store(OURS, Ordering::Relaxed);
    }
    moved
}

/// Close a descriptor of ours.
pub fn release_ours(fd: i32) {
    if let Some(s) = slot(fd) {
        s.store(0, Ordering::Relaxed);
    }
    let _ = tsproxy_core::syscall!(SYS_close, fd);
}

/// Our descriptors within [first, last] (close_range must go around them).
pub fn ours_in(first: u32, last: u32) -> Vec<u32> {
    let hi = (last as usize).min(N - 1);
    if (first as usize) > hi {
        return Vec::new();
    }
    ((first as usize)..=hi).filter(|&fd| FDS[fd].load(Ordering::Relaxed) & OURS != 0).map(|fd| fd as u32).collect()
}

/// Bumped when the program dup2()s over a descriptor of ours: every thread then makes a new
/// wake-up eventfd (the old number is the program's now) and the driver a new epoll set.
pub static EVICTIONS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The program is about to dup2() over `fd`, one of ours: stop using that number.
pub fn evict(fd: i32) {
    crate::net::pending::table::TABLE.lock().drop_waiter(fd);
    if let Some(s) = slot(fd) {
        s.store(0, Ordering::Relaxed);
    }
    EVICTIONS.fetch_add(1, Ordering::AcqRel);
    crate::net::pending::driver::evicted(fd);
}

/// Kept by the handshake table as descriptors enter and leave it.
pub fn set_pending(fd: i32, on: bool) {
    if let Some(s) = slot(fd) {
        if on {
            s.fetch_or(PENDING, Ordering::Relaxed);
        } else {
            s.fetch_and(!PENDING, Ordering::Relaxed);
        }
    }
}

/// `fd` is a DNS socket of `dns::wire`'s.
pub fn mark_dns(fd: i32) {
    if let Some(s) = slot(fd) {
        s.fetch_or(DNS, Ordering::Relaxed);
    }
}

/// `fd` is no longer one.
pub fn unmark_dns(fd: i32) {
    if let Some(s) = slot(fd) {
        s.fetch_and(!DNS, Ordering::Relaxed);
    }
}

/// `fd` is a socket of `net::udp`'s.
pub fn mark_udp(fd: i32) {
    if let Some(s) = slot(fd) {
        let b = s.load(Ordering::Relaxed);
        if b & UDP == 0 {
            // No longer "fresh" either: connect() must not take the flag away again.
            s.store((b | UDP) & !(FRESH_STREAM | FRESH_OTHER), Ordering::Relaxed);
        }
    }
}

/// Could `fd` be in the handshake table? (Descriptors past the byte table always could.)
pub fn maybe_pending(fd: i32) -> bool {
    match slot(fd) {
        Some(s) => s.load(Ordering::Relaxed) & PENDING != 0,
        None => fd >= 0,
    }
}

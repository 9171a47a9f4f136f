//! The application's epoll registrations of a socket still handshaking: out of the kernel's
//! sets until the end (see `table::Reg`), with `epoll_ctl` answered as the kernel would.
use super::table::{Reg, TABLE};
use crate::boundary::{Bypass, Detour};
use crate::spin::SpinLock;
use libc::{c_int, epoll_event};
use tsproxy_core::{sys, Errno};

/// Epoll instances the process created (epoll_create hooks): where to look for registrations
/// made before connect().
static EPOLLS: SpinLock<Vec<i32>> = SpinLock::new(Vec::new());

pub fn lock_for_fork() {
    EPOLLS.hold_for_fork();
}

pub fn unlock_after_fork() {
    EPOLLS.release_after_fork();
}

pub fn on_epoll_create(epfd: i32) {
    if epfd < 0 {
        return;
    }
    {
        let mut e = EPOLLS.lock();
        if !e.contains(&epfd) {
            // Drop numbers that no longer name an epoll instance before growing.
            if e.len() >= 64 {
                e.retain(|&f| sys::is_epoll(f));
            }
            e.push(epfd);
        }
    }
    if super::active() {
        // A new instance on a number an old one had: registrations kept for the old one are
        // meaningless now.
        TABLE.lock().forget_epoll(epfd);
    }
}

/// Take `fd` out of every epoll set of ours it is in (registrations made before connect) and
/// return them, to be added back when the handshake ends.
pub fn take_existing(fd: i32) -> Vec<Reg> {
    let epolls: Vec<i32> = EPOLLS.lock().clone();
    let mut regs = Vec::new();
    for ep in epolls {
        // Sockets are rarely registered before connect(): ask the kernel cheaply first.
        if sys::epoll_has(ep, fd) == Some(false) {
            continue;
        }
        for (tfd, events, data) in sys::epoll_registrations(ep) {
            if tfd == fd && sys::epoll_ctl(ep, libc::EPOLL_CTL_DEL, fd, 0, 0).is_ok() {
                regs.push(Reg { epfd: ep, fd, events, data });
            }
        }
    }
    regs
}

/// epoll_ctl on a socket still handshaking: answered from the registrations kept aside, with
/// the kernel's errors. Bypass: not ours.
///
/// `ev` is read without trusting it (a bad pointer is EFAULT, as from the kernel).
pub fn epoll_ctl(epfd: i32, op: c_int, fd: i32, ev: *mut epoll_event) -> Detour<c_int> {
    let mut t = TABLE.lock();
    let Some(slot) = super::pending_slot(&mut t, fd) else { return Detour::Bypass(Bypass::NotOurs) };
    let Some(c) = t.conn(slot) else { return Detour::Bypass(Bypass::NotOurs) };
    // The kernel copies the event first and answers EFAULT for memory it cannot read (NULL
    // included); so do we, without ever faulting on the caller's pointer.
    let app = if op == libc::EPOLL_CTL_ADD || op == libc::EPOLL_CTL_MOD {
        match read_event(ev) {
            Some(e) => Some(e),
            None => return Detour::Fail(Errno(libc::EFAULT)),
        }
    } else {
        None
    };
    let excl = libc::EPOLLEXCLUSIVE as u32;
    // EPOLLEXCLUSIVE rules (fs/eventpoll.c): never with MOD, and with ADD only beside these
    // bits. The kernel refuses such a call before it looks at any registration, so it may
    // answer it (it registers nothing and cannot tell about the socket).
    let ok_with_excl = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLWAKEUP | libc::EPOLLET) as u32 | excl;
    if let Some(e) = app {
        if e.events & excl != 0 && (op == libc::EPOLL_CTL_MOD || e.events & !ok_with_excl != 0) {
            return Detour::Bypass(Bypass::NotApplicable);
        }
    }
    let aside = c.regs.iter().position(|r| r.epfd == epfd && r.fd == fd);
    // The kernel's checks without telling it anything it could report: deleting a registration
    // that does not exist fails with ENOENT on a valid pair, and with the kernel's own errno
    // (EBADF, EINVAL, EPERM) otherwise. A registration that did exist (made behind our back)
    // is taken aside like the others.
    let probe = || -> Result<bool, Errno> {
        match sys::epoll_ctl(epfd, libc::EPOLL_CTL_DEL, fd, 0, 0) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(Errno::of(&e)),
        }
    };
    let always = (libc::EPOLLERR | libc::EPOLLHUP) as u32;
    match (op, app, aside) {
        (libc::EPOLL_CTL_ADD, Some(_), Some(_)) => Detour::Fail(Errno(libc::EEXIST)),
        (libc::EPOLL_CTL_ADD, Some(e), None) => match probe() {
            Ok(existed) => {
                c.regs.push(Reg { epfd, fd, events: e.events | always, data: e.u64 });
                if existed {
                    Detour::Fail(Errno(libc::EEXIST))
                } else {
                    Detour::Done(0)
                }
            }
            Err(e) => Detour::Fail(e),
        },
        // A registration made with EPOLLEXCLUSIVE cannot be modified.
        (libc::EPOLL_CTL_MOD, Some(_), Some(i)) if c.regs.get(i).is_some_and(|r| r.events & excl != 0) => Detour::Fail(Errno(libc::EINVAL)),
        (libc::EPOLL_CTL_MOD, Some(e), Some(i)) => {
            if let Some(r) = c.regs.get_mut(i) {
                r.events = e.events | always;
                r.data = e.u64;
            }
            Detour::Done(0)
        }
        (libc::EPOLL_CTL_MOD, Some(e), None) => match probe() {
            Ok(true) => {
                c.regs.push(Reg { epfd, fd, events: e.events | always, data: e.u64 });
                Detour::Done(0)
            }
            Ok(false) => Detour::Fail(Errno(libc::ENOENT)),
            Err(e) => Detour::Fail(e),
        },
        (libc::EPOLL_CTL_DEL, _, Some(i)) => {
            c.regs.remove(i);
            Detour::Done(0)
        }
        // Anything else (a NULL event, an unknown op, a DEL of nothing kept): the kernel
        // answers, and it cannot report anything about this socket from there.
        _ => Detour::Bypass(Bypass::NotApplicable),
    }
}

/// The application's epoll_event at `ev`, copied with `process_vm_readv` (None where the kernel
/// would answer EFAULT: NULL or unreadable memory).
fn read_event(ev: *const epoll_event) -> Option<epoll_event> {
    let n = std::mem::size_of::<epoll_event>();
    let b = sys::read_datagram(sys::pid(), sys::DatagramAt::Buf(ev as u64, n as u64))?;
    if b.len() != n {
        return None;
    }
    // SAFETY: b holds exactly size_of::<epoll_event>() bytes, and any bytes are a valid
    // epoll_event (two integers); packed on x86_64, so read unaligned.
    Some(unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<epoll_event>()) })
}

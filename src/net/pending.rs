//! Nonblocking connects to proxied destinations: connect() returns EINPROGRESS at once and the
//! handshake continues without the caller, while the socket looks exactly like a kernel socket
//! in SYN_SENT.
//!
//! Design (no thread, no extra descriptor): the handshake is driven from the hooks the
//! application calls anyway while it waits — epoll_wait/epoll_pwait/epoll_pwait2, poll/ppoll,
//! select/pselect — and from any call on the socket itself (read, write, SO_ERROR, connect,
//! getpeername...). While it runs:
//! - each epoll registration of the socket (found in /proc/self/fdinfo of the epoll sets we saw
//!   created, or made later through epoll_ctl) is switched to *our* interest (EPOLLIN or EPOLLOUT,
//!   whatever the handshake waits for) with a token as data; the application's events and data
//!   are kept aside. A token event advances the handshake and is never shown to the application.
//! - poll/select ask the kernel for our interest on that fd and hide its revents.
//! - read/write/send/recv answer EAGAIN, getpeername ENOTCONN, connect EALREADY, SO_ERROR 0.
//!
//! When the handshake ends the application's registrations are put back with EPOLL_CTL_MOD,
//! which makes the kernel report the socket's real readiness (a connected socket: EPOLLOUT),
//! and the wait is re-polled so the application sees it in the same call: level-, edge-triggered
//! and one-shot registrations behave as the kernel makes them. A failed handshake leaves the
//! socket refused for real (it is connected to port 0 on loopback, which answers RST), so
//! EPOLLERR/POLLERR/SO_ERROR come from the kernel; an errno other than ECONNREFUSED is reported
//! once by SO_ERROR (or a second connect) instead.
//!
//! The fast path: every hook added for this checks `ACTIVE` (one relaxed load) and calls libc
//! directly when no handshake is pending in the process.
use crate::ffi::Ret;
use crate::guard::Guard;
use crate::log::log;
use crate::state;
use libc::{c_int, epoll_event, pollfd};
use crate::spin::SpinLock;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tsproxy_core::sys;
use tsproxy_core::tunnel::{Handshake, Step};
use tsproxy_core::Target;

/// Sockets in the table: pending handshakes, and failures whose errno is still to be reported.
pub static ACTIVE: AtomicUsize = AtomicUsize::new(0);

pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed) != 0
}

const TAG: u64 = 0x7473_7078; // "tspx"

fn token(fd: i32) -> u64 {
    TAG << 32 | fd as u32 as u64
}

fn token_fd(d: u64) -> Option<i32> {
    (d >> 32 == TAG).then_some(d as u32 as i32)
}

struct Reg {
    epfd: i32,
    fd: i32,
    events: u32,
    data: u64,
}

struct Conn {
    hs: Handshake<'static>,
    family: i32,
    fds: Vec<i32>,
    regs: Vec<Reg>,
    want: i16,
    result: Option<Result<(), i32>>,
    /// An errno other than ECONNREFUSED, for SO_ERROR or a second connect(), once.
    sticky: Option<i32>,
    addr: libc::sockaddr_storage,
    len: libc::socklen_t,
    t0: Instant,
}

struct Table {
    fds: BTreeMap<i32, usize>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    live: usize,
}

static TABLE: SpinLock<Table> = SpinLock::new(Table { fds: BTreeMap::new(), conns: Vec::new(), free: Vec::new(), live: 0 });
/// Epoll instances the process created (epoll_create hooks): where to look for registrations
/// made before connect().
static EPOLLS: SpinLock<Vec<i32>> = SpinLock::new(Vec::new());

pub fn lock_for_fork() {
    TABLE.hold_for_fork();
    EPOLLS.hold_for_fork();
}

pub fn unlock_after_fork() {
    EPOLLS.release_after_fork();
    TABLE.release_after_fork();
}

fn interest(ev: i16) -> u32 {
    if ev == libc::POLLIN {
        libc::EPOLLIN as u32
    } else {
        libc::EPOLLOUT as u32
    }
}

impl Table {
    fn slot(&self, fd: i32) -> Option<usize> {
        self.fds.get(&fd).copied()
    }

    fn conn(&mut self, slot: usize) -> &mut Conn {
        self.conns[slot].as_mut().expect("live slot")
    }

    fn insert(&mut self, c: Conn) -> usize {
        let fds = c.fds.clone();
        let slot = match self.free.pop() {
            Some(i) => {
                self.conns[i] = Some(c);
                i
            }
            None => {
                self.conns.push(Some(c));
                self.conns.len() - 1
            }
        };
        for fd in fds {
            self.fds.insert(fd, slot);
        }
        self.live += 1;
        ACTIVE.store(self.live, Ordering::Relaxed);
        slot
    }

    fn remove(&mut self, slot: usize) {
        if let Some(c) = self.conns[slot].take() {
            for fd in c.fds {
                self.fds.remove(&fd);
            }
            self.free.push(slot);
            self.live -= 1;
        }
        ACTIVE.store(self.live, Ordering::Relaxed);
    }

    /// Advance the handshake. True when it has ended (and was finalized).
    fn step(&mut self, slot: usize) -> bool {
        self.step_hinted(slot, false)
    }

    /// `writable`: the wait that woke us saw the socket writable with no error.
    fn step_hinted(&mut self, slot: usize, writable: bool) -> bool {
        let c = self.conn(slot);
        if writable && c.want == libc::POLLOUT {
            c.hs.writable_hint();
        }
        if c.result.is_none() {
            match c.hs.resume(&mut |l, a| crate::log::write(l, a)) {
                Step::Want(ev) => {
                    if ev != c.want {
                        c.want = ev;
                        for r in &c.regs {
                            let _ = sys::epoll_ctl(r.epfd, libc::EPOLL_CTL_MOD, r.fd, interest(ev), token(r.fd));
                        }
                    }
                    return false;
                }
                Step::Done(r) => c.result = Some(r.map(|_| ()).map_err(|e| e.raw())),
            }
            self.finalize(slot);
        }
        true
    }

    /// The handshake ended: make the socket's state the kernel's, give the application its
    /// epoll registrations back, and forget the socket unless an errno is still owed.
    fn finalize(&mut self, slot: usize) {
        let c = self.conn(slot);
        let us = c.t0.elapsed().as_micros();
        let fd = c.fds[0];
        match c.result {
            Some(Ok(())) => {
                for &f in &c.fds {
                    // SAFETY: addr holds len bytes (copied from the application's connect).
                    unsafe { super::tunnels::record(f, std::ptr::addr_of!(c.addr).cast(), c.len) };
                }
                log!(Debug, "connect fd={fd} {} -> proxy {} -> ok {us}us (nonblocking)", c.hs.target(), c.hs.via().map(|a| a.to_string()).unwrap_or_default());
            }
            Some(Err(e)) => {
                make_refused(fd, c.family);
                if e != libc::ECONNREFUSED {
                    c.sticky = Some(e);
                }
                log!(Info, "connect fd={fd} {} -> {} {us}us (nonblocking)", c.hs.target(), std::io::Error::from_raw_os_error(e));
            }
            None => return,
        }
        for r in c.regs.drain(..) {
            let _ = sys::epoll_ctl(r.epfd, libc::EPOLL_CTL_MOD, r.fd, r.events, r.data);
        }
        if c.sticky.is_none() {
            self.remove(slot);
        }
    }
}

/// Put the (disconnected) socket into the kernel's own "connection refused" state: a connect to
/// port 0 on loopback is answered with RST, which sets the socket error, EPOLLERR and EPOLLHUP
/// exactly as a refused dial does.
fn make_refused(fd: i32, family: i32) {
    let lo = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let Some((sa, len)) = tsproxy_core::sockaddr::encode(lo, family) else { return };
    let fl = sys::fcntl_getfl(fd).unwrap_or(libc::O_NONBLOCK);
    if fl & libc::O_NONBLOCK == 0 {
        let _ = sys::fcntl_setfl(fd, fl | libc::O_NONBLOCK);
    }
    let _ = sys::connect_raw(fd, (&sa as *const libc::sockaddr_storage).cast(), len);
    let _ = sys::poll1(fd, libc::POLLOUT, 100);
    if fl & libc::O_NONBLOCK == 0 {
        let _ = sys::fcntl_setfl(fd, fl);
    }
}

/// connect() of a nonblocking socket to a proxied destination: start the handshake.
///
/// # Safety
/// `addr` holds `len` readable bytes.
pub unsafe fn start(fd: i32, family: i32, target: Target, addr: *const libc::sockaddr, len: libc::socklen_t, known: u8) -> Ret<c_int> {
    let st = state::get();
    let Some(cfg) = &st.cfg else { return Ret::err(-1, libc::ECONNREFUSED) };
    let mut hs = Handshake::new(fd, family, st.upstreams(), target, cfg.pipeline);
    let t0 = Instant::now();
    let want = match hs.resume(&mut |l, a| crate::log::write(l, a)) {
        Step::Want(ev) => ev,
        Step::Done(Ok(via)) => {
            // SAFETY: forwarded contract.
            unsafe { super::tunnels::record(fd, addr, len) };
            log!(Debug, "connect fd={fd} {} -> proxy {via} -> ok at once", hs.target());
            return Ret::ok(0);
        }
        Step::Done(Err(tsproxy_core::Errno(libc::EAFNOSUPPORT | libc::EINVAL))) if super::connect::family_mismatch(fd, family) => {
            // SAFETY: forwarded contract.
            return Ret::passed(unsafe { kernel_connect(fd, addr, len) });
        }
        Step::Done(Err(e)) => return Ret::err(-1, e.raw()),
    };
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut st_addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let n = (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: addr has len readable bytes; st_addr has room for n.
    unsafe { std::ptr::copy_nonoverlapping(addr.cast::<u8>(), std::ptr::addr_of_mut!(st_addr).cast::<u8>(), n) };
    crate::fork::arm();
    let mut regs = Vec::new();
    // A fresh socket never added to an epoll set has no registration to find.
    let fresh_unregistered = known & (super::fds::FRESH_STREAM | super::fds::IN_EPOLL) == super::fds::FRESH_STREAM;
    let epolls: Vec<i32> = if fresh_unregistered { Vec::new() } else { EPOLLS.lock().clone() };
    for ep in epolls {
        // Sockets are rarely registered before connect(): ask the kernel cheaply first.
        if sys::epoll_has(ep, fd) == Some(false) {
            continue;
        }
        for (tfd, events, data) in sys::epoll_registrations(ep) {
            if tfd == fd && sys::epoll_ctl(ep, libc::EPOLL_CTL_MOD, fd, interest(want), token(fd)).is_ok() {
                regs.push(Reg { epfd: ep, fd, events, data });
            }
        }
    }
    let conn = Conn { hs, family, fds: vec![fd], regs, want, result: None, sticky: None, addr: st_addr, len: n as libc::socklen_t, t0 };
    TABLE.lock().insert(conn);
    Ret::err(-1, libc::EINPROGRESS)
}

/// Let the kernel judge an address that does not fit the socket's family (it sends nothing).
///
/// # Safety
/// `addr` holds `len` readable bytes.
unsafe fn kernel_connect(fd: i32, addr: *const libc::sockaddr, len: libc::socklen_t) -> c_int {
    match sys::connect_raw(fd, addr, len) {
        Ok(()) => 0,
        Err(e) => {
            sys::set_errno(sys::code(&e));
            -1
        }
    }
}

/// Run `f` on the table entry of `fd` with the handshake advanced, if `fd` is ours.
fn with_conn<T>(fd: i32, f: impl FnOnce(&mut Table, usize, bool) -> T) -> Option<T> {
    if !active() {
        return None;
    }
    let mut t = TABLE.lock();
    let slot = t.slot(fd)?;
    let done = t.step(slot);
    Some(f(&mut t, slot, done))
}

/// connect() on a socket whose handshake we run. None: not ours.
pub fn reconnect(fd: i32) -> Option<Ret<c_int>> {
    with_conn(fd, |t, slot, done| {
        if !done {
            return Ret::err(-1, libc::EALREADY);
        }
        match t.conns[slot].as_mut().and_then(|c| c.sticky.take()) {
            Some(e) => {
                let _ = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR);
                t.remove(slot);
                Ret::err(-1, e)
            }
            None => Ret::err(-1, libc::EISCONN),
        }
    })
}

/// getsockopt(SO_ERROR): Some(value) when we answer.
pub fn so_error(fd: i32) -> Option<i32> {
    with_conn(fd, |t, slot, done| {
        if !done {
            return Some(0);
        }
        let e = t.conns[slot].as_mut().and_then(|c| c.sticky.take());
        if e.is_some() {
            // Reported instead of the socket's own ECONNREFUSED: consume that one, so the
            // error is reported exactly once.
            let _ = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR);
            t.remove(slot);
        }
        e
    })
    .flatten()
}

/// Calls that need a connected socket (read, write, send, recv, getpeername...): Some(errno)
/// while the handshake is still running on a nonblocking socket. A socket the application made
/// blocking meanwhile waits for the handshake, as the kernel would make it wait.
pub fn gate(fd: i32, pending_errno: i32) -> Option<i32> {
    if !active() {
        return None;
    }
    let _g = Guard::enter()?;
    let deadline = Instant::now() + state::get().routes().timeout;
    loop {
        let want = {
            let mut t = TABLE.lock();
            let slot = t.slot(fd)?;
            if t.step(slot) {
                return None;
            }
            let fl = sys::fcntl_getfl(fd).unwrap_or(libc::O_NONBLOCK);
            if fl & libc::O_NONBLOCK != 0 {
                return Some(pending_errno);
            }
            if Instant::now() >= deadline {
                let c = t.conn(slot);
                let _ = c.hs.abort(tsproxy_core::Errno(libc::ETIMEDOUT));
                c.result = Some(Err(libc::ETIMEDOUT));
                t.finalize(slot);
                return None;
            }
            t.conn(slot).want
        };
        let _ = sys::poll1(fd, want, 100);
    }
}

/// close(): forget `fd` (the kernel drops its epoll registrations with it).
pub fn on_close(fd: i32) {
    if !active() {
        return;
    }
    let Some(_g) = Guard::enter() else { return };
    let mut t = TABLE.lock();
    let Some(slot) = t.slot(fd) else { return };
    t.fds.remove(&fd);
    let c = t.conn(slot);
    c.fds.retain(|&f| f != fd);
    c.regs.retain(|r| r.fd != fd);
    if c.fds.is_empty() {
        t.remove(slot);
    }
}

pub fn on_close_range(first: u32, last: u32) {
    if !active() {
        return;
    }
    let fds: Vec<i32> = TABLE.lock().fds.range(first.min(i32::MAX as u32) as i32..=last.min(i32::MAX as u32) as i32).map(|(&f, _)| f).collect();
    for fd in fds {
        on_close(fd);
    }
}

/// dup/dup2/dup3/F_DUPFD: `new` refers to the same socket as `old`.
pub fn on_dup(old: i32, new: i32) {
    if !active() || old == new || new < 0 {
        return;
    }
    on_close(new);
    let Some(_g) = Guard::enter() else { return };
    let mut t = TABLE.lock();
    let Some(slot) = t.slot(old) else { return };
    t.conn(slot).fds.push(new);
    t.fds.insert(new, slot);
}

pub fn on_epoll_create(epfd: i32) {
    if epfd < 0 {
        return;
    }
    let mut e = EPOLLS.lock();
    if !e.contains(&epfd) {
        // Drop numbers that no longer name an epoll instance before growing.
        if e.len() >= 64 {
            e.retain(|&f| sys::is_epoll(f));
        }
        e.push(epfd);
    }
}

/// epoll_ctl on a socket whose handshake we run: keep the application's registration aside and
/// register our interest instead. None: not ours, call libc.
pub fn epoll_ctl(epfd: i32, op: c_int, fd: i32, ev: *mut epoll_event) -> Option<Ret<c_int>> {
    if !active() {
        return None;
    }
    let _g = Guard::enter()?;
    let mut t = TABLE.lock();
    let slot = t.slot(fd)?;
    let c = t.conn(slot);
    if c.result.is_some() {
        return None;
    }
    // SAFETY: ev is null or the application's valid epoll_event (epoll_ctl's contract); the
    // struct is packed on x86_64, so read it unaligned.
    let app = (!ev.is_null()).then(|| unsafe { std::ptr::read_unaligned(ev) });
    let r = match (op, app) {
        (libc::EPOLL_CTL_ADD, Some(e)) => sys::epoll_ctl(epfd, op, fd, interest(c.want), token(fd)).map(|_| {
            c.regs.push(Reg { epfd, fd, events: e.events | (libc::EPOLLERR | libc::EPOLLHUP) as u32, data: e.u64 });
        }),
        (libc::EPOLL_CTL_MOD, Some(e)) => match c.regs.iter_mut().find(|r| r.epfd == epfd && r.fd == fd) {
            Some(r) => {
                r.events = e.events | (libc::EPOLLERR | libc::EPOLLHUP) as u32;
                r.data = e.u64;
                Ok(())
            }
            None => sys::epoll_ctl(epfd, op, fd, interest(c.want), token(fd)).map(|_| {
                c.regs.push(Reg { epfd, fd, events: e.events, data: e.u64 });
            }),
        },
        (libc::EPOLL_CTL_DEL, _) => sys::epoll_ctl(epfd, op, fd, 0, 0).map(|_| c.regs.retain(|r| !(r.epfd == epfd && r.fd == fd))),
        _ => return None,
    };
    Some(match r {
        Ok(()) => Ret::ok(0),
        Err(e) => Ret::err(-1, sys::code(&e)),
    })
}

fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// Handle our token events in `evs[..n]`: advance those handshakes and drop the events.
/// Returns (events kept, whether any handshake ended).
///
/// # Safety
/// `evs` holds `n` initialized events.
unsafe fn filter_epoll(evs: *mut epoll_event, n: usize) -> (usize, bool) {
    let mut kept = 0;
    let mut ended = false;
    for i in 0..n {
        // SAFETY: i < n initialized entries; packed struct read unaligned.
        let e = unsafe { std::ptr::read_unaligned(evs.add(i)) };
        match token_fd(e.u64) {
            Some(fd) => {
                let mut t = TABLE.lock();
                if let Some(slot) = t.slot(fd) {
                    let ev = e.events;
                    let writable = ev & libc::EPOLLOUT as u32 != 0 && ev & (libc::EPOLLERR | libc::EPOLLHUP) as u32 == 0;
                    ended |= t.step_hinted(slot, writable);
                }
            }
            None => {
                // SAFETY: kept <= i < n.
                unsafe { std::ptr::write_unaligned(evs.add(kept), e) };
                kept += 1;
            }
        }
    }
    (kept, ended)
}

/// epoll_wait / epoll_pwait / epoll_pwait2 while handshakes are pending. `wait(buf, max,
/// timeout)` is the real call (None: no timeout).
pub fn wait_epoll(evs: *mut epoll_event, max: c_int, timeout: Option<Duration>, wait: &dyn Fn(*mut epoll_event, c_int, Option<Duration>) -> c_int) -> Ret<c_int> {
    let Some(_g) = Guard::enter() else { return Ret::passed(wait(evs, max, timeout)) };
    if max <= 0 || evs.is_null() {
        return Ret::passed(wait(evs, max, timeout));
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let n = wait(evs, max, remaining(deadline));
        if n <= 0 {
            return Ret::passed(n);
        }
        // SAFETY: the kernel filled n entries.
        let (mut kept, ended) = unsafe { filter_epoll(evs, n as usize) };
        if ended && (kept as c_int) < max {
            // The application's registrations were just restored: collect what the kernel
            // now reports for them (a connected socket: EPOLLOUT) in this same call.
            // SAFETY: kept < max, so the tail is inside the caller's array.
            let tail = unsafe { evs.add(kept) };
            let m = wait(tail, max - kept as c_int, Some(Duration::ZERO));
            if m > 0 {
                // SAFETY: the kernel filled m entries of the tail.
                kept += unsafe { filter_epoll(tail, m as usize) }.0;
            }
        }
        if kept > 0 || remaining(deadline).is_some_and(|r| r.is_zero()) {
            return Ret::ok(kept as c_int);
        }
    }
}

/// poll / ppoll (and select, through it) while handshakes are pending.
pub fn wait_poll(fds: *mut pollfd, nfds: libc::nfds_t, timeout: Option<Duration>, wait: &dyn Fn(*mut pollfd, libc::nfds_t, Option<Duration>) -> c_int) -> Ret<c_int> {
    let Some(_g) = Guard::enter() else { return Ret::passed(wait(fds, nfds, timeout)) };
    if fds.is_null() || nfds == 0 {
        return Ret::passed(wait(fds, nfds, timeout));
    }
    // SAFETY: poll's contract: fds holds nfds entries.
    let app = unsafe { std::slice::from_raw_parts_mut(fds, nfds as usize) };
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        // Which entries are pending sockets, and what the handshake waits for on each.
        let mut ours: Vec<(usize, i16)> = Vec::new();
        {
            let mut t = TABLE.lock();
            for (i, p) in app.iter().enumerate() {
                if let Some(slot) = t.slot(p.fd) {
                    if !t.step(slot) {
                        ours.push((i, t.conn(slot).want));
                    }
                }
            }
        }
        if ours.is_empty() {
            return Ret::passed(wait(fds, nfds, remaining(deadline)));
        }
        let mut copy: Vec<pollfd> = app.to_vec();
        for &(i, want) in &ours {
            copy[i].events = want;
        }
        let n = wait(copy.as_mut_ptr(), nfds, remaining(deadline));
        if n < 0 {
            return Ret::passed(n);
        }
        for &(i, _) in &ours {
            if copy[i].revents == 0 {
                continue;
            }
            let fd = copy[i].fd;
            let rev = copy[i].revents;
            let writable = rev & libc::POLLOUT != 0 && rev & (libc::POLLERR | libc::POLLHUP) == 0;
            let ended = {
                let mut t = TABLE.lock();
                t.slot(fd).map(|s| t.step_hinted(s, writable)).unwrap_or(true)
            };
            copy[i].revents = if ended {
                // The socket's own state now: what the kernel reports for the app's events.
                let asked = app[i].events;
                sys::poll1(fd, asked, 0).unwrap_or(0) & (asked | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL)
            } else {
                0
            };
        }
        let mut count = 0;
        for (a, c) in app.iter_mut().zip(&copy) {
            a.revents = c.revents;
            count += (c.revents != 0) as c_int;
        }
        if count > 0 || remaining(deadline).is_some_and(|r| r.is_zero()) {
            return Ret::ok(count);
        }
    }
}

/// Is any fd below `nfds` in these sets one of ours? (select's fast check)
///
/// # Safety
/// The sets are null or valid fd_sets.
pub unsafe fn select_touches(nfds: c_int, sets: [*mut libc::fd_set; 3]) -> bool {
    if !active() {
        return false;
    }
    let t = TABLE.lock();
    t.fds.range(0..nfds.max(0)).any(|(&fd, _)| {
        sets.iter().any(|s| {
            // SAFETY: s is a valid fd_set (contract) and fd < nfds <= FD_SETSIZE is checked by
            // the caller.
            !s.is_null() && unsafe { libc::FD_ISSET(fd, *s) }
        })
    })
}

/// select/pselect through poll semantics (as the kernel defines select's readiness).
///
/// # Safety
/// select's contract.
pub unsafe fn select(nfds: c_int, r: *mut libc::fd_set, w: *mut libc::fd_set, x: *mut libc::fd_set, timeout: Option<Duration>, sigmask: *const libc::sigset_t) -> Ret<c_int> {
    let mut pfds = Vec::new();
    for fd in 0..nfds.clamp(0, libc::FD_SETSIZE as c_int) {
        // SAFETY: non-null sets are valid (contract); fd < FD_SETSIZE.
        let isset = |s: *mut libc::fd_set| !s.is_null() && unsafe { libc::FD_ISSET(fd, s) };
        let ev = if isset(r) { libc::POLLIN } else { 0 } | if isset(w) { libc::POLLOUT } else { 0 } | if isset(x) { libc::POLLPRI } else { 0 };
        if ev != 0 {
            pfds.push(pollfd { fd, events: ev, revents: 0 });
        }
    }
    let ppoll = |p: *mut pollfd, n: libc::nfds_t, t: Option<Duration>| -> c_int {
        let ts = t.map(|d| libc::timespec { tv_sec: d.as_secs() as _, tv_nsec: d.subsec_nanos() as _ });
        let tsp = ts.as_ref().map(|t| t as *const libc::timespec).unwrap_or(std::ptr::null());
        match tsproxy_core::syscall!(SYS_ppoll, p, n, tsp, sigmask, if sigmask.is_null() { 0 } else { 8 }) {
            Ok(v) => v as c_int,
            Err(e) => {
                sys::set_errno(sys::code(&e));
                -1
            }
        }
    };
    let res = wait_poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout, &ppoll);
    if res.val < 0 {
        return res;
    }
    if pfds.iter().any(|p| p.revents & libc::POLLNVAL != 0) {
        return Ret::err(-1, libc::EBADF);
    }
    let mut count = 0;
    for s in [r, w, x] {
        if !s.is_null() {
            // SAFETY: a valid fd_set (contract).
            unsafe { libc::FD_ZERO(s) };
        }
    }
    for p in &pfds {
        let mut set = |s: *mut libc::fd_set, asked: i16, got: i16| {
            if !s.is_null() && p.events & asked != 0 && p.revents & got != 0 {
                // SAFETY: valid set, fd < FD_SETSIZE.
                unsafe { libc::FD_SET(p.fd, s) };
                count += 1;
            }
        };
        set(r, libc::POLLIN, libc::POLLIN | libc::POLLHUP | libc::POLLERR);
        set(w, libc::POLLOUT, libc::POLLOUT | libc::POLLERR);
        set(x, libc::POLLPRI, libc::POLLPRI);
    }
    Ret::ok(count)
}

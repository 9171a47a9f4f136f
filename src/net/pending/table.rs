//! The table of proxied connects still in progress (or whose errno is still owed), keyed by
//! fd and checked against the socket's identity (inode) before anything is trusted.
//!
//! Rules that keep it safe (each enforced here, not left to callers):
//! - Nothing under the lock can panic: lookups return `Option`, slots are reached with `get`,
//!   never indexed; the guard's `Drop` releases the lock even if a bug panicked anyway.
//! - Nothing under the lock blocks: only nonblocking syscalls.
//! - An fd number is trusted only while `fstat(fd).st_ino` is the socket's: a socket closed
//!   behind our back (`syscall(SYS_close)`, `fclose(fdopen(s))`) and a new one on the same
//!   number are never confused.
use crate::net::tunnels;
use crate::spin::SpinLock;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use tsproxy_core::sys;
use tsproxy_core::tunnel::{Handshake, Step};
use tsproxy_core::Errno;

/// Sockets in the table: pending handshakes, and failures whose errno is still to be reported.
/// Every hook checks this first (one relaxed load) and goes straight to libc when it is 0.
pub static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// An epoll registration of the application's, kept aside while the handshake runs: the socket
/// is in none of the application's epoll sets until it ends (the kernel would report nothing
/// for a socket in SYN_SENT either), so no thread — not even one already blocked in
/// `epoll_wait` — can be woken for it with data that is not the application's.
#[derive(Clone, Copy)]
pub struct Reg {
    pub epfd: i32,
    pub fd: i32,
    pub events: u32,
    pub data: u64,
}

/// Who advances a handshake.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// The driver thread (nonblocking connects).
    Thread,
    /// The thread blocked in connect() (blocking connects, TCP Fast Open), in its own waits.
    Inline,
}

pub struct Conn {
    pub hs: Handshake<'static>,
    /// The fd the handshake runs on (the one connect() was called with).
    pub fd: i32,
    pub family: i32,
    /// The socket's inode: its identity.
    pub ino: u64,
    /// Every fd number of ours that refers to this socket (dup/dup2/F_DUPFD add to it).
    pub fds: Vec<i32>,
    pub regs: Vec<Reg>,
    pub want: i16,
    pub driver: Driver,
    /// The process that runs the handshake: after fork the child never drives or touches the
    /// driver's epoll set (the parent does; both share the socket as with a kernel connect).
    pub owner: i32,
    pub result: Option<Result<(), Errno>>,
    /// An errno other than ECONNREFUSED, reported once by SO_ERROR or a second connect().
    pub sticky: Option<Errno>,
    pub addr: libc::sockaddr_storage,
    pub len: libc::socklen_t,
    pub t0: Instant,
    pub deadline: Instant,
    /// Wake-up eventfds of threads waiting (poll/select/blocking I/O) for the end.
    pub waiters: Vec<i32>,
    /// File status flags to put back at the end (a blocking socket runs its handshake
    /// nonblocking).
    pub restore_flags: Option<i32>,
    /// SO_RCVTIMEO of a blocking socket: the limit of each wait for the proxy's answer.
    pub read_cap: Option<std::time::Duration>,
    /// Unique id, part of the driver's epoll token.
    pub id: u32,
    /// Registered in the driver's epoll set.
    pub in_driver: bool,
    /// Its outcome, shared with fork children (see `shared`).
    pub shared: Option<super::shared::Word>,
    /// The placeholder's slot and port (a connect by name), for `net::siblings`.
    pub name_key: Option<(u32, u16)>,
    /// Not started: the other family's connect to the same name and port was in flight (see
    /// `held`). Some(when) once that one connected: start then, unless closed before.
    pub held: Option<Option<Instant>>,
    /// Abandoned in flight by the program and kept (see `adopt`): `fd` is a descriptor of
    /// ours (a dup of the closed one) until this instant, for the other family's connect to
    /// the same name and port to take over.
    pub kept: Option<Instant>,
}

pub struct Table {
    fds: BTreeMap<i32, usize>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    live: usize,
    next_id: u32,
}

pub static TABLE: SpinLock<Table> = SpinLock::new(Table { fds: BTreeMap::new(), conns: Vec::new(), free: Vec::new(), live: 0, next_id: 1 });

pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed) != 0
}

/// The socket's inode, or None if `fd` is not open.
pub fn inode(fd: i32) -> Option<u64> {
    // SAFETY: all-zero is a valid stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    tsproxy_core::syscall!(SYS_fstat, fd, &mut st as *mut libc::stat).ok().map(|_| st.st_ino)
}

/// The driver's epoll token for a slot: tagged, so a stale one is recognised.
pub fn token(slot: usize, id: u32) -> u64 {
    (slot as u64) << 32 | id as u64
}

pub fn interest(ev: i16) -> u32 {
    if ev == libc::POLLIN {
        libc::EPOLLIN as u32
    } else {
        libc::EPOLLOUT as u32
    }
}

impl Table {
    pub fn conn(&mut self, slot: usize) -> Option<&mut Conn> {
        self.conns.get_mut(slot).and_then(Option::as_mut)
    }

    /// The slot for a token from the driver's epoll set, if it still means the same conn.
    pub fn by_token(&mut self, tok: u64) -> Option<usize> {
        let slot = (tok >> 32) as usize;
        let id = tok as u32;
        (self.conn(slot)?.id == id).then_some(slot)
    }

    /// The slot of `fd`, if it is one of ours *and still the same socket*. A stale number is
    /// forgotten on the spot. Descriptors not marked in `fds` are not looked up at all.
    pub fn lookup(&mut self, fd: i32) -> Option<usize> {
        if !crate::net::fds::maybe_pending(fd) {
            return None;
        }
        self.lookup_any(fd)
    }

    /// `lookup` without the `fds` mark (for the thread running an inline handshake, whose
    /// conn exists even if its number's mark was overwritten by a new socket).
    pub fn lookup_any(&mut self, fd: i32) -> Option<usize> {
        let slot = *self.fds.get(&fd)?;
        let ino = self.conn(slot)?.ino;
        if inode(fd) == Some(ino) {
            return Some(slot);
        }
        self.forget_fd(fd);
        None
    }

    pub fn insert(&mut self, mut c: Conn) -> usize {
        c.id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let fds = c.fds.clone();
        let slot = match self.free.pop() {
            Some(i) if i < self.conns.len() => {
                self.conns[i] = Some(c);
                i
            }
            _ => {
                self.conns.push(Some(c));
                self.conns.len() - 1
            }
        };
        if let Some(c) = self.conns.get_mut(slot).and_then(Option::as_mut) {
            c.shared = super::shared::start(slot, c.id);
        }
        for fd in fds {
            self.fds.insert(fd, slot);
            crate::net::fds::set_pending(fd, true);
        }
        self.live += 1;
        ACTIVE.store(self.live, Ordering::Relaxed);
        slot
    }

    pub fn remove(&mut self, slot: usize) -> Option<Conn> {
        let c = self.conns.get_mut(slot)?.take()?;
        for fd in &c.fds {
            if self.fds.get(fd) == Some(&slot) {
                self.fds.remove(fd);
                crate::net::fds::set_pending(*fd, false);
            }
        }
        if c.kept.is_some() {
            super::adopt::kept_gone();
        }
        self.free.push(slot);
        self.live = self.live.saturating_sub(1);
        ACTIVE.store(self.live, Ordering::Relaxed);
        Some(c)
    }

    /// `fd` no longer refers to the socket (closed, or reused). The handshake is abandoned when
    /// no fd of the process refers to the socket any more, or when its own fd went away.
    pub fn forget_fd(&mut self, fd: i32) -> Option<Conn> {
        let slot = self.fds.remove(&fd)?;
        crate::net::fds::set_pending(fd, false);
        let c = self.conn(slot)?;
        c.fds.retain(|&f| f != fd);
        c.regs.retain(|r| r.fd != fd);
        if c.fds.is_empty() || c.fd == fd {
            return self.remove(slot);
        }
        None
    }

    /// Forget the registrations kept aside for an epoll instance that is gone.
    pub fn forget_epoll(&mut self, epfd: i32) {
        for c in self.conns.iter_mut().flatten() {
            c.regs.retain(|r| r.epfd != epfd);
        }
    }

    pub fn each_conn(&mut self, mut f: impl FnMut(&mut Conn)) {
        for c in self.conns.iter_mut().flatten() {
            f(c);
        }
    }

    /// Is there a conn for which `f` holds?
    pub fn any_conn(&self, f: impl Fn(&Conn) -> bool) -> bool {
        self.conns.iter().flatten().any(f)
    }

    /// The conn of `slot` moves from descriptor `old` to `new` (the same socket: see `adopt`).
    pub fn move_fd(&mut self, old: i32, new: i32, slot: usize) {
        if self.fds.get(&old) == Some(&slot) {
            self.fds.remove(&old);
            crate::net::fds::set_pending(old, false);
        }
        self.fds.insert(new, slot);
        crate::net::fds::set_pending(new, true);
    }

    /// Slots of kept sockets (see `adopt`) of process `pid`, or of any process.
    pub fn kept_slots(&self, pid: i32) -> Vec<usize> {
        self.conns.iter().enumerate().filter_map(|(i, c)| c.as_ref().filter(|c| c.kept.is_some() && c.owner == pid).map(|_| i)).collect()
    }

    pub fn kept_slots_any(&self) -> Vec<usize> {
        self.conns.iter().enumerate().filter_map(|(i, c)| c.as_ref().filter(|c| c.kept.is_some()).map(|_| i)).collect()
    }

    pub fn add_fd(&mut self, slot: usize, fd: i32) {
        if let Some(c) = self.conn(slot) {
            c.fds.push(fd);
            self.fds.insert(fd, slot);
            crate::net::fds::set_pending(fd, true);
        }
    }

    /// fds in the table within [lo, hi].
    pub fn fds_in(&self, lo: i32, hi: i32) -> Vec<i32> {
        if lo > hi {
            return Vec::new();
        }
        self.fds.range(lo..=hi).map(|(&f, _)| f).collect()
    }

    /// Slots of conns the driver thread runs (for deadlines).
    /// (A scan: the driver calls it only when a deadline may have passed.)
    pub fn thread_slots(&self, pid: i32) -> Vec<usize> {
        self.conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().filter(|c| c.driver == Driver::Thread && c.owner == pid && c.result.is_none()).map(|_| i))
            .collect()
    }

    /// Advance the handshake of `slot` (with the lock held: the inline path, in the caller's
    /// thread, which validated the socket's identity under this same lock hold with
    /// `lookup_any`: no second fstat); true when it has ended (and was finalized).
    /// `driver_ep`: the driver's epoll set, to follow the handshake's interest.
    pub fn step(&mut self, slot: usize, driver_ep: i32) -> bool {
        let Some((mut hs, _, _)) = self.take_checked(slot, true) else { return true };
        let step = hs.resume(&mut |l, a| crate::log::write(l, a));
        self.apply(slot, hs, step, driver_ep)
    }

    /// Take the handshake of `slot` out to advance it (a placeholder stays), after checking the
    /// socket is still the same: the driver runs the handshake's syscalls without the lock,
    /// which the program's threads need meanwhile. Also returns the fd and the socket's inode.
    /// None: ended, or closed behind our back (then forgotten).
    pub fn take(&mut self, slot: usize) -> Option<(Handshake<'static>, i32, u64)> {
        self.take_checked(slot, false)
    }

    /// `take`; `checked`: the caller has just validated the socket's identity under this lock.
    fn take_checked(&mut self, slot: usize, checked: bool) -> Option<(Handshake<'static>, i32, u64)> {
        let c = self.conn(slot)?;
        if c.result.is_some() {
            return None;
        }
        if !checked && inode(c.fd) != Some(c.ino) {
            // Closed (or replaced) behind our back: nothing left to drive.
            let fd = c.fd;
            self.forget_fd(fd);
            return None;
        }
        let placeholder = Handshake::new(-1, libc::AF_INET, &[], tsproxy_core::Target::Ip(([0, 0, 0, 0], 0).into()), false);
        let hs = std::mem::replace(&mut c.hs, placeholder);
        Some((hs, c.fd, c.ino))
    }

    /// Put the handshake back with what its step said; true when it has ended (finalized).
    pub fn apply(&mut self, slot: usize, hs: Handshake<'static>, step: Step, driver_ep: i32) -> bool {
        let Some(c) = self.conn(slot) else { return true };
        c.hs = hs;
        // The conn may have moved to another descriptor of the same socket while its
        // handshake was out (kept at close, or adopted: see `adopt`).
        c.hs.set_fd(c.fd);
        match step {
            Step::Want(ev) => {
                if ev != c.want {
                    c.want = ev;
                    if c.in_driver {
                        let _ = sys::epoll_ctl(driver_ep, libc::EPOLL_CTL_MOD, c.fd, interest(ev), token(slot, c.id));
                    }
                }
                false
            }
            Step::Done(r) => {
                c.result = Some(r.map(|_| ()));
                self.finalize(slot, driver_ep);
                true
            }
        }
    }

    /// Abandon a handshake with `e` (its time ran out).
    pub fn expire(&mut self, slot: usize, e: Errno, driver_ep: i32) {
        if let Some(c) = self.conn(slot) {
            if c.result.is_none() && inode(c.fd) != Some(c.ino) {
                // Closed behind our back, maybe a new socket on the number now: touch nothing.
                let fd = c.fd;
                self.forget_fd(fd);
                return;
            }
            if c.result.is_none() {
                let _ = c.hs.abort(e);
                c.result = Some(Err(e));
                crate::log::log!(Info, "connect fd={} {}: timed out after {} ms at the proxy", c.fd, c.hs.target(), c.t0.elapsed().as_millis());
                self.finalize(slot, driver_ep);
            }
        }
    }

    /// The handshake ended: make the socket's state the kernel's, give the application its
    /// epoll registrations back (which makes the kernel report the socket's readiness to any
    /// waiter, with the application's own data), wake our waiters, and forget the socket
    /// unless an errno is still owed.
    pub fn finalize(&mut self, slot: usize, driver_ep: i32) {
        let Some(c) = self.conn(slot) else { return };
        let Some(result) = c.result else { return };
        let fd = c.fd;
        if c.in_driver {
            let _ = sys::epoll_ctl(driver_ep, libc::EPOLL_CTL_DEL, fd, 0, 0);
            c.in_driver = false;
        }
        let us = c.t0.elapsed().as_micros();
        if c.kept.is_some() {
            // Nobody's socket but ours: nothing to record, restore or wake for the program.
            // SAFETY: addr holds len bytes (copied from the application's connect).
            let dest = unsafe { tsproxy_core::sockaddr::read(std::ptr::addr_of!(c.addr).cast(), c.len) };
            if let Some(w) = c.shared {
                super::shared::end(w, c.id);
            }
            match result {
                Ok(()) => {
                    // Kept, connected, until adopted or its time is up.
                    crate::log::log!(Debug, "connect (kept) {} -> ok {us}us; kept for the other family", c.hs.target());
                    if let Some(d) = dest {
                        crate::net::siblings::succeeded(d);
                    }
                }
                Err(e) => {
                    crate::log::log!(Info, "connect (kept) {} -> {e} {us}us", c.hs.target());
                    if let Some(d) = dest {
                        crate::net::siblings::failed(d, e);
                    }
                    super::adopt::drop_kept(self, slot);
                }
            }
            return;
        }
        // The socket's own state is touched only while the number is still this socket.
        let alive = inode(fd) == Some(c.ino);
        match result {
            _ if !alive => {}
            Ok(()) => {
                // SAFETY: addr holds len bytes (copied from the application's connect).
                if let Some(dest) = unsafe { tsproxy_core::sockaddr::read(std::ptr::addr_of!(c.addr).cast(), c.len) } {
                    crate::net::siblings::succeeded(dest);
                }
                for &f in &c.fds {
                    // `fd` itself was just seen to be this socket; its dups are checked.
                    let ino = (f == fd).then_some(c.ino);
                    // SAFETY: addr holds len bytes (copied from the application's connect).
                    unsafe { tunnels::record(f, std::ptr::addr_of!(c.addr).cast(), c.len, ino) };
                }
                crate::log::log!(Debug, "connect fd={fd} {} -> proxy {} -> ok {us}us", c.hs.target(), c.hs.via().map(|a| a.to_string()).unwrap_or_default());
            }
            Err(e) => {
                // SAFETY: addr holds len bytes (copied from the application's connect).
                if let Some(dest) = unsafe { tsproxy_core::sockaddr::read(std::ptr::addr_of!(c.addr).cast(), c.len) } {
                    crate::net::siblings::failed(dest, e);
                }
                make_refused(fd, c.family);
                if e.raw() != libc::ECONNREFUSED {
                    c.sticky = Some(e);
                }
                crate::log::log!(Info, "connect fd={fd} {} -> {e} {us}us", c.hs.target());
            }
        }
        if let Some(fl) = c.restore_flags.take().filter(|_| alive) {
            let _ = sys::fcntl_setfl(fd, fl);
        }
        for r in std::mem::take(&mut c.regs) {
            if inode(r.fd) == Some(c.ino) {
                let _ = sys::epoll_ctl(r.epfd, libc::EPOLL_CTL_ADD, r.fd, r.events, r.data);
            }
        }
        if let Some(w) = c.shared {
            super::shared::end(w, c.id);
        }
        for w in std::mem::take(&mut c.waiters) {
            super::wake::signal(w);
        }
        let key = c.name_key.filter(|_| c.held.is_none());
        // An inline handshake is collected (and removed) by the thread that runs it.
        if c.sticky.is_none() && c.driver == Driver::Thread {
            self.remove(slot);
        }
        if let Some(k) = key {
            self.release_held(k, result, driver_ep);
        }
    }

    /// The connect to a name and port through one family's placeholder ended: the other
    /// family's, held meanwhile (`held`), fails the same way at once, or — after a success —
    /// starts after `HELD_GRACE`, long enough for a happy-eyeballs client to close it unused
    /// (it has the first) without a second tunnel ever being opened.
    fn release_held(&mut self, key: (u32, u16), result: Result<(), Errno>, driver_ep: i32) {
        let me = sys::pid();
        let slots: Vec<usize> = (0..self.conns.len())
            .filter(|&i| self.conns[i].as_ref().is_some_and(|c| c.owner == me && c.name_key == Some(key) && c.held == Some(None) && c.result.is_none()))
            .collect();
        for s in slots {
            match result {
                Ok(()) => {
                    if let Some(c) = self.conn(s) {
                        c.held = Some(Some(Instant::now() + HELD_GRACE));
                    }
                    // The driver may be waiting for a later deadline (when this end was not
                    // its own doing): wake it to look again.
                    super::driver::rescan();
                    super::driver::poke();
                }
                Err(e) => {
                    if let Some(c) = self.conn(s) {
                        crate::log::log!(Info, "connect fd={} {}: the other address of this name failed just now ({e}); same answer", c.fd, c.hs.target());
                        let _ = c.hs.abort(e);
                        c.result = Some(Err(e));
                    }
                    self.finalize(s, driver_ep);
                }
            }
        }
    }

    /// The connect to a name and port through one family's placeholder was abandoned by the
    /// program (closed while in flight: node's happy eyeballs closes an attempt after 250 ms
    /// and goes on with the next address): the other family's, held meanwhile, starts now.
    pub fn release_abandoned(&mut self, key: (u32, u16)) {
        let me = sys::pid();
        let mut any = false;
        for c in self.conns.iter_mut().flatten() {
            if c.owner == me && c.name_key == Some(key) && c.held == Some(None) && c.result.is_none() {
                c.held = Some(Some(Instant::now()));
                any = true;
            }
        }
        if any {
            super::driver::rescan();
            super::driver::poke();
        }
    }

    /// Start a held handshake whose time has come (the driver, with the lock held): its first
    /// step, then the driver's set as for any other.
    pub fn start_held(&mut self, slot: usize, driver_ep: i32) {
        let Some(c) = self.conn(slot) else { return };
        c.held = None;
        let step = c.hs.resume(&mut |l, a| crate::log::write(l, a));
        match step {
            Step::Want(ev) => {
                c.want = ev;
                let tok = token(slot, c.id);
                match sys::epoll_ctl(driver_ep, libc::EPOLL_CTL_ADD, c.fd, interest(ev), tok) {
                    Ok(()) => c.in_driver = true,
                    Err(_) => {
                        c.result = Some(Err(Errno(libc::ECONNREFUSED)));
                        self.finalize(slot, driver_ep);
                    }
                }
            }
            Step::Done(r) => {
                c.result = Some(r.map(|_| ()));
                self.finalize(slot, driver_ep);
            }
        }
    }
}

/// How long a held connect waits after the other family's connected (see `release_held`).
pub const HELD_GRACE: std::time::Duration = std::time::Duration::from_millis(150);

/// Put the (disconnected) socket into the kernel's own "connection refused" state: a connect
/// to port 0 on loopback is answered with RST, which sets the socket error, EPOLLERR and
/// EPOLLHUP exactly as a refused dial does. An AF_INET6 socket uses [::1] first (an
/// IPV6_V6ONLY socket cannot reach a v4-mapped address), then ::ffff:127.0.0.1.
pub fn make_refused(fd: i32, family: i32) {
    let fl = sys::fcntl_getfl(fd).unwrap_or(libc::O_NONBLOCK);
    if fl & libc::O_NONBLOCK == 0 {
        let _ = sys::fcntl_setfl(fd, fl | libc::O_NONBLOCK);
    }
    let tries: &[std::net::SocketAddr] = if family == libc::AF_INET6 {
        &[
            std::net::SocketAddr::new(std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), 0),
            std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0),
        ]
    } else {
        &[std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0)]
    };
    for a in tries {
        let Some((sa, len)) = tsproxy_core::sockaddr::encode(*a, family) else { continue };
        match sys::connect_raw(fd, (&sa as *const libc::sockaddr_storage).cast(), len) {
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) || e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                let _ = sys::poll1(fd, libc::POLLOUT, 100);
                break;
            }
            Ok(()) => break,
            Err(_) => continue,
        }
    }
    if fl & libc::O_NONBLOCK == 0 {
        let _ = sys::fcntl_setfl(fd, fl);
    }
}

pub fn lock_for_fork() {
    TABLE.hold_for_fork();
}

pub fn unlock_after_fork() {
    TABLE.release_after_fork();
}

//! One tunnel for a client that tries a name's two placeholders in turn, closing each attempt
//! that is slow to connect (node >= 20, `autoSelectFamily`: after 250 ms it closes the IPv4
//! attempt and connects the IPv6 placeholder; Python's `create_connection(timeout=0.3)`).
//! Both placeholders lead to the same name at the proxy, and the first attempt's handshake may
//! be a moment from done (the proxy's dial of a peer reached over DERP often takes longer
//! than 250 ms), so starting over would open a second tunnel and tear the first down.
//!
//! - Keep: when the program closes a socket whose handshake through a placeholder is still
//!   running in the driver, and the attempt is young (under [`YOUNG`]: a long wait closed is
//!   the program's own timeout, see `siblings::abandoned`), a dup of it is kept (a descriptor
//!   of ours, close-on-exec, high) for [`GRACE`]; the handshake goes on under that number.
//! - Adopt: a nonblocking or blocking connect of a socket fresh from `socket(2)` through the
//!   *other* family's placeholder of the same name and port, in the same process, within that
//!   time, puts the kept socket in place of the new one under the program's descriptor number
//!   (`dup3`): file status flags, close-on-exec, the epoll registrations made before
//!   connect() and the common socket options set on the new socket are carried over; the
//!   connect is answered as the kept handshake's state says (`EINPROGRESS`, then the kernel's
//!   readiness of the same socket; a blocking connect waits for the end), and `getpeername`
//!   names the placeholder of this connect.
//! - Expire: a kept socket nobody adopted is closed by the driver at the end of [`GRACE`]
//!   (a failure closes it at once, and speaks for the other family as any failure does).
//!
//! The adopted socket keeps its own domain: an IPv4 attempt adopted by the IPv6 connect is an
//! `AF_INET` socket under a number the program made with `AF_INET6` (and the other way
//! round). What differs, and why it is harmless for the clients that do this: the socket's
//! local address is the loopback one of its proxy connection either way (`127.0.0.1` or
//! `::ffff:127.0.0.1`, meaningless to the program); `SO_DOMAIN` and `IPPROTO_IPV6`-level
//! options (which an `AF_INET` socket refuses) — node/libuv set none on a TCP client socket
//! (`TCP_NODELAY`, `SO_KEEPALIVE` and the keepalive times are level-independent).
//!
//! Nothing here sends a packet: the kept socket is the program's own tunnel to the proxy, and
//! the socket replaced by it was never connected. Sockets that are not tunnelled through a
//! placeholder never reach this module.
use super::table::{inode, interest, token, Conn, Driver, Reg, Table, TABLE};
use crate::net::fds;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tsproxy_core::{sys, syscall, Errno};

/// How long a kept socket waits for the other family's connect.
pub const GRACE: Duration = Duration::from_millis(1000);
/// Only attempts closed younger than this are kept (see `siblings::abandoned` for the rest).
pub const YOUNG: Duration = Duration::from_millis(500);
/// At most this many kept sockets per process (the rest are closed as before).
pub const MAX_KEPT: usize = 8;

/// Kept sockets in this process (the connect path's fast check).
static KEPT: AtomicUsize = AtomicUsize::new(0);

fn is_kept_candidate(c: &Conn, fd: i32, me: i32) -> bool {
    c.fd == fd
        && c.fds.len() == 1
        && c.owner == me
        && c.driver == Driver::Thread
        && c.result.is_none()
        && c.held.is_none()
        && c.kept.is_none()
        && c.name_key.is_some()
        && c.restore_flags.is_none()
        // The handshake is in the table, not out in the driver's hands this instant (its
        // syscalls would then run on the number being closed).
        && c.hs.fd() == fd
        && c.t0.elapsed() < YOUNG
}

/// close(fd), with the table locked, before the real close: keep the socket if it is an
/// attempt through a placeholder still in flight (see the module docs). True: kept (the conn
/// now runs on a descriptor of ours; the program's close goes on and closes its number).
pub fn keep(t: &mut Table, fd: i32) -> bool {
    if KEPT.load(Ordering::Relaxed) >= MAX_KEPT {
        return false;
    }
    let me = sys::pid();
    // (Not `lookup`: the close hook has cleared the number's marks already.)
    let Some(slot) = t.lookup_any(fd) else { return false };
    let Some(c) = t.conn(slot) else { return false };
    if !is_kept_candidate(c, fd, me) {
        return false;
    }
    let key = c.name_key;
    // A sibling held behind this one starts now instead (as before): keeping both would be
    // two sockets for one name.
    if t.any_conn(|o| o.owner == me && o.name_key == key && o.held.is_some() && o.result.is_none()) {
        return false;
    }
    let ep = super::driver::ep();
    if ep < 0 {
        return false;
    }
    let Ok(d) = syscall!(SYS_fcntl, fd, libc::F_DUPFD_CLOEXEC, 0).map(|v| v as i32) else { return false };
    let k = fds::move_high(d);
    if k == d {
        // Not moved out of the program's way (no room at the top): do not keep.
        fds::release_ours(k);
        return false;
    }
    let Some(c) = t.conn(slot) else {
        fds::release_ours(k);
        return false;
    };
    let tok = token(slot, c.id);
    if c.in_driver {
        let _ = sys::epoll_ctl(ep, libc::EPOLL_CTL_DEL, fd, 0, 0);
        if sys::epoll_ctl(ep, libc::EPOLL_CTL_ADD, k, interest(c.want), tok).is_err() {
            // Put it back as it was and let the close abandon it as before.
            let _ = sys::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, interest(c.want), tok);
            fds::release_ours(k);
            return false;
        }
    }
    c.fd = k;
    c.fds = vec![k];
    c.hs.set_fd(k);
    // The program's registrations go with its close (its only descriptor of the socket).
    c.regs.clear();
    let waiters = std::mem::take(&mut c.waiters);
    c.kept = Some(Instant::now() + GRACE);
    crate::log::log!(
        Debug,
        "connect fd={fd} {}: closed in flight after {} ms; kept {} ms for the other family",
        c.hs.target(),
        c.t0.elapsed().as_millis(),
        GRACE.as_millis()
    );
    t.move_fd(fd, k, slot);
    for w in waiters {
        super::wake::signal(w);
    }
    KEPT.fetch_add(1, Ordering::Relaxed);
    super::driver::rescan();
    super::driver::poke();
    true
}

/// Close a kept socket and forget its conn (expired, failed, or its number taken away).
pub fn drop_kept(t: &mut Table, slot: usize) {
    let Some(c) = t.remove(slot) else { return };
    if c.kept.is_none() {
        return;
    }
    if c.in_driver && c.owner == sys::pid() {
        let _ = sys::epoll_ctl(super::driver::ep(), libc::EPOLL_CTL_DEL, c.fd, 0, 0);
    }
    // Still ours? (A dup2 of the program's over the number took it: then it is the program's.)
    if fds::is_ours(c.fd) && inode(c.fd) == Some(c.ino) {
        fds::release_ours(c.fd);
    }
}

/// The driver, with the table locked: close kept sockets whose time is up; the earliest
/// expiry of those left.
pub fn expire(t: &mut Table, now: Instant) -> Option<Instant> {
    if KEPT.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let me = sys::pid();
    let mut next: Option<Instant> = None;
    for slot in t.kept_slots(me) {
        let Some(c) = t.conn(slot) else { continue };
        let Some(until) = c.kept else { continue };
        if until <= now {
            crate::log::log!(Debug, "connect {}: kept socket not adopted; closed", c.hs.target());
            drop_kept(t, slot);
        } else {
            next = Some(next.map_or(until, |n: Instant| n.min(until)));
        }
    }
    next
}

/// A fork child: kept sockets are the parent's; the child's copies are closed at once (they
/// would hold the parent's tunnel open). Called after the fork handlers released the locks.
pub fn after_fork_child() {
    if KEPT.load(Ordering::Relaxed) == 0 {
        return;
    }
    let mut t = TABLE.lock();
    for slot in t.kept_slots_any() {
        if let Some(c) = t.remove(slot) {
            if fds::is_ours(c.fd) {
                fds::release_ours(c.fd);
            }
        }
    }
}

/// A kept conn left the table (adopted, closed, or forgotten).
pub fn kept_gone() {
    let _ = KEPT.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_sub(1)));
}

/// Does the placeholder `a` name the other family than `b`? (siblings' notion: a v4-mapped
/// address is the IPv4 placeholder.)
fn other_family(a: &libc::sockaddr_storage, alen: libc::socklen_t, b: std::net::SocketAddr) -> bool {
    // SAFETY: `a` holds `alen` bytes (a copy of an application's address).
    let Some(a) = (unsafe { tsproxy_core::sockaddr::read(std::ptr::addr_of!(*a).cast(), alen) }) else { return false };
    let v6 = |d: std::net::SocketAddr| matches!(d, std::net::SocketAddr::V6(x) if x.ip().to_ipv4_mapped().is_none());
    v6(a) != v6(b)
}

/// The slot of a kept socket that a connect to `dest` (key `key`) may adopt.
fn candidate(t: &mut Table, key: (u32, u16), dest: std::net::SocketAddr, me: i32, now: Instant) -> Option<usize> {
    for slot in t.kept_slots(me) {
        let Some(c) = t.conn(slot) else { continue };
        if c.name_key == Some(key)
            && c.kept.is_some_and(|u| now < u)
            && !matches!(c.result, Some(Err(_)))
            && (c.result.is_some() || c.hs.fd() == c.fd)
            && other_family(&c.addr, c.len, dest)
        {
            return Some(slot);
        }
    }
    None
}

/// Socket options a program commonly sets before connect(): carried from the socket being
/// replaced to the adopted one (level-independent ones only: both are TCP sockets).
const CARRIED: [(i32, i32); 10] = [
    (libc::SOL_SOCKET, libc::SO_KEEPALIVE),
    (libc::SOL_SOCKET, libc::SO_PRIORITY),
    (libc::SOL_SOCKET, libc::SO_OOBINLINE),
    (libc::IPPROTO_TCP, libc::TCP_NODELAY),
    (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE),
    (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL),
    (libc::IPPROTO_TCP, libc::TCP_KEEPCNT),
    (libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT),
    (libc::IPPROTO_TCP, libc::TCP_QUICKACK),
    (libc::SOL_SOCKET, libc::SO_RCVLOWAT),
];

fn carry_options(from: i32, to: i32) {
    for (level, opt) in CARRIED {
        if let Ok(v) = sys::getsockopt_int(from, level, opt) {
            if sys::getsockopt_int(to, level, opt).is_ok_and(|w| w != v) {
                let _ = syscall!(SYS_setsockopt, to, level, opt, &v as *const i32, std::mem::size_of::<i32>());
            }
        }
    }
    // Timeouts and linger are structs.
    for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        let mut tv = libc::timeval { tv_sec: 0, tv_usec: 0 };
        let mut l = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
        if syscall!(SYS_getsockopt, from, libc::SOL_SOCKET, opt, &mut tv as *mut libc::timeval, &mut l as *mut libc::socklen_t).is_ok()
            && (tv.tv_sec, tv.tv_usec) != (0, 0)
        {
            let _ = syscall!(SYS_setsockopt, to, libc::SOL_SOCKET, opt, &tv as *const libc::timeval, l);
        }
    }
    let mut lg = libc::linger { l_onoff: 0, l_linger: 0 };
    let mut l = std::mem::size_of::<libc::linger>() as libc::socklen_t;
    if syscall!(SYS_getsockopt, from, libc::SOL_SOCKET, libc::SO_LINGER, &mut lg as *mut libc::linger, &mut l as *mut libc::socklen_t).is_ok()
        && lg.l_onoff != 0
    {
        let _ = syscall!(SYS_setsockopt, to, libc::SOL_SOCKET, libc::SO_LINGER, &lg as *const libc::linger, l);
    }
}

/// What a connect that adopted a socket answers.
pub enum Adopted {
    /// Nonblocking: EINPROGRESS (pending, or connected already: the kernel says writable).
    InProgress,
    /// Blocking, connected already.
    Connected,
    /// Blocking, still handshaking: the caller waits for `want` on the socket until the
    /// conn's deadline (the conn is now driven inline, as any blocking connect's).
    Wait(i16, Duration),
}

/// connect(fd, dest) through a placeholder (`key`) on a socket fresh from socket(2): adopt a
/// kept socket of the other family's placeholder of the same name and port, if there is one.
/// `fl`: the program's file status flags of `fd` (before the connect path touched them);
/// `limit`: the connect's time limit (SO_SNDTIMEO of a blocking socket, or the configured one).
///
/// # Safety
/// `addr` holds `len` readable bytes.
#[allow(clippy::too_many_arguments)]
pub unsafe fn adopt(
    fd: i32,
    dest: std::net::SocketAddr,
    key: (u32, u16),
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
    known: u8,
    fl: i32,
    limit: Duration,
) -> Option<Adopted> {
    if KEPT.load(Ordering::Relaxed) == 0 || known & fds::FRESH_STREAM == 0 {
        return None;
    }
    let me = sys::pid();
    candidate(&mut TABLE.lock(), key, dest, me, Instant::now())?;
    let blocking = fl & libc::O_NONBLOCK == 0;
    // What the program's descriptor carries, gathered without the table lock (the epoll
    // registrations made before connect() go to the adopted socket).
    let cloexec = syscall!(SYS_fcntl, fd, libc::F_GETFD).map(|v| v as i32 & libc::FD_CLOEXEC != 0).unwrap_or(false);
    let regs: Vec<Reg> = if known & fds::IN_EPOLL != 0 { super::epoll::take_existing(fd) } else { Vec::new() };
    let put_back = |regs: &[Reg]| {
        for r in regs {
            let _ = sys::epoll_ctl(r.epfd, libc::EPOLL_CTL_ADD, r.fd, r.events, r.data);
        }
    };
    let mut t = TABLE.lock();
    let now = Instant::now();
    let Some(slot) = candidate(&mut t, key, dest, me, now) else {
        drop(t);
        put_back(&regs);
        return None;
    };
    let ep = super::driver::ep();
    let Some(c) = t.conn(slot) else {
        drop(t);
        put_back(&regs);
        return None;
    };
    let k = c.fd;
    if inode(k) != Some(c.ino) {
        drop(t);
        put_back(&regs);
        return None;
    }
    carry_options(fd, k);
    // The socket runs its handshake nonblocking; the program's flags at the end.
    let _ = sys::fcntl_setfl(k, fl | libc::O_NONBLOCK);
    if syscall!(SYS_dup3, k, fd, if cloexec { libc::O_CLOEXEC } else { 0 }).is_err() {
        let _ = sys::fcntl_setfl(k, libc::O_RDWR | libc::O_NONBLOCK);
        drop(t);
        put_back(&regs);
        return None;
    }
    // From here the program's number is the kept socket.
    let pending = c.result.is_none();
    if c.in_driver {
        let _ = sys::epoll_ctl(ep, libc::EPOLL_CTL_DEL, k, 0, 0);
        c.in_driver = false;
    }
    c.fd = fd;
    c.fds = vec![fd];
    c.hs.set_fd(fd);
    c.kept = None;
    c.regs = regs;
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let n = (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: addr has len readable bytes (contract); st has room for n.
    unsafe { std::ptr::copy_nonoverlapping(addr.cast::<u8>(), std::ptr::addr_of_mut!(st).cast::<u8>(), n) };
    c.addr = st;
    c.len = n as libc::socklen_t;
    crate::log::log!(
        Info,
        "connect fd={fd} {}: adopted the other family's attempt closed just now ({}, started {} ms ago): one tunnel",
        c.hs.target(),
        if pending { "still handshaking" } else { "connected" },
        c.t0.elapsed().as_millis()
    );
    kept_gone();
    t.move_fd(k, fd, slot);
    fds::release_ours(k);
    if !pending {
        // Connected while kept: the program's socket is an established tunnel now.
        let _ = sys::fcntl_setfl(fd, fl);
        let Some(c) = t.remove(slot) else { return Some(Adopted::InProgress) };
        // SAFETY: addr holds len bytes (copied above).
        unsafe { crate::net::tunnels::record(fd, std::ptr::addr_of!(c.addr).cast(), c.len, Some(c.ino)) };
        drop(t);
        put_back(&c.regs);
        return Some(if blocking { Adopted::Connected } else { Adopted::InProgress });
    }
    if blocking {
        // Driven by the caller's thread from now on, as any blocking connect's handshake.
        c_inline(&mut t, slot, fl, now + limit);
        let want = t.conn(slot).map_or(libc::POLLOUT, |c| c.want);
        return Some(Adopted::Wait(want, limit));
    }
    let Some(c) = t.conn(slot) else { return Some(Adopted::InProgress) };
    if ep >= 0 && sys::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, interest(c.want), token(slot, c.id)).is_ok() {
        c.in_driver = true;
    } else {
        c.result = Some(Err(Errno(libc::ECONNREFUSED)));
        t.finalize(slot, ep);
    }
    Some(Adopted::InProgress)
}

/// An adopted handshake becomes the blocking caller's to drive (`pending::resume_inline`).
fn c_inline(t: &mut Table, slot: usize, fl: i32, deadline: Instant) {
    if let Some(c) = t.conn(slot) {
        c.driver = Driver::Inline;
        c.restore_flags = Some(fl);
        c.deadline = c.deadline.min(deadline);
    }
}

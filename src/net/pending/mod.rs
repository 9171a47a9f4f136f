//! Proxied connects in progress: a nonblocking connect() returns EINPROGRESS at once and the
//! handshake continues without the caller while the socket looks exactly like a kernel socket
//! in SYN_SENT; a blocking connect() runs its handshake in the caller's own thread, waiting at
//! the hook boundary (a cancellation point, see `boundary`).
//!
//! Files by concern: `table` (the conns, identity checks, ending a handshake), `driver` (the
//! thread that advances nonblocking handshakes), `epoll` (the application's registrations,
//! kept aside), `waits` (poll/select on sockets still handshaking), `wake` (waking waiters).
//!
//! How the application never sees a token or early readiness, by construction:
//! - the handshake waits in the driver's own epoll set, which is never part of any set of the
//!   application's, so its data (tokens) cannot be returned by any `epoll_wait` of theirs;
//! - while it runs, the socket is in *none* of the application's epoll sets (registrations
//!   made before connect() are taken out, later `epoll_ctl` calls are kept aside), so nothing
//!   about it is reported to any thread, whenever it started waiting;
//! - at the end the registrations are added back with the application's events and data, and
//!   the kernel reports the socket's real state to whoever waits.
pub mod adopt;
pub mod driver;
pub mod epoll;
pub mod shared;
pub mod table;
pub mod waits;
pub mod wake;

use crate::boundary::{Bypass, Ctx, Detour, Wait};
use crate::net::fds;
use crate::state;
use libc::c_int;
use std::time::{Duration, Instant};
use table::{inode, interest, Conn, Driver, Reg, TABLE};
use tsproxy_core::tunnel::{Handshake, Step};
use tsproxy_core::{sys, Errno, Target};

pub use table::active;

/// Start the handshake of a proxied connect on `fd`. `inline`: the caller's thread drives it
/// (a blocking socket, or TCP Fast Open whose data must follow at once).
///
/// # Safety
/// `addr` holds `len` readable bytes.
#[allow(clippy::too_many_arguments)]
pub unsafe fn start(
    fd: i32,
    family: i32,
    target: Target,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
    known: u8,
    inline: bool,
    fl: i32,
    limit: Duration,
    read_cap: Option<Duration>,
) -> Detour<c_int> {
    let st = state::get();
    let Some(cfg) = &st.cfg else { return Detour::Fail(Errno(libc::ECONNREFUSED)) };
    let Some(ino) = inode(fd) else { return Detour::Fail(Errno(libc::EBADF)) };
    let restore_flags = if fl & libc::O_NONBLOCK == 0 {
        if let Err(e) = sys::fcntl_setfl(fd, fl | libc::O_NONBLOCK) {
            return Detour::Fail(Errno::of(&e));
        }
        Some(fl)
    } else {
        None
    };
    let restore = || {
        if let Some(fl) = restore_flags {
            let _ = sys::fcntl_setfl(fd, fl);
        }
    };
    // SAFETY: forwarded contract.
    let dest = unsafe { tsproxy_core::sockaddr::read(addr, len) };
    if let Some(e) = dest.and_then(crate::net::siblings::fresh_failure) {
        restore();
        crate::log::log!(Info, "connect fd={fd} {target}: the other address of this name failed just now ({e}); same answer");
        if e.raw() == libc::ECONNREFUSED && !inline {
            table::make_refused(fd, family);
            return Detour::Fail(Errno(libc::EINPROGRESS));
        }
        return Detour::Fail(e);
    }
    let name_key = dest.and_then(crate::net::siblings::key_of);
    if let (Some(k), Some(d)) = (name_key, dest) {
        // The other family's attempt at this name and port, closed by the program just now
        // (node's autoSelectFamily), is taken over instead of opening a second tunnel.
        // SAFETY: forwarded contract.
        match unsafe { adopt::adopt(fd, d, k, addr, len, known, fl, limit) } {
            Some(adopt::Adopted::InProgress) => return Detour::Fail(Errno(libc::EINPROGRESS)),
            Some(adopt::Adopted::Connected) => return Detour::Done(0),
            Some(adopt::Adopted::Wait(want, left)) => {
                return Detour::Wait(Wait {
                    fds: wake::one(fd, want),
                    n: 1,
                    timeout_ms: left.as_millis().clamp(1, i32::MAX as u128) as i32,
                    sigmask: std::ptr::null(),
                })
            }
            None => {}
        }
    }
    if let Some(k) = name_key.filter(|_| !inline) {
        // SAFETY: forwarded contract.
        if let Some(d) = unsafe { held(fd, family, k, st.upstreams(), target.clone(), cfg.pipeline, addr, len, known, limit) } {
            return d;
        }
    }
    let mut hs = Handshake::new(fd, family, st.upstreams(), target, cfg.pipeline);
    let t0 = Instant::now();
    let first = hs.resume(&mut |l, a| crate::log::write(l, a));
    if let (Step::Done(Err(e)), Some(d)) = (&first, dest) {
        crate::net::siblings::failed(d, *e);
    }
    let want = match first {
        Step::Want(ev) => ev,
        Step::Done(Ok(via)) => {
            restore();
            // SAFETY: forwarded contract.
            unsafe { crate::net::tunnels::record(fd, addr, len, Some(ino)) };
            crate::log::log!(Debug, "connect fd={fd} {} -> proxy {via} -> ok at once", hs.target());
            return Detour::Done(0);
        }
        Step::Done(Err(Errno(libc::EAFNOSUPPORT | libc::EINVAL))) if crate::net::connect::family_mismatch(fd, family) => {
            restore();
            // The address does not fit the socket: the kernel rejects it, sending nothing.
            return Detour::Bypass(Bypass::NotApplicable);
        }
        Step::Done(Err(Errno(libc::ECONNREFUSED))) if !inline => {
            // Every proxy refused before the first wait (a dead local proxy refuses inside
            // connect()). A kernel socket connecting somewhere says EINPROGRESS and then reports
            // the refusal through SO_ERROR/EPOLLERR; so does this one: the socket is put in the
            // kernel's own refused state, and nothing of ours needs to remember it.
            table::make_refused(fd, family);
            return Detour::Fail(Errno(libc::EINPROGRESS));
        }
        Step::Done(Err(e)) => {
            restore();
            return Detour::Fail(e);
        }
    };
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut st_addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let n = (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: addr has len readable bytes; st_addr has room for n.
    unsafe { std::ptr::copy_nonoverlapping(addr.cast::<u8>(), std::ptr::addr_of_mut!(st_addr).cast::<u8>(), n) };
    let ep = if inline {
        -1
    } else {
        match driver::ensure() {
            Ok(ep) => ep,
            Err(e) => {
                let _ = hs.abort(e);
                restore();
                return Detour::Fail(Errno(libc::ECONNREFUSED));
            }
        }
    };
    crate::fork::arm();
    // Registrations made before connect(): out of the application's sets until the end.
    let fresh_unregistered = known & (fds::FRESH_STREAM | fds::IN_EPOLL) == fds::FRESH_STREAM;
    let regs: Vec<Reg> = if fresh_unregistered { Vec::new() } else { epoll::take_existing(fd) };
    let conn = Conn {
        hs,
        fd,
        family,
        ino,
        fds: vec![fd],
        regs,
        want,
        driver: if inline { Driver::Inline } else { Driver::Thread },
        owner: sys::pid(),
        result: None,
        sticky: None,
        addr: st_addr,
        len: n as libc::socklen_t,
        t0,
        deadline: t0 + limit,
        read_cap,
        waiters: Vec::new(),
        restore_flags,
        id: 0,
        in_driver: false,
        shared: None,
        name_key,
        held: None,
        kept: None,
    };
    let mut t = TABLE.lock();
    let slot = t.insert(conn);
    #[cfg(feature = "test-panic")]
    if std::env::var_os("TSPROXY_TEST_PANIC").is_some_and(|v| v == "1") {
        panic!("TSPROXY_TEST_PANIC: a forced panic with the table lock held");
    }
    if inline {
        drop(t);
        let first = read_cap.filter(|_| want == libc::POLLIN).map_or(limit, |c| c.min(limit));
        return Detour::Wait(Wait {
            fds: wake::one(fd, want),
            n: 1,
            timeout_ms: first.as_millis().clamp(1, i32::MAX as u128) as i32,
            sigmask: std::ptr::null(),
        });
    }
    let Some(c) = t.conn(slot) else { return Detour::Fail(Errno(libc::ECONNREFUSED)) };
    let tok = table::token(slot, c.id);
    match sys::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, interest(want), tok) {
        Ok(()) => {
            c.in_driver = true;
            Detour::Fail(Errno(libc::EINPROGRESS))
        }
        Err(e) => {
            c.result = Some(Err(Errno(libc::ECONNREFUSED)));
            crate::log::log!(Error, "connect fd={fd}: cannot watch the handshake: {e}; refused");
            t.finalize(slot, ep);
            Detour::Fail(Errno(libc::ECONNREFUSED))
        }
    }
}

/// A nonblocking connect through one family's placeholder while the other family's connect to
/// the same name and port is in flight in this process (a happy-eyeballs client, node's and
/// curl's, starts the second after 200–250 ms): EINPROGRESS, the socket pending like any
/// other, but no tunnel is opened until the first ends — then it fails the same way, or starts
/// (see `Table::release_held`). None: nothing in flight, start as usual.
///
/// # Safety
/// `addr` holds `len` readable bytes.
#[allow(clippy::too_many_arguments)]
unsafe fn held(
    fd: i32,
    family: i32,
    key: (u32, u16),
    ups: &'static [tsproxy_core::tunnel::Resolved],
    target: tsproxy_core::Target,
    pipeline: bool,
    addr: *const libc::sockaddr,
    len: libc::socklen_t,
    known: u8,
    limit: Duration,
) -> Option<Detour<c_int>> {
    let me = sys::pid();
    // Only a conn whose socket is still the one it started on (one closed behind our back, by
    // a raw close, is not in flight).
    let in_flight = |t: &mut table::Table| {
        t.any_conn(|c| {
            c.owner == me
                && c.name_key == Some(key)
                && c.family != family
                && c.result.is_none()
                && c.held.is_none()
                && c.kept.is_none()
                && c.driver == Driver::Thread
                && inode(c.fd) == Some(c.ino)
        })
    };
    if !in_flight(&mut TABLE.lock()) {
        return None;
    }
    let ino = inode(fd)?;
    // The driver must run: it starts the held connect when its time comes.
    driver::ensure().ok()?;
    crate::fork::arm();
    let fresh_unregistered = known & (fds::FRESH_STREAM | fds::IN_EPOLL) == fds::FRESH_STREAM;
    let regs: Vec<Reg> = if fresh_unregistered { Vec::new() } else { epoll::take_existing(fd) };
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut st_addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let n = (len as usize).min(std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: addr has len readable bytes; st_addr has room for n.
    unsafe { std::ptr::copy_nonoverlapping(addr.cast::<u8>(), std::ptr::addr_of_mut!(st_addr).cast::<u8>(), n) };
    let t0 = Instant::now();
    let conn = Conn {
        hs: Handshake::new(fd, family, ups, target, pipeline),
        fd,
        family,
        ino,
        fds: vec![fd],
        regs,
        want: 0,
        driver: Driver::Thread,
        owner: me,
        result: None,
        sticky: None,
        addr: st_addr,
        len: n as libc::socklen_t,
        t0,
        deadline: t0 + limit,
        read_cap: None,
        waiters: Vec::new(),
        restore_flags: None,
        id: 0,
        in_driver: false,
        shared: None,
        name_key: Some(key),
        held: Some(None),
        kept: None,
    };
    let mut t = TABLE.lock();
    if !in_flight(&mut t) {
        // It ended meanwhile: put the registrations back and start as usual.
        for r in conn.regs {
            let _ = sys::epoll_ctl(r.epfd, libc::EPOLL_CTL_ADD, r.fd, r.events, r.data);
        }
        return None;
    }
    crate::log::log!(Debug, "connect fd={fd} {}: the other address of this name is being connected; held until it ends", conn.hs.target());
    t.insert(conn);
    Some(Detour::Fail(Errno(libc::EINPROGRESS)))
}

/// A blocking connect's next round, after a wait at the boundary: advance, then wait again or
/// finish. A signal does not interrupt the handshake (as with SA_RESTART); a cancellation
/// request acts inside the boundary's poll.
pub fn resume_inline(fd: i32, ctx: &mut Ctx) -> Detour<c_int> {
    let timed_out = matches!(ctx.woke, Some((0, _)));
    let mut t = TABLE.lock();
    // Closed (or replaced) behind our back meanwhile: lookup_any forgets it; EBADF as for a
    // connect on a closed descriptor.
    let Some(slot) = t.lookup_any(fd) else { return Detour::Fail(Errno(libc::EBADF)) };
    let Some(c) = t.conn(slot) else { return Detour::Fail(Errno(libc::EBADF)) };
    let now = Instant::now();
    if c.result.is_none() && (now >= c.deadline || (timed_out && c.want == libc::POLLIN && c.read_cap.is_some())) {
        // The whole connect (SO_SNDTIMEO or TSPROXY_CONNECT_TIMEOUT) or one wait for the
        // proxy's answer (SO_RCVTIMEO) ran out.
        t.expire(slot, Errno(libc::ETIMEDOUT), -1);
    } else {
        t.step(slot, -1);
    }
    let Some(c) = t.conn(slot) else { return Detour::Fail(Errno(libc::EBADF)) };
    match c.result {
        None => {
            let left = c.deadline.saturating_duration_since(now);
            let left = c.read_cap.filter(|_| c.want == libc::POLLIN).map_or(left, |cap| cap.min(left));
            let want = c.want;
            drop(t);
            Detour::Wait(Wait { fds: wake::one(fd, want), n: 1, timeout_ms: left.as_millis().clamp(1, i32::MAX as u128) as i32, sigmask: std::ptr::null() })
        }
        Some(r) => {
            let sticky = c.sticky.take();
            t.remove(slot);
            match r {
                Ok(()) => Detour::Done(0),
                Err(e) => {
                    // Reported here by connect() itself: consume the socket's own error.
                    let _ = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR);
                    Detour::Fail(sticky.unwrap_or(e))
                }
            }
        }
    }
}

/// The state of `fd`'s handshake as connect()/SO_ERROR see it: None when the socket is not
/// ours, Some(None) while it runs, Some(Some(errno)) once for an errno owed after a failure
/// (the socket's own pending error is consumed then, so the error is reported exactly once),
/// Some(Some(0)) when it ended with nothing owed.
fn owed(fd: i32) -> Option<Option<i32>> {
    if !active() {
        return None;
    }
    let mut t = TABLE.lock();
    let slot = t.lookup(fd)?;
    let c = t.conn(slot)?;
    if c.result.is_none() {
        return Some(None);
    }
    Some(Some(match c.sticky.take() {
        Some(e) => {
            let _ = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR);
            t.remove(slot);
            e.raw()
        }
        None => 0,
    }))
}

/// connect() on a socket whose handshake we run (or ran and owe an errno for). None: not ours.
pub fn reconnect(fd: i32) -> Option<Detour<c_int>> {
    Some(Detour::Fail(Errno(match owed(fd)? {
        None => libc::EALREADY,
        Some(0) => libc::EISCONN,
        Some(e) => e,
    })))
}

/// getsockopt(SO_ERROR): Some(value) when we answer: 0 while the handshake runs, the owed errno
/// once after it failed with one the socket cannot say itself; None: the kernel answers.
pub fn so_error(fd: i32) -> Option<i32> {
    match owed(fd)? {
        None => Some(0),
        Some(0) => None,
        Some(e) => Some(e),
    }
}

/// How a call on a socket still handshaking is answered.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// A receive (read, recv, recvmsg...) with its MSG_ flags: EAGAIN on a nonblocking socket
    /// or with MSG_DONTWAIT; a blocking one waits for the end as the kernel makes a receive on
    /// a connecting socket wait: within SO_RCVTIMEO (then EAGAIN), and a signal handler
    /// interrupts it as it would interrupt the kernel's wait (EINTR).
    Recv(c_int),
    /// A send (write, send, sendfile...): the same, within SO_SNDTIMEO.
    Send(c_int),
    /// Like getpeername: ENOTCONN at once, blocking or not.
    NotConnected,
}

/// A call that needs a connected socket (read, write, send, recv, sendfile, splice,
/// getpeername...): Bypass when the socket is not (or no longer) handshaking.
pub fn gate<T>(fd: i32, ctx: &mut Ctx, how: Gate) -> Detour<T> {
    if !active() {
        // Nothing pending in the process (and so nobody's waiter list to leave).
        return Detour::Bypass(Bypass::NotOurs);
    }
    let mut t = TABLE.lock();
    if ctx.round > 0 {
        if let Some(w) = wake::mine() {
            t.drop_waiter(w);
        }
    }
    let Some(slot) = pending_slot(&mut t, fd) else { return Detour::Bypass(Bypass::NotOurs) };
    let Some(c) = t.conn(slot) else { return Detour::Bypass(Bypass::NotOurs) };
    let (flags, timeo) = match how {
        Gate::NotConnected => return Detour::Fail(Errno(libc::ENOTCONN)),
        Gate::Recv(f) => (f, libc::SO_RCVTIMEO),
        Gate::Send(f) => (f, libc::SO_SNDTIMEO),
    };
    let fl = c.restore_flags.unwrap_or_else(|| sys::fcntl_getfl(fd).unwrap_or(libc::O_NONBLOCK));
    if fl & libc::O_NONBLOCK != 0 || flags & libc::MSG_DONTWAIT != 0 {
        return Detour::Fail(Errno(libc::EAGAIN));
    }
    let now = Instant::now();
    let start = *ctx.start.get_or_insert(now);
    // The kernel's wait (sk_wait_data, sk_stream_wait_connect) ends with the socket's timeout
    // (EAGAIN), and a handler interrupts it: EINTR with a timeout set, else restarted only
    // when the handler has SA_RESTART (ERESTARTSYS).
    let limit = sys::sock_timeout(fd, timeo);
    let signalled = ctx.round > 0 && matches!(ctx.woke, Some((r, e)) if r < 0 && e.raw() == libc::EINTR);
    if signalled && (limit.is_some() || crate::net::rx::interrupted(ctx)) {
        return Detour::Fail(Errno(libc::EINTR));
    }
    let within = match limit {
        Some(t) => {
            let left = t.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Detour::Fail(Errno(libc::EAGAIN));
            }
            Some(left)
        }
        None => None,
    };
    // Only a thread that really waits gets (or makes) its wake-up eventfd.
    let Some(w) = wake::mine() else { return Detour::Fail(Errno(libc::EAGAIN)) };
    wake::drain(w);
    c.waiters.push(w);
    let left = if c.owner != sys::pid() { FOREIGN_LOOK } else { c.deadline.saturating_duration_since(now) + Duration::from_millis(100) };
    let left = within.map_or(left, |w| w.min(left));
    drop(t);
    Detour::Wait(Wait { fds: wake::one(w, libc::POLLIN), n: 1, timeout_ms: left.as_millis().clamp(1, i32::MAX as u128) as i32, sigmask: std::ptr::null() })
}

/// close(): forget `fd`; the handshake is abandoned with the socket's last fd.
pub fn on_close(fd: i32) {
    if !active() {
        return;
    }
    let mut t = TABLE.lock();
    if adopt::keep(&mut t, fd) {
        t.forget_epoll(fd);
        return;
    }
    if let Some(c) = t.forget_fd(fd) {
        let key = c.name_key.filter(|_| c.held.is_none() && c.result.is_none());
        cancel(c);
        if let Some(k) = key {
            t.release_abandoned(k);
        }
    }
    t.forget_epoll(fd);
}

/// A conn removed before its end: stop watching it (only the process that drives it may touch
/// the driver's set) and wake whoever waits on it.
fn cancel(mut c: Conn) {
    if c.result.is_none() {
        // SAFETY: addr holds len bytes (copied from the application's connect).
        if let Some(dest) = unsafe { tsproxy_core::sockaddr::read(std::ptr::addr_of!(c.addr).cast(), c.len) } {
            crate::net::siblings::abandoned(dest, c.t0.elapsed());
        }
    }
    if c.in_driver && c.owner == sys::pid() {
        let _ = sys::epoll_ctl(driver::ep(), libc::EPOLL_CTL_DEL, c.fd, 0, 0);
    }
    for w in std::mem::take(&mut c.waiters) {
        wake::signal(w);
    }
}

pub fn on_close_range(first: u32, last: u32) {
    if !active() {
        return;
    }
    let lo = first.min(i32::MAX as u32) as i32;
    let hi = last.min(i32::MAX as u32) as i32;
    let fds = TABLE.lock().fds_in(lo, hi);
    for fd in fds {
        on_close(fd);
    }
}

/// dup/dup2/dup3/F_DUPFD: `new` refers to the same socket as `old`.
pub fn on_dup(old: i32, new: i32) {
    if !active() || old == new || new < 0 {
        return;
    }
    let mut t = TABLE.lock();
    if let Some(c) = t.forget_fd(new) {
        cancel(c);
    }
    if let Some(slot) = t.lookup(old) {
        t.add_fd(slot, new);
    }
}

/// Whether a socket is still handshaking (for the gates, epoll_ctl and the waits). A handshake
/// inherited over fork() is the parent's to finish: once the parent published its end (or,
/// without a shared word, after its deadline) it is forgotten here, and the socket is what the
/// kernel says — the parent made it so, and put the epoll registrations (shared sets) back.
pub fn pending_slot(t: &mut table::Table, fd: i32) -> Option<usize> {
    let slot = t.lookup(fd)?;
    let c = t.conn(slot)?;
    if c.result.is_some() {
        return None;
    }
    if c.owner != sys::pid() && (c.shared.is_some_and(|w| shared::ended(w, c.id)) || Instant::now() >= c.deadline) {
        if let Some(c) = t.remove(slot) {
            // Registrations this process made while it ran go in now (those inherited were put
            // back by the parent in the sets both share: EEXIST, harmless).
            for r in c.regs {
                let _ = sys::epoll_ctl(r.epfd, libc::EPOLL_CTL_ADD, r.fd, r.events, r.data);
            }
        }
        return None;
    }
    Some(slot)
}

/// Is the handshake of `slot` another process's (inherited over fork)? Its end wakes nobody
/// here: waiters look again every `FOREIGN_LOOK`.
pub fn foreign(t: &mut table::Table, slot: usize) -> bool {
    t.conn(slot).is_some_and(|c| c.owner != sys::pid())
}

/// How often a waiter looks at a handshake another process runs.
pub const FOREIGN_LOOK: Duration = Duration::from_millis(50);

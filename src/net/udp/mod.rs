//! UDP to proxied destinations through SOCKS5 UDP ASSOCIATE (RFC 1928 §7), on the program's
//! own datagram socket.
//!
//! The first datagram of a socket to a proxied destination opens the association (a
//! `connect` alone does not: see below): a TCP control connection to the first SOCKS5 upstream that takes UDP
//! ASSOCIATE (same list, auth and failover as TCP; HTTP upstreams cannot carry datagrams),
//! whose reply names the relay. From then on the program's datagrams to proxied destinations
//! leave *its own socket* for the relay with the §7 header in front, and the relay's
//! datagrams arrive in its own receive queue — so poll/epoll/select readiness is the kernel's —
//! and have the header taken off, their source reported as the tailnet address (or placeholder)
//! the program talked to. Datagrams to anything else go out untouched, by the kernel.
//!
//! - **Connected sockets**: `connect()` to a proxied destination connects the kernel socket to
//!   the relay instead (so the kernel drops every other sender, as it would for the peer);
//!   `getpeername` names the destination and `getsockname` the address the kernel would have
//!   chosen to reach it (asked of a scratch socket: a UDP connect sends nothing).
//!   Without an association yet, `connect()` opens none: programs often connect a UDP socket
//!   only to learn their source address and never send. The kernel socket is bound and
//!   connected to itself meanwhile (it takes no one's datagrams, as a connected socket that
//!   has heard nothing yet; nothing leaves it), and its first send associates, disconnects it
//!   from itself (keeping its port) and connects it to the relay. A socket closed without
//!   sending costs no proxy connection and logs nothing.
//! - **Lifetime**: the control connection is a descriptor of ours (high, close-on-exec, not
//!   closable by the program: `fds::move_high`), one per socket; it is closed with the last
//!   descriptor of the socket in this process (close, dup2 over it, close_range). A child after
//!   fork keeps the socket and a copy of the control connection, so the relay stays up for it;
//!   exec closes the copy (close-on-exec), and the new image associates again if it needs to.
//! - **Setup cost**: the handshake runs inline in the first send, bounded by the
//!   connect timeout (blocking socket) or by `NONBLOCK_SETUP` (nonblocking socket: a loopback
//!   proxy answers in well under a millisecond; one that does not answer in time refuses the
//!   datagram with ENETUNREACH rather than stall the program's loop longer).
//! - **Errors**: no proxy takes the association → ENETUNREACH and one log line per datagram,
//!   never a direct packet. The control connection closed by the proxy is noticed at the next
//!   send (checked at most every `CHECK_EVERY_MS`, or at once when the relay answers a connected
//!   socket with ICMP "port unreachable"): that send associates again.
//!
//! Limits (README): descriptors at 65536 and above are not relayed (the per-fd byte table ends
//! there: their datagrams to tailnet destinations are refused as before); a datagram larger
//! than `socks5::UDP_MAX` with its header fails with EMSGSIZE.
pub mod relay;

use crate::net::fds;
use crate::spin::SpinLock;
use crate::state;
use libc::c_int;
use libc::{sockaddr_storage, socklen_t};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tsproxy_core::config::LogLevel;
use tsproxy_core::{sockaddr as sa, socks5, sys, syscall, tunnel, Errno, Target};

/// The longest a nonblocking socket's first datagram waits for its association.
const NONBLOCK_SETUP: Duration = Duration::from_secs(1);
/// How often a send looks at the control connection (a poll without waiting), in ms of the
/// coarse clock (`coarse_ms`).
const CHECK_EVERY_MS: u64 = 200;
/// Names remembered per association for the replies (the oldest go first).
const NAMES_MAX: usize = 64;

/// The destination a connected socket talks to.
#[derive(Clone)]
pub struct Peer {
    /// As the program gave it (a tailnet address or a placeholder).
    pub addr: SocketAddr,
    pub target: Target,
    /// Its §7 header, and that header's length.
    pub hdr: [u8; socks5::UDP_HEADER_MAX],
    pub hlen: usize,
    /// The address the kernel would have used to reach it (getsockname).
    pub local: Option<SocketAddr>,
}

/// One association (one per socket), or a connected socket's entry before its first send
/// (`ctl` -1, `dead`: the next send associates).
pub struct Assoc {
    /// The control connection (a descriptor of ours); -1: not associated yet.
    ctl: c_int,
    /// The relay, as the reply named it.
    pub relay: SocketAddr,
    pub peer: Option<Peer>,
    /// Name targets sent to, with the placeholder the program used: replies naming them are
    /// reported as coming from the placeholder.
    pub names: Vec<(String, u16, SocketAddr)>,
    /// IP targets sent to (replies from them are reported as they are).
    pub ips: usize,
    /// The relay's address as written for the program's socket's family (what a send names).
    relay_sa: (sockaddr_storage, socklen_t),
    /// The kernel socket is connected to this relay (a send then names no address: the kernel
    /// uses the socket's cached route, as for the program's own connected socket).
    wired: bool,
    /// The kernel socket is connected to itself (connected, not associated yet: `park`).
    parked: bool,
    /// When the control connection was last looked at (`coarse_ms`).
    checked: u64,
    dead: bool,
}

/// A coarse monotonic clock in ms: the vDSO's CLOCK_MONOTONIC_COARSE (the kernel's last tick,
/// read from a shared page: no syscall, no TSC read), plenty for a 200 ms period.
fn coarse_ms() -> u64 {
    // SAFETY: all-zero is a valid timespec; clock_gettime writes it (the vDSO: no syscall, and
    // not a function of ours or one that re-enters a hook).
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: ts is a valid timespec to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1000).saturating_add(ts.tv_nsec as u64 / 1_000_000)
}

/// What a send needs of its socket's association, taken in one look (`route`).
pub struct Route {
    /// Where the datagram goes: None when the kernel socket is connected to the relay.
    pub to: Option<(sockaddr_storage, socklen_t)>,
    /// The connected destination's §7 header and its length (asked for with `want_peer`).
    pub hdr: [u8; socks5::UDP_HEADER_MAX],
    pub hlen: usize,
}

/// The outcome of `route`. (Returned by value, not boxed: the send path allocates nothing.)
#[allow(clippy::large_enum_variant)]
pub enum Look {
    Live(Route),
    /// No association, or one whose control connection is gone: `ensure` first.
    Stale,
    /// `want_peer`, but the socket is not connected through the relay.
    NoPeer,
}

/// The per-send look at `fd`'s association: one lock, one coarse clock read, and a poll of the
/// control connection no more than every `CHECK_EVERY_MS`. `note`: the destination a datagram
/// names (remembered for the replies); `want_peer`: a send without an address, which goes to
/// the destination the socket is connected to.
pub fn route(fd: c_int, note: Option<(&Target, SocketAddr)>, want_peer: bool) -> Look {
    let now = coarse_ms();
    let mut t = TABLE.lock();
    let Some(&ino) = t.by_fd.get(&fd) else { return Look::Stale };
    let Some(a) = t.by_ino.get_mut(&ino) else { return Look::Stale };
    if want_peer && a.peer.is_none() {
        return Look::NoPeer;
    }
    if !a.dead && now.wrapping_sub(a.checked) >= CHECK_EVERY_MS {
        a.checked = now;
        // A poll without waiting: a nonblocking syscall, allowed under the lock.
        a.dead = ctl_gone(a.ctl);
    }
    if a.dead {
        return Look::Stale;
    }
    if let Some((t, d)) = note {
        a.note(t, d);
    }
    let mut r = Route { to: (!a.wired).then_some(a.relay_sa), hdr: [0u8; socks5::UDP_HEADER_MAX], hlen: 0 };
    if want_peer {
        if let Some(p) = &a.peer {
            r.hdr = p.hdr;
            r.hlen = p.hlen;
        }
    }
    Look::Live(r)
}

static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Associations by socket inode, and which descriptors of this process name each socket.
struct Table {
    by_ino: BTreeMap<u64, Assoc>,
    by_fd: BTreeMap<i32, u64>,
}
static TABLE: SpinLock<Table> = SpinLock::new(Table { by_ino: BTreeMap::new(), by_fd: BTreeMap::new() });

pub fn lock_for_fork() {
    TABLE.hold_for_fork();
}

pub fn unlock_after_fork() {
    TABLE.release_after_fork();
}

/// Does any socket of this process relay datagrams? (The I/O hooks' fast check.)
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Is `fd` (probably) one of ours? The byte table's flag.
pub fn marked(fd: c_int) -> bool {
    active() && fds::get(fd) & fds::UDP != 0
}

/// Run `f` on `fd`'s association, if it has one.
pub fn with<R>(fd: c_int, f: impl FnOnce(&mut Assoc) -> R) -> Option<R> {
    let mut t = TABLE.lock();
    let ino = *t.by_fd.get(&fd)?;
    t.by_ino.get_mut(&ino).map(f)
}

/// The destination `fd` is connected to through the relay.
pub fn peer(fd: c_int) -> Option<SocketAddr> {
    if !marked(fd) {
        return None;
    }
    with(fd, |a| a.peer.as_ref().map(|p| p.addr)).flatten()
}

/// getsockname of a socket connected through the relay: its port, and the address the kernel
/// would have chosen for the destination (not the loopback one it uses for the relay).
pub fn local(fd: c_int) -> Option<SocketAddr> {
    if !marked(fd) {
        return None;
    }
    let ip = with(fd, |a| a.peer.as_ref().and_then(|p| p.local))??;
    let me = relay::local_addr(fd)?;
    Some(SocketAddr::new(ip.ip(), me.port()))
}

/// close(fd) or dup2 onto it: the socket loses a descriptor; with its last one (in this
/// process) the association ends.
pub fn on_close(fd: c_int) {
    if !active() {
        return;
    }
    let ctl = {
        let mut t = TABLE.lock();
        let Some(ino) = t.by_fd.remove(&fd) else { return };
        if t.by_fd.values().any(|&i| i == ino) {
            return;
        }
        t.by_ino.remove(&ino).map(|a| a.ctl)
    };
    fds::forget(fd);
    if let Some(ctl) = ctl.filter(|&c| c >= 0) {
        fds::release_ours(ctl);
    }
}

pub fn on_close_range(first: u32, last: u32) {
    if !active() {
        return;
    }
    let fds: Vec<i32> = TABLE.lock().by_fd.keys().copied().filter(|&f| f as u32 >= first && f as u32 <= last).collect();
    for fd in fds {
        on_close(fd);
    }
}

/// `new` is a duplicate of `old`.
pub fn on_dup(old: c_int, new: c_int) {
    if !active() {
        return;
    }
    let mut t = TABLE.lock();
    if let Some(&ino) = t.by_fd.get(&old) {
        t.by_fd.insert(new, ino);
    }
}

/// connect() on a socket of ours to a destination that is not proxied (or AF_UNSPEC): it is no
/// longer connected through the relay (the association stays for its unconnected sends).
pub fn disconnect(fd: c_int) {
    if marked(fd) {
        let was = with(fd, |a| {
            a.wired = false;
            a.parked = false;
            a.peer.take().is_some()
        })
        .unwrap_or(false);
        if was {
            disconnect_keeping_port(fd);
        }
    }
}

/// The relay gave an error for a send (ICMP "port unreachable" on a connected socket): it is
/// gone, the next `ensure` associates again.
pub fn relay_gone(fd: c_int) {
    with(fd, |a| a.dead = true);
}

/// The socket's family.
pub fn family(fd: c_int) -> Option<c_int> {
    sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).ok()
}

/// Bind an unbound socket to its family's wildcard address, port 0, as its first send would:
/// the association must know the port its datagrams come from.
fn ensure_bound(fd: c_int, fam: c_int) -> Option<SocketAddr> {
    let me = relay::local_addr(fd)?;
    if me.port() != 0 {
        return Some(me);
    }
    let any = if fam == libc::AF_INET6 { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
    let (s, l) = sa::encode(SocketAddr::new(any, 0), fam)?;
    syscall!(SYS_bind, fd, &s as *const libc::sockaddr_storage, l).ok()?;
    relay::local_addr(fd)
}

/// The relay for `fd`, associating first if needed (or again, when the control connection is
/// gone). Err: no proxy would relay (logged).
pub fn ensure(fd: c_int, why: &dyn std::fmt::Display) -> Result<SocketAddr, Errno> {
    if fd < 0 || fd as usize >= fds::N {
        crate::log::log!(Error, "udp fd={fd} {why}: descriptor beyond the relay's table; refused");
        return Err(Errno(libc::ENETUNREACH));
    }
    let now = coarse_ms();
    let (found, stale) = look(fd, now);
    if let Some(r) = found {
        return Ok(r);
    }
    if let Some(ino) = stale {
        // An association the proxy closed: its control connection goes now (a connected
        // socket not associated yet has none). The entry stays (peer, names, a kernel socket
        // connected to itself) until a new association replaces it: a refused association
        // changes nothing, and the next send tries again.
        let old = TABLE.lock().by_ino.get_mut(&ino).map(|a| std::mem::replace(&mut a.ctl, -1));
        if let Some(ctl) = old.filter(|&c| c >= 0) {
            crate::log::log!(Info, "udp fd={fd}: the proxy closed the association; associating again");
            fds::release_ours(ctl);
        }
    }
    let (ctl, relay) = associate(fd, why)?;
    let fam = family(fd).unwrap_or(libc::AF_INET);
    let Some(ino) = crate::net::pending::table::inode(fd) else {
        fds::release_ours(ctl);
        return Err(Errno(libc::EBADF));
    };
    // associate() made sure the relay can be written for this family.
    let Some(relay_sa) = sa::encode(relay, fam) else {
        fds::release_ours(ctl);
        return Err(Errno(libc::ENETUNREACH));
    };
    let mut a = Assoc { ctl, relay, peer: None, names: Vec::new(), ips: 0, relay_sa, wired: false, parked: false, checked: now, dead: false };
    crate::fork::arm();
    let (extra, parked) = {
        let mut t = TABLE.lock();
        t.by_fd.insert(fd, ino);
        match t.by_ino.get_mut(&ino) {
            // Another thread may have associated the same socket meanwhile: one is enough.
            Some(theirs) if !theirs.dead => (Some((ctl, theirs.relay)), false),
            // The stale entry (closed, or connected and not associated yet) hands over.
            Some(old) => {
                a.peer = old.peer.take();
                a.names = std::mem::take(&mut old.names);
                a.ips = old.ips;
                let parked = old.parked;
                *old = a;
                (None, parked)
            }
            None => {
                t.by_ino.insert(ino, a);
                (None, false)
            }
        }
    };
    fds::mark_udp(fd);
    ACTIVE.store(true, Ordering::Release);
    if let Some((mine, theirs)) = extra {
        fds::release_ours(mine);
        return Ok(theirs);
    }
    if parked {
        // Connected to itself until now (`park`): free for the relay, on the port the
        // association was made for.
        disconnect_keeping_port(fd);
    }
    if with(fd, |a| a.peer.is_some()) == Some(true) {
        // Connected through the old relay, or to itself: through the new one from now on
        // (sends name the relay until that succeeds).
        let ok = sys::connect_raw(fd, (&relay_sa.0 as *const libc::sockaddr_storage).cast(), relay_sa.1).is_ok();
        with(fd, |a| a.wired = ok);
    }
    Ok(relay)
}

/// `fd`'s live association's relay, its control connection looked at when due; or the inode
/// of its entry that needs `ensure` (an association the proxy closed, or none yet).
fn look(fd: c_int, now: u64) -> (Option<SocketAddr>, Option<u64>) {
    if !marked(fd) {
        return (None, None);
    }
    let mut t = TABLE.lock();
    let Some(&ino) = t.by_fd.get(&fd) else { return (None, None) };
    let Some(a) = t.by_ino.get_mut(&ino) else { return (None, None) };
    if !a.dead && now.wrapping_sub(a.checked) >= CHECK_EVERY_MS {
        a.checked = now;
        a.dead = ctl_gone(a.ctl);
    }
    if a.dead {
        (None, Some(ino))
    } else {
        (Some(a.relay), None)
    }
}

/// Disconnect the kernel socket (AF_UNSPEC), and bind it again to the port it had when the
/// kernel let it go (a port the socket chose itself is not kept by a disconnect): the program
/// and the association know it by that port.
fn disconnect_keeping_port(fd: c_int) {
    let before = relay::local_addr(fd);
    sys::disconnect(fd);
    let (Some(before), Some(now)) = (before, relay::local_addr(fd)) else { return };
    if before.port() != 0 && now.port() == 0 {
        if let Some((s, l)) = sa::encode(SocketAddr::new(now.ip(), before.port()), family(fd).unwrap_or(libc::AF_INET)) {
            // Taken meanwhile by someone else: the first send binds another (ensure_bound).
            let _ = syscall!(SYS_bind, fd, &s as *const libc::sockaddr_storage, l);
        }
    }
}

/// connect() of a socket without a live association: no association yet (its first send
/// opens one). The kernel socket is bound, and connected to itself: connected, it takes
/// datagrams from itself only, and nothing it could send leaves the host.
fn park(fd: c_int, fam: c_int) -> Result<(), Errno> {
    let refused = Err(Errno(libc::ENETUNREACH));
    let Some(me) = ensure_bound(fd, fam) else {
        crate::log::log!(Error, "udp connect fd={fd}: could not bind the socket; refused");
        return refused;
    };
    let ip = if tsproxy_core::cidr::unmap(me.ip()).is_unspecified() {
        if fam == libc::AF_INET6 {
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }
    } else {
        me.ip()
    };
    let Some((s, l)) = sa::encode(SocketAddr::new(ip, me.port()), fam) else { return refused };
    if let Err(e) = sys::connect_raw(fd, (&s as *const libc::sockaddr_storage).cast(), l) {
        crate::log::log!(Error, "udp connect fd={fd}: connecting the socket to itself: {e}; refused");
        return refused;
    }
    let Some(ino) = crate::net::pending::table::inode(fd) else { return Err(Errno(libc::EBADF)) };
    // SAFETY: all-zero is a valid sockaddr_storage (never used: `dead` until associated).
    let none: sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut a = Assoc {
        ctl: -1,
        relay: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        peer: None,
        names: Vec::new(),
        ips: 0,
        relay_sa: (none, 0),
        wired: false,
        parked: true,
        checked: coarse_ms(),
        dead: true,
    };
    crate::fork::arm();
    let old = {
        let mut t = TABLE.lock();
        t.by_fd.insert(fd, ino);
        let old = t.by_ino.remove(&ino);
        if let Some(o) = &old {
            // An association the proxy closed: its names still report unconnected replies.
            a.names.clone_from(&o.names);
            a.ips = o.ips;
        }
        t.by_ino.insert(ino, a);
        old
    };
    fds::mark_udp(fd);
    ACTIVE.store(true, Ordering::Release);
    if let Some(o) = old.filter(|o| o.ctl >= 0) {
        fds::release_ours(o.ctl);
    }
    Ok(())
}

/// Has the proxy closed the control connection (or sent anything on it, which it never
/// should)? A poll without waiting.
fn ctl_gone(ctl: c_int) -> bool {
    matches!(sys::poll1(ctl, libc::POLLIN | libc::POLLRDHUP, 0), Ok(r) if r != 0)
}

/// Open a control connection and ask for UDP ASSOCIATE: (the control fd, the relay).
fn associate(fd: c_int, why: &dyn std::fmt::Display) -> Result<(c_int, SocketAddr), Errno> {
    let refused = Err(Errno(libc::ENETUNREACH));
    let st = state::get();
    let Some(cfg) = &st.cfg else {
        crate::log::log!(Error, "udp fd={fd} {why}: refused, the configuration is invalid");
        return refused;
    };
    let Some(fam) = family(fd) else { return refused };
    let Some(me) = ensure_bound(fd, fam) else {
        crate::log::log!(Error, "udp fd={fd} {why}: could not bind the socket; refused");
        return refused;
    };
    let ups = st.upstreams();
    // The control connection's family: IPv4 when any proxy address is one (the usual
    // 127.0.0.1), else IPv6.
    let cfam = if ups.iter().flat_map(|r| r.addrs.iter()).any(|a| a.is_ipv4()) { libc::AF_INET } else { libc::AF_INET6 };
    let Ok(ctl) = syscall!(SYS_socket, cfam, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) else { return refused };
    let ctl = fds::move_high(ctl as c_int);
    let blocking = sys::fcntl_getfl(fd).is_ok_and(|f| f & libc::O_NONBLOCK == 0);
    let limit = if blocking { cfg.timeout } else { cfg.timeout.min(NONBLOCK_SETUP) };
    // The client's port (address zeros: it may be the wildcard): dante checks the port.
    let client = SocketAddr::new(if cfam == libc::AF_INET { IpAddr::V4(Ipv4Addr::UNSPECIFIED) } else { IpAddr::V6(Ipv6Addr::UNSPECIFIED) }, me.port());
    let mut hs = tunnel::Handshake::associate(ctl, cfam, ups, client, cfg.pipeline);
    let mut log = |lvl: LogLevel, a: std::fmt::Arguments<'_>| {
        if crate::log::enabled(lvl) {
            crate::log::write(lvl, format_args!("udp fd={fd}: {a}"));
        }
    };
    let r = tunnel::drive(&mut hs, Instant::now() + limit, None, &mut log);
    let relay = match (r, hs.bound()) {
        (Ok(via), Some(relay)) => {
            // A relay on the wildcard address is on the proxy's host.
            if relay.ip().is_unspecified() {
                SocketAddr::new(via.ip(), relay.port())
            } else {
                relay
            }
        }
        (r, _) => {
            fds::release_ours(ctl);
            crate::log::log!(
                Error,
                "udp fd={fd} {why}: no proxy relays UDP ({}); refused, never sent directly",
                match r {
                    Err(e) => e.to_string(),
                    Ok(_) => "no relay address".into(),
                }
            );
            return refused;
        }
    };
    if sa::encode(relay, fam).is_none() {
        fds::release_ours(ctl);
        crate::log::log!(Error, "udp fd={fd} {why}: the relay {relay} cannot be reached from an IPv4 socket; refused");
        return refused;
    }
    crate::log::log!(Debug, "udp fd={fd} {why}: associated, relay {relay}");
    Ok((ctl, relay))
}

/// connect() of a datagram socket to a proxied destination: associate, connect the kernel
/// socket to the relay, remember the destination. None: not a datagram socket (the caller
/// goes on as for TCP).
pub fn connect(fd: c_int, dest: SocketAddr, target: &Target, known: u8) -> Option<crate::boundary::Detour<c_int>> {
    use crate::boundary::Detour;
    if known & fds::FRESH_STREAM != 0 || sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE).ok()? != libc::SOCK_DGRAM {
        return None;
    }
    let fam = family(fd)?;
    if fam != libc::AF_INET && fam != libc::AF_INET6 {
        return None;
    }
    let mut hdr = [0u8; socks5::UDP_HEADER_MAX];
    let hlen = match socks5::udp_header(target, &mut hdr) {
        Ok(n) => n,
        Err(e) => {
            crate::log::log!(Error, "udp connect fd={fd} {target}: {e:?}; refused");
            return Some(Detour::Fail(Errno(libc::EINVAL)));
        }
    };
    // A live association (the socket sent before): connected to its relay. None yet: no
    // association until the first send (`park`).
    let relay = match look(fd, coarse_ms()).0 {
        Some(relay) => {
            let (s, l) = sa::encode(relay, fam)?;
            if let Err(e) = sys::connect_raw(fd, (&s as *const libc::sockaddr_storage).cast(), l) {
                crate::log::log!(Error, "udp connect fd={fd} {target}: connecting to the relay {relay}: {e}; refused");
                return Some(Detour::Fail(Errno(libc::ENETUNREACH)));
            }
            Some(relay)
        }
        None => {
            if let Err(e) = park(fd, fam) {
                return Some(Detour::Fail(e));
            }
            None
        }
    };
    // A placeholder has no route: the wildcard address, as an unconnected socket reports.
    let local = route_source(dest, fam).or_else(|| {
        let any = if fam == libc::AF_INET6 { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
        Some(SocketAddr::new(any, 0))
    });
    with(fd, |a| {
        a.peer = Some(Peer { addr: dest, target: target.clone(), hdr, hlen, local });
        // connect_raw above connected the kernel socket to this association's relay.
        a.wired = relay.is_some_and(|r| a.relay == r && a.ctl >= 0);
        a.note(target, dest);
    });
    match relay {
        Some(relay) => crate::log::log!(Debug, "connect fd={fd} {dest} -> udp via relay {relay} ({target})"),
        None => crate::log::log!(Debug, "connect fd={fd} {dest} -> udp ({target}), associating at the first send"),
    }
    Some(Detour::Done(0))
}

/// The source address the kernel would choose to reach `dest` (a scratch socket's connect: a
/// UDP connect sends nothing). Placeholders and unroutable destinations: none.
fn route_source(dest: SocketAddr, fam: c_int) -> Option<SocketAddr> {
    let s = syscall!(SYS_socket, fam, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0).ok()? as c_int;
    let r = sa::encode(dest, fam).and_then(|(a, l)| {
        sys::connect_raw(s, (&a as *const libc::sockaddr_storage).cast(), l).ok()?;
        relay::local_addr(s)
    });
    let _ = syscall!(SYS_close, s);
    r
}

impl Assoc {
    /// A datagram to `target`, which the program named `dest`: remember how to report replies.
    pub fn note(&mut self, target: &Target, dest: SocketAddr) {
        match target {
            Target::Name(n, p) => {
                if !self.names.iter().any(|(m, q, _)| m == n && q == p) {
                    if self.names.len() >= NAMES_MAX {
                        self.names.remove(0);
                    }
                    self.names.push((n.clone(), *p, dest));
                }
            }
            Target::Ip(_) => self.ips = self.ips.saturating_add(1).min(2),
        }
    }
}

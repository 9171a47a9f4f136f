//! Connected UDP sockets of supervised programs (static binaries: Go's `net.Dial("udp", ...)`)
//! to tailnet destinations, through the proxy's UDP ASSOCIATE.
//!
//! The supervisor cannot add the SOCKS5 header to datagrams in the program's memory, so it
//! relays them itself. On the program's `connect`, only what is cheap and local:
//! - a loopback socket `near` of ours, which the program's socket is connected to (through our
//!   `pidfd_getfd` copy of it) and which is connected back to the program's socket, so the
//!   kernel passes only that socket's datagrams both ways; the connect returns 0 at once and
//!   `getsockname` names the program's loopback end. The copy is kept as long as `near`:
//!   the program's address stays bound to its socket until the entry ends, so no one else
//!   (another local user) can take that address and be relayed as the program.
//!
//! The association (the control connection to the proxy and a UDP socket `up` of ours, the
//! same upstreams, auth and failover as TCP; HTTP upstreams skipped) is opened only when the
//! program sends its first datagram. Many programs connect a UDP socket only to learn their
//! source address and never send (musl's and glibc's getaddrinfo sort their answers that way,
//! and Go programs do it too): such a socket costs no proxy connection, and nothing is logged.
//! - Idle sockets (connected, nothing sent) wait in one table, watched by one thread (the
//!   waiter, started with the first and ending with the last), whatever their number: each
//!   costs two descriptors (`near` and the copy) and no thread. At most [`IDLE_MAX`] at once; a connect
//!   beyond that (after a look for closed ones) is refused (`ENETUNREACH`).
//! - The first datagram on `near` moves the socket to a relay thread of its own (at most
//!   [`MAX`] at once), which associates and then adds the header to what the program sends
//!   and strips it from what the relay answers, dropping datagrams from anyone else. The
//!   datagrams sent meanwhile wait in `near`'s receive queue.
//! - An association that fails (no proxy relays UDP, or [`MAX`] relays already) is logged once
//!   and `near` is closed: the waiting datagrams are dropped and the program's next sends to
//!   the loopback socket fail (`ECONNREFUSED`), as when a relay ends. Never sent directly.
//!
//! Idle sockets and relays end when the program's socket is gone (looked for in the program's
//! descriptors every [`LOOK`]) or when the program connects it again; a relay also ends when
//! the proxy closes the control connection.
//! What the program can notice: `getpeername` names the loopback socket, not the tailnet
//! destination; unconnected sends (`sendto` with an address) are still refused.
use super::log;
use super::notify::{lock, Sup};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tsproxy_core::config::{Config, LogLevel};
use tsproxy_core::tunnel::Resolved;
use tsproxy_core::{sockaddr, socks5, sys, syscall, tunnel, Errno, Target};

/// Associations relayed at once (one thread each); the first datagram of one more is dropped
/// and its socket's sends fail.
pub const MAX: usize = 64;
/// Connected sockets that have not sent yet, at once (one descriptor each, no thread); one
/// more connect is refused (`ENETUNREACH`).
pub const IDLE_MAX: usize = 512;
/// How often the program's descriptors are looked at.
const LOOK: Duration = Duration::from_secs(2);
/// Largest datagram relayed (tailscaled's buffer is 8 KiB).
const DGRAM: usize = 8192;

static LIVE: AtomicUsize = AtomicUsize::new(0);
/// Numbers each connect of a socket: the latest one owns it.
static SERIAL: AtomicU64 = AtomicU64::new(1);

/// What an association needs of the supervisor (fixed for its life), kept at the first connect.
struct Ctx {
    cfg: Config,
    ups: Vec<Resolved>,
}
static CTX: OnceLock<Ctx> = OnceLock::new();

/// A connected socket that has sent nothing yet.
struct Idle {
    near: Arc<UdpSocket>,
    /// Our copy of the program's socket, held as long as `near` is: `near` takes datagrams
    /// from whatever socket has the program's address, and while we hold the socket that
    /// address stays bound to it. Dropped at once (as before 2026-12-07), the address was free
    /// from the program's close until the next look (up to [`LOOK`]): another local user who
    /// bound it (it shows in /proc/net/udp) had the program's association to the tailnet
    /// destination, with the program's proxy credentials — its datagrams relayed to the
    /// destination and the answers sent back to it.
    _prog: OwnedFd,
    serial: u64,
    tgid: i32,
    target: Target,
}

/// The idle sockets by inode, and the waiter's wake-up (Some while a waiter runs).
struct Parked {
    by_ino: BTreeMap<u64, Idle>,
    wake: Option<UnixDatagram>,
}
static PARKED: Mutex<Parked> = Mutex::new(Parked { by_ino: BTreeMap::new(), wake: None });
/// The connect (serial) that owns each socket (inode) with an idle entry or a relay: a relay
/// whose socket was connected again ends.
static OWNER: Mutex<BTreeMap<u64, u64>> = Mutex::new(BTreeMap::new());

/// Connect the program's socket `sock` (our copy; inode `ino`, held by thread group `tgid`) to
/// a loopback socket of ours, for `target`; the association waits for its first datagram.
/// The verdict for its `connect`.
pub(super) fn start(sup: &Sup, sock: OwnedFd, ino: u64, tgid: i32, family: i32, target: Target) -> Result<(), Errno> {
    let refused = Err(Errno(libc::ENETUNREACH));
    let ctx = CTX.get_or_init(|| Ctx { cfg: sup.cfg.clone(), ups: sup.upstreams().to_vec() });
    let mut header = [0u8; socks5::UDP_HEADER_MAX];
    socks5::udp_header(&target, &mut header).map_err(|_| Errno(libc::ENETUNREACH))?;
    if lock(&PARKED).by_ino.len() >= IDLE_MAX {
        reap();
        if lock(&PARKED).by_ino.len() >= IDLE_MAX {
            log(
                &ctx.cfg,
                LogLevel::Error,
                format_args!("udp {target}: {IDLE_MAX} connected sockets already wait for their first datagram; refused (supervisor)"),
            );
            return refused;
        }
    }
    // The loopback socket the program's socket is connected to, of its family.
    let lo: IpAddr = if family == libc::AF_INET6 { Ipv6Addr::LOCALHOST.into() } else { Ipv4Addr::LOCALHOST.into() };
    let near = UdpSocket::bind(SocketAddr::new(lo, 0)).map_err(|_| Errno(libc::ENETUNREACH))?;
    let near_addr = near.local_addr().map_err(|_| Errno(libc::ENETUNREACH))?;
    let (sa, sl) = sockaddr::encode(near_addr, family).ok_or(Errno(libc::ENETUNREACH))?;
    sys::connect_raw(sock.as_raw_fd(), (&sa as *const libc::sockaddr_storage).cast(), sl).map_err(|e| Errno::of(&e))?;
    let Some(prog) = super::notify::local_addr(sock.as_raw_fd()) else { return refused };
    let prog = SocketAddr::new(if prog.ip().is_unspecified() { lo } else { prog.ip() }, prog.port());
    near.connect(prog).map_err(|_| Errno(libc::ENETUNREACH))?;
    near.set_nonblocking(true).map_err(|_| Errno(libc::ENETUNREACH))?;
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    lock(&OWNER).insert(ino, serial);
    let t = target.clone();
    if let Err(e) = park(ino, Idle { near: Arc::new(near), _prog: sock, serial, tgid, target }) {
        disown(ino, serial);
        log(&ctx.cfg, LogLevel::Error, format_args!("udp {t}: cannot start the thread that waits for datagrams ({e}); refused (supervisor)"));
        return refused;
    }
    log(&ctx.cfg, LogLevel::Debug, format_args!("udp {t}: the program's socket connected to {near_addr}; associating at its first datagram (supervisor)"));
    Ok(())
}

/// Add an idle socket (replacing the entry of an earlier connect of the same socket), and wake
/// the waiter or start one.
fn park(ino: u64, idle: Idle) -> std::io::Result<()> {
    let mut p = lock(&PARKED);
    let old = p.by_ino.insert(ino, idle);
    if let Some(w) = &p.wake {
        let _ = w.send(&[0]);
    } else {
        let started = UnixDatagram::pair().and_then(|(tx, rx)| {
            tx.set_nonblocking(true)?;
            rx.set_nonblocking(true)?;
            std::thread::Builder::new().name("tsproxy-udp-wait".into()).stack_size(128 << 10).spawn(move || wait_loop(rx))?;
            Ok(tx)
        });
        match started {
            Ok(tx) => p.wake = Some(tx),
            Err(e) => {
                p.by_ino.remove(&ino);
                drop(p);
                drop(old);
                return Err(e);
            }
        }
    }
    drop(p);
    drop(old);
    Ok(())
}

/// Forget that the connect `serial` owns socket `ino` (unless a later one does).
fn disown(ino: u64, serial: u64) {
    let mut o = lock(&OWNER);
    if o.get(&ino) == Some(&serial) {
        o.remove(&ino);
    }
}

/// Take the idle entry of `ino` out of the table, if it is still the one of connect `serial`.
fn unpark(ino: u64, serial: u64) -> Option<Idle> {
    let mut p = lock(&PARKED);
    if p.by_ino.get(&ino).is_some_and(|e| e.serial == serial) {
        p.by_ino.remove(&ino)
    } else {
        None
    }
}

/// The waiter: one poll over every idle socket's `near` (and the wake-up); a datagram moves its
/// socket to a relay, and every [`LOOK`] the sockets the program has closed are dropped. Ends
/// when no socket is idle (the next connect starts another).
fn wait_loop(rx: UnixDatagram) {
    let mut looked = Instant::now();
    loop {
        let snap: Vec<(u64, u64, Arc<UdpSocket>)> = {
            let mut p = lock(&PARKED);
            if p.by_ino.is_empty() {
                p.wake = None;
                return;
            }
            p.by_ino.iter().map(|(&ino, e)| (ino, e.serial, e.near.clone())).collect()
        };
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(snap.len() + 1);
        fds.push(libc::pollfd { fd: rx.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        fds.extend(snap.iter().map(|(_, _, near)| libc::pollfd { fd: near.as_raw_fd(), events: libc::POLLIN, revents: 0 }));
        let wait = LOOK.saturating_sub(looked.elapsed()).as_millis() as i32;
        // SAFETY: fds is a valid array of fds.len() pollfds, and every descriptor in it stays
        // open during the call (rx here, each near through its Arc in snap).
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
        if n > 0 {
            if fds[0].revents != 0 {
                let mut b = [0u8; 1];
                for _ in 0..64 {
                    if rx.recv(&mut b).is_err() {
                        break;
                    }
                }
            }
            for (i, (ino, serial, _)) in snap.iter().enumerate() {
                let ev = fds[i + 1].revents;
                if ev == 0 {
                    continue;
                }
                let Some(e) = unpark(*ino, *serial) else { continue };
                if ev & libc::POLLIN != 0 {
                    begin(*ino, e);
                } else {
                    // An error on a socket nothing sends from: give it up.
                    disown(*ino, *serial);
                }
            }
        }
        if looked.elapsed() >= LOOK {
            looked = Instant::now();
            reap();
        }
    }
}

/// The socket inodes thread group `tgid` holds (none when it is gone).
pub(super) fn socket_inodes(tgid: i32) -> HashSet<u64> {
    let Ok(d) = std::fs::read_dir(format!("/proc/{tgid}/fd")) else { return HashSet::new() };
    d.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| l.to_str().and_then(|s| s.strip_prefix("socket:[")).and_then(|s| s.strip_suffix(']')).and_then(|s| s.parse().ok()))
        .collect()
}

/// Drop the idle entries whose socket the program no longer holds (one look at each process's
/// descriptors).
fn reap() {
    let snap: Vec<(u64, u64, i32)> = lock(&PARKED).by_ino.iter().map(|(&ino, e)| (ino, e.serial, e.tgid)).collect();
    let mut held: HashMap<i32, HashSet<u64>> = HashMap::new();
    let gone: Vec<(u64, u64)> = snap
        .into_iter()
        .filter(|(ino, _, tgid)| !held.entry(*tgid).or_insert_with(|| socket_inodes(*tgid)).contains(ino))
        .map(|(ino, serial, _)| (ino, serial))
        .collect();
    for (ino, serial) in gone {
        // Dropped outside the lock: closing `near` is a system call.
        drop(unpark(ino, serial));
        disown(ino, serial);
    }
}

/// The socket's first datagram has arrived: associate and relay on a thread of its own.
fn begin(ino: u64, e: Idle) {
    let Some(ctx) = CTX.get() else { return };
    let (serial, target) = (e.serial, e.target.clone());
    if LIVE.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX).then_some(n + 1)).is_err() {
        log(
            &ctx.cfg,
            LogLevel::Error,
            format_args!("udp {target}: {MAX} associations already relayed; datagram dropped, the socket's sends fail from now on (supervisor)"),
        );
        disown(ino, serial);
        return;
    }
    let spawned = std::thread::Builder::new().name("tsproxy-udp".into()).stack_size(128 << 10).spawn(move || {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| relay(ctx, ino, e)));
        LIVE.fetch_sub(1, Ordering::AcqRel);
        disown(ino, serial);
    });
    if let Err(err) = spawned {
        LIVE.fetch_sub(1, Ordering::AcqRel);
        disown(ino, serial);
        log(
            &ctx.cfg,
            LogLevel::Error,
            format_args!("udp {target}: cannot start a relay thread ({err}); datagram dropped, the socket's sends fail from now on (supervisor)"),
        );
    }
}

/// Associate with the proxy: (our UDP socket, the control connection, the relay). Err: logged.
fn associate(ctx: &Ctx, target: &Target) -> Result<(UdpSocket, OwnedFd, SocketAddr), ()> {
    let cfg = &ctx.cfg;
    let fail = |why: &dyn std::fmt::Display| {
        log(
            cfg,
            LogLevel::Error,
            format_args!("udp {target}: no proxy relays UDP ({why}); datagram dropped, the socket's sends fail from now on, never sent directly (supervisor)"),
        );
    };
    let cfam = if ctx.ups.iter().flat_map(|r| r.addrs.iter()).any(|a| a.is_ipv4()) { libc::AF_INET } else { libc::AF_INET6 };
    let any: IpAddr = if cfam == libc::AF_INET { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
    let up = UdpSocket::bind(SocketAddr::new(any, 0)).map_err(|e| fail(&e))?;
    let up_port = up.local_addr().map_err(|e| fail(&e))?.port();
    let ctl = syscall!(SYS_socket, cfam, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0).map_err(|e| fail(&e))?;
    // SAFETY: a descriptor just made, owned here alone.
    let ctl = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(ctl as i32) };
    let mut hs = tunnel::Handshake::associate(ctl.as_raw_fd(), cfam, &ctx.ups, SocketAddr::new(any, up_port), cfg.pipeline);
    let r = tunnel::drive(&mut hs, Instant::now() + cfg.timeout, None, &mut |l, a| log(cfg, l, format_args!("udp {target}: {a} (supervisor)")));
    let relay = match (r, hs.bound()) {
        (Ok(via), Some(b)) if b.ip().is_unspecified() => SocketAddr::new(via.ip(), b.port()),
        (Ok(_), Some(b)) => b,
        (Err(e), _) => {
            fail(&e);
            return Err(());
        }
        (Ok(_), None) => {
            fail(&"no relay address");
            return Err(());
        }
    };
    Ok((up, ctl, relay))
}

fn relay(ctx: &Ctx, ino: u64, e: Idle) {
    let mut header = [0u8; socks5::UDP_HEADER_MAX];
    let Ok(hlen) = socks5::udp_header(&e.target, &mut header) else { return };
    let Ok((up, ctl, relay)) = associate(ctx, &e.target) else { return };
    log(&ctx.cfg, LogLevel::Debug, format_args!("udp {}: associated at the first datagram, relay {relay} (supervisor)", e.target));
    relay_loop(&ctx.cfg, &e, &up, relay, &header[..hlen], &ctl, ino);
}

fn relay_loop(cfg: &Config, e: &Idle, up: &UdpSocket, relay: SocketAddr, header: &[u8], ctl: &OwnedFd, ino: u64) {
    let (near, target) = (&e.near, &e.target);
    let mut buf = vec![0u8; DGRAM + socks5::UDP_HEADER_MAX];
    let mut looked = Instant::now();
    loop {
        let mut p = [
            libc::pollfd { fd: near.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: up.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: ctl.as_raw_fd(), events: libc::POLLIN | libc::POLLRDHUP, revents: 0 },
        ];
        // SAFETY: p is a valid array of three pollfds.
        let n = unsafe { libc::poll(p.as_mut_ptr(), 3, LOOK.as_millis() as i32) };
        if n > 0 && p[2].revents != 0 {
            log(cfg, LogLevel::Info, format_args!("udp {target}: the proxy closed the association (supervisor)"));
            break;
        }
        if n > 0 && p[0].revents & libc::POLLIN != 0 {
            buf[..header.len()].copy_from_slice(header);
            if let Ok(k) = near.recv(&mut buf[header.len()..]) {
                let _ = up.send_to(&buf[..header.len() + k], relay);
            }
        }
        if n > 0 && p[1].revents & libc::POLLIN != 0 {
            if let Ok((k, from)) = up.recv_from(&mut buf) {
                if tsproxy_core::cidr::unmap(from.ip()) == tsproxy_core::cidr::unmap(relay.ip()) && from.port() == relay.port() {
                    if let Ok((_, h)) = socks5::parse_udp(&buf[..k]) {
                        let _ = near.send(&buf[h..k]);
                    }
                }
            }
        }
        if looked.elapsed() >= LOOK {
            looked = Instant::now();
            if lock(&OWNER).get(&ino) != Some(&e.serial) {
                log(cfg, LogLevel::Debug, format_args!("udp {target}: the program's socket was connected again; association closed (supervisor)"));
                break;
            }
            if !socket_inodes(e.tgid).contains(&ino) {
                log(cfg, LogLevel::Debug, format_args!("udp {target}: the program's socket is gone; association closed (supervisor)"));
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn ino_of(s: &UdpSocket) -> u64 {
        std::fs::metadata(format!("/proc/self/fd/{}", s.as_raw_fd())).unwrap().ino()
    }

    #[test]
    fn socket_inodes_names_the_sockets_a_process_holds() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let ino = ino_of(&s);
        let me = std::process::id() as i32;
        assert!(socket_inodes(me).contains(&ino));
        drop(s);
        assert!(!socket_inodes(me).contains(&ino));
        // A process that is gone holds nothing.
        assert!(socket_inodes(i32::MAX).is_empty());
    }

    /// Idle sockets: one waiter for all of them; a closed one is dropped at a look (its
    /// `near` closed), and the waiter ends with the last (a later park starts another).
    #[test]
    fn idle_sockets_share_one_waiter_that_ends_with_the_last() {
        let me = std::process::id() as i32;
        let waiting = || lock(&PARKED).wake.is_some();
        let mut progs = Vec::new();
        for _ in 0..3 {
            let prog = UdpSocket::bind("127.0.0.1:0").unwrap();
            let near = UdpSocket::bind("127.0.0.1:0").unwrap();
            near.connect(prog.local_addr().unwrap()).unwrap();
            prog.connect(near.local_addr().unwrap()).unwrap();
            near.set_nonblocking(true).unwrap();
            let (ino, serial) = (ino_of(&prog), SERIAL.fetch_add(1, Ordering::Relaxed));
            lock(&OWNER).insert(ino, serial);
            let target = Target::Ip("100.64.0.2:4002".parse().unwrap());
            // The "program" is this process: a copy of its socket here would be one it still
            // holds. Any socket stands in for the supervisor's copy.
            let copy = OwnedFd::from(UdpSocket::bind("127.0.0.1:0").unwrap());
            park(ino, Idle { near: Arc::new(near), _prog: copy, serial, tgid: me, target }).unwrap();
            progs.push((prog, ino));
        }
        assert!(waiting());
        let threads = || {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .flatten()
                .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("tsproxy-udp-wai")))
                .count()
        };
        // (The thread names itself when it starts.)
        let t0 = Instant::now();
        while threads() == 0 && t0.elapsed() < LOOK {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(threads(), 1, "one waiter for all");
        // Still held: a look keeps them.
        reap();
        assert!(progs.iter().all(|(_, ino)| lock(&PARKED).by_ino.contains_key(ino)));
        let inos: Vec<u64> = progs.iter().map(|(_, i)| *i).collect();
        drop(progs);
        reap();
        assert!(inos.iter().all(|ino| !lock(&PARKED).by_ino.contains_key(ino) && !lock(&OWNER).contains_key(ino)));
        // The waiter sees the table empty at its next look (LOOK) and ends.
        let t0 = Instant::now();
        while waiting() && t0.elapsed() < LOOK * 3 {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!waiting(), "the waiter did not end");
    }
}

//! Connected UDP sockets of supervised programs (static binaries: Go's `net.Dial("udp", ...)`)
//! to tailnet destinations, through the proxy's UDP ASSOCIATE.
//!
//! The supervisor cannot add the SOCKS5 header to datagrams in the program's memory, so it
//! relays them itself. On the program's `connect`:
//! - an association with the proxy (the control connection and a UDP socket `up` of ours, the
//!   same upstreams, auth and failover as TCP; HTTP upstreams skipped);
//! - a loopback socket `near` of ours, which the program's socket is connected to (through our
//!   `pidfd_getfd` copy of it) and which is connected back to the program's socket, so the
//!   kernel passes only that socket's datagrams both ways;
//! - one thread per association (at most [`MAX`] at once) that adds the header to what the
//!   program sends and strips it from what the relay answers, dropping datagrams from anyone
//!   else.
//!
//! It ends when the program's socket is gone (looked for in the program's descriptors every
//! [`LOOK`]) or when the proxy closes the control connection; after that the program's sends
//! to the loopback socket fail (`ECONNREFUSED`).
//! What the program can notice: `getpeername` names the loopback socket, not the tailnet
//! destination; unconnected sends (`sendto` with an address) are still refused.
use super::log;
use super::notify::Sup;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tsproxy_core::config::LogLevel;
use tsproxy_core::{sockaddr, socks5, sys, syscall, tunnel, Errno, Target};

/// Associations relayed at once; more are refused (`ENETUNREACH`).
pub const MAX: usize = 64;
/// How often the program's descriptors are looked at.
const LOOK: Duration = Duration::from_secs(2);
/// Largest datagram relayed (tailscaled's buffer is 8 KiB).
const DGRAM: usize = 8192;

static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Associate and start relaying for the program's socket `sock` (our copy; inode `ino`, held
/// by thread group `tgid`) connected to `target`. The verdict for its `connect`.
pub(super) fn start(sup: &Sup, sock: OwnedFd, ino: u64, tgid: i32, family: i32, target: Target) -> Result<(), Errno> {
    let refused = Err(Errno(libc::ENETUNREACH));
    if LIVE.load(Ordering::Acquire) >= MAX {
        log(&sup.cfg, LogLevel::Error, format_args!("udp {target}: {MAX} associations already relayed; refused (supervisor)"));
        return refused;
    }
    let ups = sup.upstreams();
    let cfam = if ups.iter().flat_map(|r| r.addrs.iter()).any(|a| a.is_ipv4()) { libc::AF_INET } else { libc::AF_INET6 };
    let any: IpAddr = if cfam == libc::AF_INET { Ipv4Addr::UNSPECIFIED.into() } else { Ipv6Addr::UNSPECIFIED.into() };
    let up = UdpSocket::bind(SocketAddr::new(any, 0)).map_err(|_| Errno(libc::ENETUNREACH))?;
    let up_port = up.local_addr().map_err(|_| Errno(libc::ENETUNREACH))?.port();
    let Ok(ctl) = syscall!(SYS_socket, cfam, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0).map(|f| f as i32) else { return refused };
    // SAFETY: a descriptor just made, owned here alone.
    let ctl = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(ctl) };
    let cfg = &sup.cfg;
    let mut hs = tunnel::Handshake::associate(ctl.as_raw_fd(), cfam, ups, SocketAddr::new(any, up_port), cfg.pipeline);
    let r = tunnel::drive(&mut hs, Instant::now() + cfg.timeout, None, &mut |l, a| log(cfg, l, format_args!("udp {target}: {a} (supervisor)")));
    let relay = match (r, hs.bound()) {
        (Ok(via), Some(b)) if b.ip().is_unspecified() => SocketAddr::new(via.ip(), b.port()),
        (Ok(_), Some(b)) => b,
        (r, _) => {
            log(
                cfg,
                LogLevel::Error,
                format_args!(
                    "udp {target}: no proxy relays UDP ({}); refused, never sent directly (supervisor)",
                    r.err().map(|e| e.to_string()).unwrap_or_default()
                ),
            );
            return refused;
        }
    };
    let mut header = [0u8; socks5::UDP_HEADER_MAX];
    let hlen = socks5::udp_header(&target, &mut header).map_err(|_| Errno(libc::ENETUNREACH))?;
    // The loopback socket the program's socket is connected to, of its family.
    let lo: IpAddr = if family == libc::AF_INET6 { Ipv6Addr::LOCALHOST.into() } else { Ipv4Addr::LOCALHOST.into() };
    let near = UdpSocket::bind(SocketAddr::new(lo, 0)).map_err(|_| Errno(libc::ENETUNREACH))?;
    let near_addr = near.local_addr().map_err(|_| Errno(libc::ENETUNREACH))?;
    let (sa, sl) = sockaddr::encode(near_addr, family).ok_or(Errno(libc::ENETUNREACH))?;
    sys::connect_raw(sock.as_raw_fd(), (&sa as *const libc::sockaddr_storage).cast(), sl).map_err(|e| Errno::of(&e))?;
    let Some(prog) = super::notify::local_addr(sock.as_raw_fd()) else { return refused };
    let prog = SocketAddr::new(if prog.ip().is_unspecified() { lo } else { prog.ip() }, prog.port());
    near.connect(prog).map_err(|_| Errno(libc::ENETUNREACH))?;
    LIVE.fetch_add(1, Ordering::AcqRel);
    let cfg2 = sup.cfg.clone();
    let t = target.clone();
    let spawned = std::thread::Builder::new().name("tsproxy-udp".into()).stack_size(128 << 10).spawn(move || {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| relay_loop(&cfg2, &t, near, up, relay, &header[..hlen], ctl, sock, ino, tgid)));
        LIVE.fetch_sub(1, Ordering::AcqRel);
    });
    if spawned.is_err() {
        LIVE.fetch_sub(1, Ordering::AcqRel);
        return refused;
    }
    log(&sup.cfg, LogLevel::Debug, format_args!("udp {target}: associated, relay {relay}, the program's socket connected to {near_addr} (supervisor)"));
    Ok(())
}

/// Does thread group `tgid` still hold the socket with inode `ino`?
fn held(tgid: i32, ino: u64) -> bool {
    let want = format!("socket:[{ino}]");
    std::fs::read_dir(format!("/proc/{tgid}/fd")).is_ok_and(|d| d.flatten().any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == want.as_str())))
}

#[allow(clippy::too_many_arguments)]
fn relay_loop(
    cfg: &tsproxy_core::config::Config,
    target: &Target,
    near: UdpSocket,
    up: UdpSocket,
    relay: SocketAddr,
    header: &[u8],
    ctl: OwnedFd,
    prog: OwnedFd,
    ino: u64,
    tgid: i32,
) {
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
            if !held(tgid, ino) {
                log(cfg, LogLevel::Debug, format_args!("udp {target}: the program's socket is gone; association closed (supervisor)"));
                break;
            }
        }
    }
    drop(prog);
}

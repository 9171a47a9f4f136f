//! A process must never tunnel to itself: the supervisor's half of the rule the library applies
//! in src/net/selfproxy.rs (core: `route::serves_endpoint`, `route::in_proxy`). A static SOCKS or
//! HTTP proxy run under the launcher with itself as the configured proxy would otherwise have
//! each of its dials to a tailnet destination turned into a connect to itself, which it accepts
//! and dials again: one request fans out until the dial pool and the queue are full.
//!
//! Rule: a thread group that owns a listening TCP socket on a configured proxy endpoint **is the
//! proxy**; its connects to tailnet addresses go to the kernel (CONTINUE) and a placeholder is
//! refused (ECONNREFUSED). Said once per process in the log.
//!
//! Detection, only for connects and sends the policy would tunnel (never on the common path):
//! 1. The listening sockets on a proxy port in the target's network namespace:
//!    /proc/TGID/net/tcp and tcp6, state 0A. The kernel lists listeners before every other
//!    socket (SYN_RECV entries of old kernels are listed with their listener), so the read stops
//!    at the first other state: a busy machine's connections are not read. Bounded anyway.
//! 2. Which of those the target itself holds: /proc/TGID/fd, `socket:[INODE]` links (bounded).
//!    Other processes' listeners do not count — in production tailscaled listens on the proxy
//!    port in the same namespace, and its clients are not proxies.
//! 3. `IPV6_V6ONLY` is not shown in /proc/net/tcp6. It matters only for a `[::]` wildcard
//!    against an IPv4 endpoint; then the target's socket is taken (pidfd_getfd) and asked, as
//!    the library asks its own: an IPv6-only wildcard takes no IPv4 connection and is not the
//!    proxy. (Guessing either way would be wrong for someone: dual-stack would make a process
//!    that is not the proxy dial tailnet addresses directly, a leak.)
//!
//! The answer is cached per process (tgid and its start time, so a reused pid is a new
//! process): "is the proxy" for its lifetime (a proxy that closed its listener is still one, as
//! in the library), "is not" for `NEGATIVE_TTL` so one that starts listening later is seen.
//!
//! Not seen, unlike in the library: a forked worker that closed the inherited listener (the
//! library's answer is process memory that fork copies; here only the worker's own descriptors
//! count). See README, Limitations.
use super::log;
use super::notify::lock;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tsproxy_core::config::{Config, LogLevel};
use tsproxy_core::{route, sockaddr, sys, syscall};

/// How long "not the proxy" is believed: a process that starts listening later is seen within
/// this time, and a process tunnelling many connections scans at most once per period.
const NEGATIVE_TTL: Duration = Duration::from_secs(1);
/// Lines of /proc/TGID/net/tcp{,6} read at most (listeners come first; this bounds a kernel
/// that would list them otherwise).
const MAX_LINES: usize = 1 << 16;
/// Descriptors of the target looked at at most.
const MAX_FDS: usize = 1 << 20;
/// Processes remembered at most; beyond, the answers that expire are dropped first.
const MAX_CACHED: usize = 4096;

enum Known {
    Proxy,
    NotUntil(Instant),
}

pub(super) struct SelfProxy {
    /// Where the configured proxies are dialled (resolved once, as the dials use them).
    endpoints: Vec<SocketAddr>,
    /// (tgid, start time in clock ticks) -> the answer.
    known: Mutex<HashMap<(i32, u64), Known>>,
}

/// A listening socket found in the namespace that serves a proxy endpoint.
struct Candidate {
    bound: SocketAddr,
    endpoint: SocketAddr,
    /// It serves the endpoint only if it is dual-stack (a `[::]` wildcard, an IPv4 endpoint).
    if_dual_stack: bool,
}

impl SelfProxy {
    pub fn new(endpoints: Vec<SocketAddr>) -> SelfProxy {
        SelfProxy { endpoints, known: Mutex::new(HashMap::new()) }
    }

    /// Is the thread group `tgid` a configured proxy? The first positive answer is logged.
    pub fn is_proxy(&self, cfg: &Config, tgid: i32) -> bool {
        if self.endpoints.is_empty() {
            return false;
        }
        let Some(start) = start_time(tgid) else { return false };
        let now = Instant::now();
        match lock(&self.known).get(&(tgid, start)) {
            Some(Known::Proxy) => return true,
            Some(Known::NotUntil(t)) if *t > now => return false,
            _ => {}
        }
        let found = self.scan(tgid);
        let mut known = lock(&self.known);
        if known.len() >= MAX_CACHED {
            known.retain(|_, k| match k {
                Known::Proxy => true,
                Known::NotUntil(t) => *t > now,
            });
            if known.len() >= MAX_CACHED {
                known.clear(); // every answer is found again by a scan
            }
        }
        let Some(c) = found else {
            known.insert((tgid, start), Known::NotUntil(now + NEGATIVE_TTL));
            return false;
        };
        if !matches!(known.insert((tgid, start), Known::Proxy), Some(Known::Proxy)) {
            drop(known);
            log(
                cfg,
                LogLevel::Info,
                format_args!(
                    "process {tgid} listens on {}, the proxy endpoint {}: it is the proxy, so its own connections to tailnet destinations are refused (never tunnelled to itself, never dialled directly) (supervisor)",
                    c.bound, c.endpoint
                ),
            );
        }
        true
    }

    /// The listener on a proxy endpoint that `tgid` holds, if any.
    fn scan(&self, tgid: i32) -> Option<Candidate> {
        let mut listening: HashMap<u64, Candidate> = HashMap::new();
        for file in ["tcp", "tcp6"] {
            for (ino, bound) in listeners(tgid, file) {
                let surely = self.endpoints.iter().find(|e| route::serves_endpoint(bound, true, **e, is_local));
                let if_dual = || self.endpoints.iter().find(|e| route::serves_endpoint(bound, false, **e, is_local));
                if let Some(&endpoint) = surely {
                    listening.insert(ino, Candidate { bound, endpoint, if_dual_stack: false });
                } else if let Some(&endpoint) = if_dual() {
                    listening.insert(ino, Candidate { bound, endpoint, if_dual_stack: true });
                }
            }
        }
        if listening.is_empty() {
            return None;
        }
        let wanted: HashSet<u64> = listening.keys().copied().collect();
        for (fd, ino) in socket_fds(tgid, &wanted) {
            let Some(c) = listening.remove(&ino) else { continue };
            // Not known to be dual-stack (it could not be asked): not the proxy, so never a
            // direct dial on a guess.
            if c.if_dual_stack && v6only(tgid, fd) != Some(false) {
                continue;
            }
            return Some(c);
        }
        None
    }
}

/// The start time of process `tgid` (field 22 of /proc/TGID/stat, clock ticks since boot).
fn start_time(tgid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{tgid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Listening sockets in the network namespace of `tgid`: (inode, bound address), from
/// /proc/TGID/net/`file`.
fn listeners(tgid: i32, file: &str) -> Vec<(u64, SocketAddr)> {
    let mut out = Vec::new();
    let Ok(f) = std::fs::File::open(format!("/proc/{tgid}/net/{file}")) else { return out };
    // `sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode`
    for line in BufReader::new(f.take(64 << 20)).lines().skip(1).take(MAX_LINES) {
        let Ok(line) = line else { break };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(st), Some(ino)) = (fields.get(1), fields.get(3), fields.get(9)) else { break };
        match *st {
            "0A" => {}
            "03" => continue, // SYN_RECV, listed among listeners by kernels before 4.4
            _ => break,       // past the listeners
        }
        if let (Some(bound), Ok(ino)) = (parse_addr(local), ino.parse::<u64>()) {
            out.push((ino, bound));
        }
    }
    out
}

/// `0100007F:0438` or the 32-digit IPv6 form: each 32-bit word printed in host byte order.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> { Some(u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?.to_ne_bytes()) };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The descriptors of `tgid` that are sockets with an inode in `wanted`: (fd, inode).
fn socket_fds(tgid: i32, wanted: &HashSet<u64>) -> Vec<(i32, u64)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{tgid}/fd")) else { return out };
    for e in dir.take(MAX_FDS).flatten() {
        let Ok(link) = std::fs::read_link(e.path()) else { continue };
        let Some(ino) = link.to_str().and_then(|l| l.strip_prefix("socket:[")).and_then(|l| l.strip_suffix(']')).and_then(|l| l.parse().ok()) else {
            continue;
        };
        if let (true, Some(fd)) = (wanted.contains(&ino), e.file_name().to_str().and_then(|n| n.parse().ok())) {
            out.push((fd, ino));
        }
    }
    out
}

/// IPV6_V6ONLY of descriptor `fd` of `tgid` (None when it cannot be asked).
fn v6only(tgid: i32, fd: i32) -> Option<bool> {
    let pidfd = syscall!(SYS_pidfd_open, tgid, 0).ok()? as i32;
    let r = syscall!(SYS_pidfd_getfd, pidfd, fd, 0);
    let _ = syscall!(SYS_close, pidfd);
    // SAFETY: pidfd_getfd returned a new descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(r.ok()? as i32) };
    Some(sys::getsockopt_int(sock.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY).ok()? == 1)
}

/// Is `ip` an address of this machine (so a wildcard listener covers an endpoint there)? One
/// bind of a datagram socket to it.
fn is_local(ip: IpAddr) -> bool {
    let fam = if ip.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let Some((sa, len)) = sockaddr::encode(SocketAddr::new(ip, 0), fam) else { return false };
    let Ok(fd) = syscall!(SYS_socket, fam, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) else { return false };
    // SAFETY: socket returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    syscall!(SYS_bind, fd.as_raw_fd(), &sa as *const libc::sockaddr_storage, len).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_addresses() {
        let le = cfg!(target_endian = "little");
        let (v4, v6) = if le { ("0100007F:0438", "00000000000000000000000001000000:0438") } else { ("7F000001:0438", "00000000000000000000000000000001:0438") };
        assert_eq!(parse_addr(v4), Some("127.0.0.1:1080".parse().unwrap()));
        assert_eq!(parse_addr(v6), Some("[::1]:1080".parse().unwrap()));
        assert_eq!(parse_addr("00000000:0050"), Some("0.0.0.0:80".parse().unwrap()));
        assert_eq!(parse_addr("0100007F"), None);
        assert_eq!(parse_addr("0100007:0438"), None);
    }

    #[test]
    fn finds_its_own_listener_and_only_its_own() {
        let me = std::process::id() as i32;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let ep = l.local_addr().unwrap();
        let cfg = Config::from_lookup(|_| None).unwrap();
        assert!(SelfProxy::new(vec![ep]).is_proxy(&cfg, me), "listens on {ep}");
        // Another port: not the proxy. (This process holds no listener on it.)
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        assert!(!SelfProxy::new(vec![other]).is_proxy(&cfg, me));
        // A listener on the endpoint held by another process (here: the parent of a child that
        // asks about itself) does not make the child the proxy.
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let no = SelfProxy::new(vec![ep]).is_proxy(&cfg, child.id() as i32);
        let _ = child.kill();
        let _ = child.wait();
        assert!(!no, "the listener is ours, not the child's");
        // IPv6-only wildcard on an IPv4 endpoint's port: not the proxy.
        if let Ok(s) = std::net::TcpListener::bind("[::1]:0") {
            let port = s.local_addr().unwrap().port();
            drop(s);
            let ep = SocketAddr::from(([127, 0, 0, 1], port));
            let v6 = wildcard6(port, 1);
            assert!(!SelfProxy::new(vec![ep]).is_proxy(&cfg, me), "IPv6-only");
            drop(v6);
            let dual = wildcard6(port, 0);
            assert!(SelfProxy::new(vec![ep]).is_proxy(&cfg, me), "dual-stack");
            drop(dual);
        }
    }

    /// A listener on `[::]:port` with IPV6_V6ONLY set to `only`.
    fn wildcard6(port: u16, only: libc::c_int) -> OwnedFd {
        let fd = syscall!(SYS_socket, libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0).unwrap() as i32;
        // SAFETY: a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let sz = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        syscall!(SYS_setsockopt, fd.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &only as *const libc::c_int, sz).unwrap();
        let (sa, len) = sockaddr::encode(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port), libc::AF_INET6).unwrap();
        syscall!(SYS_bind, fd.as_raw_fd(), &sa as *const libc::sockaddr_storage, len).unwrap();
        syscall!(SYS_listen, fd.as_raw_fd(), 4).unwrap();
        fd
    }
}

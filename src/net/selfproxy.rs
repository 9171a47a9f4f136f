//! A process must never tunnel to itself. A dynamically linked SOCKS or HTTP proxy running with
//! the library (system-wide preloading, or a user's mistake: microsocks as its own upstream)
//! would send its own dials to tailnet destinations through the configured proxy — itself —
//! which accepts them and dials again: one request fans out until threads or descriptors run out.
//!
//! Rule (core: `route::serves_endpoint`, `route::in_proxy`): a process that owns a listening TCP
//! socket on a configured proxy endpoint **is the proxy**; its connects to tailnet destinations
//! are refused at once (`ECONNREFUSED`), never tunnelled to itself and never dialled directly:
//! "listens on the endpoint" is also true of an unrelated server on `[::1]:1080` beside a proxy
//! on 127.0.0.1:1080, or of any program on that port while the proxy is down, and a direct
//! dial from those would leak. Said once in the log, and in each refusal's line.
//!
//! Detection, at no cost to other calls:
//! - `listen()` (hooked; not a hot call) compares the socket's address with the proxy
//!   endpoints: the port first (no syscall beyond one getsockname), then the resolved addresses.
//! - Listeners this process did not `listen()` on itself — inherited through exec (socket
//!   activation, a wrapper that bound first) — are found by one scan of /proc/self/fd before
//!   the first tunnel (raw syscalls, bounded): any socket with SO_ACCEPTCONN is checked the
//!   same way.
//! - The answer is process state: a forked child (a pre-forking proxy's worker) inherits it;
//!   after exec the new image scans again. It is never unset: a proxy that closed its listener
//!   is still one (its children may hold it).
use crate::state;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use tsproxy_core::{route, sys, syscall};

const SCANNED: u8 = 1;
const IS_PROXY: u8 = 2;
static FLAGS: AtomicU8 = AtomicU8::new(0);

/// Is this process a configured proxy? The first call scans for inherited listeners.
pub fn is_proxy() -> bool {
    let f = FLAGS.load(Ordering::Relaxed);
    if f & SCANNED == 0 {
        // Threads racing here each scan (cheap, and nobody waits for another).
        scan();
        FLAGS.fetch_or(SCANNED, Ordering::Relaxed);
    }
    FLAGS.load(Ordering::Relaxed) & IS_PROXY != 0
}

/// After a successful listen(fd).
pub fn on_listen(fd: i32) {
    if FLAGS.load(Ordering::Relaxed) & IS_PROXY == 0 {
        check(fd);
    }
}

/// If `fd` listens on a proxy endpoint, this process is the proxy.
fn check(fd: i32) {
    let st = state::get();
    // An invalid configuration tunnels nothing: nothing to decide.
    let Some(cfg) = &st.cfg else { return };
    // SAFETY: all-zero is a valid sockaddr_storage; the kernel fills at most `len` bytes.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    if syscall!(SYS_getsockname, fd, &mut ss as *mut libc::sockaddr_storage, &mut len as *mut libc::socklen_t).is_err() {
        return;
    }
    // SAFETY: the kernel wrote `len` bytes of ss.
    let Some(bound) = (unsafe { tsproxy_core::sockaddr::read((&ss as *const libc::sockaddr_storage).cast(), len) }) else { return };
    if !cfg.proxies.iter().any(|p| p.port == bound.port()) {
        return;
    }
    if sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL).ok() != Some(libc::IPPROTO_TCP) {
        return;
    }
    let v6only = bound.is_ipv6() && sys::getsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY).ok() == Some(1);
    let Some(endpoint) = st.upstreams().iter().flat_map(|u| u.addrs.iter()).find(|a| route::serves_endpoint(bound, v6only, **a, is_local)) else {
        return;
    };
    if FLAGS.fetch_or(IS_PROXY, Ordering::Relaxed) & IS_PROXY == 0 {
        crate::log::log!(
            Info,
            "this process listens on {bound}, the proxy endpoint {endpoint}: it is the proxy, so its own connections to tailnet destinations are refused (never tunnelled to itself, never dialled directly)"
        );
    }
}

/// Is `ip` an address of this machine? (A wildcard listener covers a non-loopback endpoint only
/// then.) One bind of a datagram socket to it, raw syscalls.
fn is_local(ip: IpAddr) -> bool {
    let fam = if ip.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let Some((sa, len)) = tsproxy_core::sockaddr::encode(SocketAddr::new(ip, 0), fam) else { return false };
    let Ok(fd) = syscall!(SYS_socket, fam, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) else { return false };
    let ok = syscall!(SYS_bind, fd, &sa as *const libc::sockaddr_storage, len).is_ok();
    let _ = syscall!(SYS_close, fd);
    ok
}

/// Check every listening socket this process holds (those inherited included): one pass over
/// /proc/self/fd, at most `MAX_ENTRIES` entries.
fn scan() {
    const MAX_ENTRIES: usize = 1 << 20;
    let Ok(dir) = syscall!(SYS_openat, libc::AT_FDCWD, c"/proc/self/fd".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) else { return };
    let dir = dir as i32;
    let mut buf = [0u8; 4096];
    let mut seen = 0;
    'read: while seen < MAX_ENTRIES {
        let Ok(n) = syscall!(SYS_getdents64, dir, buf.as_mut_ptr(), buf.len()) else { break };
        let n = n as usize;
        if n == 0 {
            break;
        }
        let mut off = 0;
        // linux_dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name NUL-terminated.
        while off + 19 < n {
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            if reclen == 0 || off + reclen > n {
                break 'read;
            }
            let name = &buf[off + 19..off + reclen];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            if let Some(fd) = std::str::from_utf8(name).ok().and_then(|s| s.parse::<i32>().ok()) {
                if fd != dir && sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN).ok() == Some(1) {
                    check(fd);
                }
            }
            off += reclen;
            seen += 1;
        }
    }
    let _ = syscall!(SYS_close, dir);
}

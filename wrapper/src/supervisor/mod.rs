//! The seccomp user-notify supervisor, for programs the preload library cannot reach: static
//! binaries (Go with CGO_ENABLED=0, musl-static), raw syscalls.
//!
//! Shape: the launcher starts the supervisor (`spawn.rs`: two clones sharing the launcher's
//! memory, the second orphaned at once — nobody's child, like a double fork's grandchild —
//! sleeping until the launcher's exec, then owning that memory alone; in its own session, the
//! terminal's signals ignored), then installs a
//! seccomp filter on itself (`filter.rs`: connect, addressed sendto, sendmsg and
//! sendmmsg return SECCOMP_RET_USER_NOTIF; foreign ABIs, x32 and io_uring get ENOSYS;
//! everything else runs at full speed in the kernel), records the listener for the supervisor
//! (a shared descriptor table), and execs the command (same pid: exit status and signals are the command's).
//! The supervisor lives until every process of the tree is gone (the listener reports
//! POLLHUP), so daemons started in the tree stay supervised.
//!
//! The supervisor answers notifications (`notify.rs`) with the routing policy of the library
//! (`tsproxy_core::route::decide`) and answers DNS for the tree (`dns.rs`).
//!
//! A process that also loads libtsproxy.so is handled by the library first: it never issues a
//! connect to a tailnet address (it connects to the proxy, which the supervisor lets through).
mod dns;
pub mod filter;
mod notify;
mod selfproxy;
mod spawn;
mod udp;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use tsproxy_core::config::{Config, LogLevel};
use tsproxy_core::{logline, sys, syscall};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Auto,
    On,
    Off,
}

pub fn parse_mode(v: &str) -> Option<Mode> {
    match v {
        "auto" => Some(Mode::Auto),
        "on" => Some(Mode::On),
        "off" => Some(Mode::Off),
        _ => None,
    }
}

/// Can this kernel do it? seccomp user notification (5.0), CONTINUE (5.5), pidfd_getfd (5.6).
pub fn supported() -> Result<(), String> {
    let mut sizes = [0u16; 3];
    if syscall!(SYS_seccomp, 3 /* SECCOMP_GET_NOTIF_SIZES */, 0, sizes.as_mut_ptr()).is_err() {
        return Err("seccomp user notification is not available (Linux >= 5.6 needed)".into());
    }
    match syscall!(SYS_pidfd_getfd, -1, -1, 0) {
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => Err("pidfd_getfd is not available (Linux >= 5.6 needed)".into()),
        _ => Ok(()),
    }
}

/// One log line on stderr (the command's), control characters of the message escaped.
pub(crate) fn log(cfg: &Config, level: LogLevel, msg: std::fmt::Arguments<'_>) {
    if level <= cfg.log {
        sys::write_all_fd(2, logline::format("tsproxy[supervisor]", level, msg).as_bytes());
    }
}

/// Environment variables the command gets: where the DNS responder is, and the secret that
/// lets the preload library register names with it.
pub struct Handoff {
    pub dns: SocketAddr,
    pub key: String,
}

/// Why the supervisor is not there.
pub enum NoSupervisor {
    /// Not here (kernel, architecture, a resource): the command runs without it, said once.
    Off(String),
    /// The filter is on this process but no supervisor answers it: the command must not run.
    Fatal(String),
}

/// Start the supervisor (`spawn.rs`: A and B, B waiting for our exec), install the filter on
/// this process, record the listener for B. On Ok the caller sets the returned variables and
/// execs the command with `spawn::arm`/`disarm` around the execve system call (`exec`).
pub fn install(cfg: &Config) -> Result<Handoff, NoSupervisor> {
    use NoSupervisor::*;
    if !cfg!(target_arch = "x86_64") {
        return Err(Off("the supervisor's filter is written for x86_64 only".into()));
    }
    supported().map_err(Off)?;
    let prog = filter::filter().map_err(Off)?;
    // The DNS responder's socket is made here so its address can be handed to the command's
    // environment (TSPROXY_SUPERVISOR_DNS): the preload library in a supervised process
    // registers the tailnet names it resolves with it, so placeholders mean the same name on
    // both sides (Go dials with raw syscalls even when it resolved through glibc).
    let responder = UdpSocket::bind("127.0.0.1:0").map_err(|e| Off(format!("DNS responder: {e}")))?;
    let responder = above_stdio(responder).map_err(|e| Off(format!("DNS responder: {e}")))?;
    let dns_addr = responder.local_addr().map_err(|e| Off(format!("DNS responder: {e}")))?;
    let key = dns::new_key().map_err(|e| Off(format!("DNS responder key: {e}")))?;
    // The command will have our pid (we exec it): the root of the supervised tree.
    // SAFETY: getpid has no preconditions.
    let root = unsafe { libc::getpid() };
    let cfg2 = cfg.clone();
    let start = spawn::spawn(Box::new(move |listener| supervise(listener, cfg2, responder, key, root))).map_err(Off)?;
    let listener = match install_filter(cfg, &prog) {
        Ok(l) => l,
        Err(e) => {
            // No filter: B ends when we exec (nothing armed); A must not become the command's.
            let _ = spawn::reap();
            return Err(Off(e));
        }
    };
    // Moved above 0-2: a launcher started with stdin or stdout closed got the listener (or the
    // responder) there, and the supervisor's /dev/null on 0 and 1 replaced it.
    let listener = above_stdio_fd(listener);
    start.set_listener(listener);
    let Some(spid) = spawn::reap() else {
        return Err(Fatal("the supervisor process could not be started (clone failed)".into()));
    };
    // Let the supervisor take our fds even where Yama restricts ptrace to ancestors. No need to
    // wait for it: notifications queue on the listener until it reads them.
    let _ = syscall!(SYS_prctl, libc::PR_SET_PTRACER, spid, 0, 0, 0);
    Ok(Handoff { dns: dns_addr, key: dns::key_hex(&key) })
}

/// Right before / right after the command's execve system call (`spawn.rs`, `arm`).
pub use spawn::{arm, disarm};

/// `fd` as a close-on-exec descriptor numbered 3 or above (itself if it already is).
fn above_stdio_fd(fd: i32) -> i32 {
    if fd > 2 {
        return fd;
    }
    match syscall!(SYS_fcntl, fd, libc::F_DUPFD_CLOEXEC, 3) {
        Ok(n) => {
            let _ = syscall!(SYS_close, fd);
            n as i32
        }
        Err(_) => fd,
    }
}

fn above_stdio(s: UdpSocket) -> std::io::Result<UdpSocket> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let fd = above_stdio_fd(s.into_raw_fd());
    // SAFETY: fd is the socket's own descriptor (or its duplicate, the original closed), owned
    // by nothing else.
    Ok(unsafe { UdpSocket::from_raw_fd(fd) })
}

/// no_new_privs and the filter on this thread (the supervisor, cloned before, is under
/// neither); returns the listener (close-on-exec: the command's copy of the descriptor table
/// loses it at the exec, the supervisor's keeps it).
fn install_filter(cfg: &Config, prog_v: &[libc::sock_filter]) -> Result<i32, String> {
    let prog = libc::sock_fprog { len: prog_v.len() as u16, filter: prog_v.as_ptr() as *mut libc::sock_filter };
    syscall!(SYS_prctl, libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0).map_err(|e| format!("no_new_privs: {e}"))?;
    // WAIT_KILLABLE_RECV (Linux 5.19): once the supervisor has received a notification, only a
    // fatal signal interrupts the target's syscall. Without it, a signal (an interval timer,
    // SIGCHLD, SIGWINCH...) makes the held connect() return EINTR — or restart it, a second
    // notification for the same socket — while the supervisor is still talking to the proxy on
    // that socket, and the program's first write would land in the middle of the handshake.
    // With it, the signal is delivered when connect() returns: the program sees a connect that
    // completed before the signal came, which the kernel allows too. Older kernels (5.6 to
    // 5.18) reject the flag with EINVAL: we go on without it (see notify.rs for what is left).
    let base = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
    let killable = base | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
    let prog_p = &prog as *const libc::sock_fprog;
    match syscall!(SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, killable, prog_p) {
        Ok(fd) => Ok(fd as i32),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            log(
                cfg,
                LogLevel::Debug,
                format_args!("kernel without SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux < 5.19): a signal can interrupt a held connect"),
            );
            syscall!(SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, base, prog_p).map(|fd| fd as i32).map_err(|e| format!("seccomp: {e}"))
        }
        Err(e) => Err(format!("seccomp: {e}")),
    }
}

/// The supervisor, in the clone after the launcher's exec: never returns.
fn supervise(listener: i32, cfg: Config, responder: UdpSocket, key: [u8; dns::KEY_LEN], root: i32) {
    // The supervisor's memory is the launcher's: its argv, where `--proxy
    // socks5://user:password@...` may be, is readable by every user in /proc/PID/cmdline (ps).
    // It lives as long as the command: overwrite it now.
    // (Its own session, and SIGPIPE and the terminal's signals ignored: done first thing in
    // spawn.rs, before the launcher's exec.)
    scrub_cmdline();
    {
        use std::os::fd::AsRawFd;
        close_inherited(&[listener, responder.as_raw_fd()]);
    }
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 of a valid fd onto 0 and 1: the supervisor must not hold the program's
        // pipes open (a reader would never see EOF). Stderr stays, for the log.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
    notify::run(cfg, listener, responder, key, root);
}

/// Close every descriptor above stderr except `keep`: the descriptor table is the launcher's
/// as it was at the exec, the command's pipes and files included (close-on-exec ones too). A
/// pipe the command was given must reach EOF when the command's tree closes it, not when the
/// supervisor ends.
fn close_inherited(keep: &[i32]) {
    let mut keep: Vec<u32> = keep.iter().filter(|&&f| f > 2).map(|&f| f as u32).collect();
    keep.sort_unstable();
    let mut from = 3u32;
    for k in keep {
        if k > from {
            let _ = syscall!(SYS_close_range, from, k - 1, 0);
        }
        from = k + 1;
    }
    let _ = syscall!(SYS_close_range, from, u32::MAX, 0);
}

/// Overwrite this process's argument area (what /proc/self/cmdline shows) with
/// "tsproxy-supervisor" and NULs, through /proc/self/mem (the area is ordinary stack memory of
/// ours; writing it through the file does not alias any Rust reference: std copies argv only
/// when asked, and the supervisor never asks).
fn scrub_cmdline() {
    let Some((start, end)) = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| arg_area(&s)) else { return };
    if end <= start || end - start > 1 << 20 {
        return;
    }
    let mut area = vec![0u8; (end - start) as usize];
    let name = b"tsproxy-supervisor";
    let n = name.len().min(area.len().saturating_sub(1));
    area[..n].copy_from_slice(&name[..n]);
    use std::os::unix::fs::FileExt;
    if let Ok(mem) = std::fs::OpenOptions::new().write(true).open("/proc/self/mem") {
        let _ = mem.write_all_at(&area, start);
    }
}

/// arg_start and arg_end (fields 48 and 49 of /proc/PID/stat, counted after the `(comm)`
/// field, which may itself hold spaces and parentheses).
fn arg_area(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state).
    Some((f.get(48 - 3)?.parse().ok()?, f.get(49 - 3)?.parse().ok()?))
}

pub(crate) fn resolve_host(host: &str, port: u16) -> Vec<SocketAddr> {
    use std::net::ToSocketAddrs;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return vec![SocketAddr::new(ip, port)];
    }
    if host == "localhost" {
        return vec![SocketAddr::from(([127, 0, 0, 1], port)), SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))];
    }
    (host, port).to_socket_addrs().map(|a| a.collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arg_area_of_stat() {
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        let (s, e) = arg_area(&own).unwrap();
        assert!(s > 0 && e > s, "{s} {e}");
        let weird = "12 (a) b) (c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 1000 2000 3000 4000 0";
        assert_eq!(arg_area(weird), Some((1000, 2000)));
        assert_eq!(arg_area("1 (x) S 1 2"), None);
    }
}

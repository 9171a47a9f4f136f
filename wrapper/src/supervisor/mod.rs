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
//! Until the tree first makes a socket call the filter stops, or asks the responder something,
//! the supervisor is a process asleep in `poll` (spawn.rs, `idle`).
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
mod stderr;
mod udp;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use tsproxy_core::config::{Config, LogLevel};
use tsproxy_core::{logline, syscall};

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

/// Can this kernel do it? seccomp user notification (5.0), CONTINUE (5.5), pidfd_getfd (5.6),
/// and a listener that reports POLLHUP once no process uses its filter any more (5.8): that is
/// how the supervisor learns that the tree has ended. On 5.6 and 5.7 it would never learn it,
/// and stay behind after every command.
pub fn supported() -> Result<(), String> {
    let mut sizes = [0u16; 3];
    if syscall!(SYS_seccomp, 3 /* SECCOMP_GET_NOTIF_SIZES */, 0, sizes.as_mut_ptr()).is_err() {
        return Err("seccomp user notification is not available (Linux >= 5.8 needed)".into());
    }
    if let Err(e) = syscall!(SYS_pidfd_getfd, -1, -1, 0) {
        if e.raw_os_error() == Some(libc::ENOSYS) {
            return Err("pidfd_getfd is not available (Linux >= 5.8 needed)".into());
        }
    }
    match kernel_version() {
        Some(v) if v < MIN_KERNEL => {
            Err(format!("Linux {}.{} is too old for the supervisor (5.8 needed: earlier kernels do not tell it that the tree has ended)", v.0, v.1))
        }
        _ => Ok(()),
    }
}

/// The oldest kernel the supervisor runs on (`supported`).
pub const MIN_KERNEL: (u32, u32) = (5, 8);

/// The running kernel's major and minor version (uname's release, e.g. "6.1.0-18-amd64").
pub fn kernel_version() -> Option<(u32, u32)> {
    // SAFETY: all-zero is a valid utsname; uname only writes into it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    syscall!(SYS_uname, &mut u as *mut libc::utsname).ok()?;
    let release: Vec<u8> = u.release.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    parse_version(std::str::from_utf8(&release).ok()?)
}

fn parse_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// One log line on the command's stderr (stderr.rs), control characters of the message
/// escaped.
pub(crate) fn log(cfg: &Config, level: LogLevel, msg: std::fmt::Arguments<'_>) {
    if level <= cfg.log {
        stderr::write(logline::format("tsproxy[supervisor]", level, msg).as_bytes());
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
    /// Not possible here (kernel, architecture): with `auto` the command runs without it, said
    /// once; with `on` the launcher stops.
    Off(String),
    /// Possible here but failed (a resource): the command must not run, whatever the mode.
    Fatal(String),
}

/// The supervisor's process, started early (`prepare`), or why it could not be.
pub struct Early(Result<&'static spawn::Start, NoSupervisor>);

/// Start the supervisor's process (`spawn.rs`: A and B, B waiting for our exec) as early as the
/// launcher knows it may be wanted: the clones then run beside the launcher's own work (reading
/// the configuration, making the responder, installing the filter) instead of being waited for
/// before the exec. If the supervisor is not used after all, B ends at the exec (nothing
/// armed) and `settle` reaps A. `args` is the launcher's argument area, which B blanks.
pub fn prepare(args: Option<(usize, usize)>) -> Early {
    if !cfg!(target_arch = "x86_64") {
        return Early(Err(NoSupervisor::Off("the supervisor's filter is written for x86_64 only".into())));
    }
    if let Err(e) = supported() {
        return Early(Err(NoSupervisor::Off(e)));
    }
    // The machine can run it: failing now is a resource (a process or memory limit), not a
    // missing feature, and the command must not run unsupervised because of it.
    Early(spawn::spawn(args).map_err(|e| NoSupervisor::Fatal(format!("the supervisor process could not be started ({e})"))))
}

/// Reap A before the exec on every path, whether the supervisor was installed or not: the
/// command must not inherit a child it never made.
pub fn settle() {
    let _ = spawn::reap();
}

/// Install the filter on this process and hand B what it serves the command with. On Ok the
/// caller sets the returned variables and execs the command with `spawn::arm`/`disarm` around
/// the execve system call (`exec`).
pub fn install(cfg: &Config, early: Early) -> Result<Handoff, NoSupervisor> {
    use NoSupervisor::*;
    let start = early.0?;
    let prog = filter::filter().map_err(Fatal)?;
    // The DNS responder's socket is made here so its address can be handed to the command's
    // environment (TSPROXY_SUPERVISOR_DNS): the preload library in a supervised process
    // registers the tailnet names it resolves with it, so placeholders mean the same name on
    // both sides (Go dials with raw syscalls even when it resolved through glibc).
    // From here on every failure is Fatal: the kernel has what the supervisor needs
    // (`supported`), so what fails is a resource (descriptors, memory), and the command must
    // not run unsupervised because of it; nor after no_new_privs without the filter.
    let responder = UdpSocket::bind("127.0.0.1:0").map_err(|e| Fatal(format!("DNS responder: {e}")))?;
    let responder = above_stdio(responder).map_err(|e| Fatal(format!("DNS responder: {e}")))?;
    let dns_addr = responder.local_addr().map_err(|e| Fatal(format!("DNS responder: {e}")))?;
    let key = dns::new_key().map_err(|e| Fatal(format!("DNS responder key: {e}")))?;
    // The command will have our pid (we exec it): the root of the supervised tree.
    // SAFETY: getpid has no preconditions.
    let root = unsafe { libc::getpid() };
    let cfg2 = cfg.clone();
    let responder_fd = {
        use std::os::fd::AsRawFd;
        responder.as_raw_fd()
    };
    start.set_main(Box::new(move |listener| supervise(listener, cfg2, responder, key, root)), responder_fd);
    // No filter: B ends when we exec (nothing armed); the caller's `settle` reaps A.
    let listener = install_filter(cfg, &prog).map_err(Fatal)?;
    // Moved above 0-2: a launcher started with stdin or stdout closed got the listener (or the
    // responder) there, and the supervisor's /dev/null on 0-2 replaced it.
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
    // completed before the signal came, which the kernel allows too. Older kernels (5.8 to
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

/// The supervisor's body, in a thread of B once the command's tree first needs it (B has
/// already blanked the launcher's arguments and closed what the command was given: spawn.rs,
/// `prelude`).
fn supervise(listener: i32, cfg: Config, responder: UdpSocket, key: [u8; dns::KEY_LEN], root: i32) {
    notify::run(cfg, listener, responder, key, root);
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
    #[test]
    fn kernel_versions() {
        assert_eq!(super::parse_version("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(super::parse_version("5.7.19"), Some((5, 7)));
        assert_eq!(super::parse_version("6.18.44-fc-v1272"), Some((6, 18)));
        assert_eq!(super::parse_version("garbage"), None);
        assert!(super::parse_version("5.7.0").unwrap() < (5, 8));
    }
}

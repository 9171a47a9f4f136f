//! The seccomp user-notify supervisor, for programs the preload library cannot reach: static
//! binaries (Go with CGO_ENABLED=0, musl-static), raw syscalls.
//!
//! Shape: the launcher forks the supervisor (double fork, so it is nobody's child: a shell's
//! bare `wait` never waits for it; own session, so terminal signals do not reach it), then
//! installs a seccomp filter on itself (`filter.rs`: connect, addressed sendto, sendmsg and
//! sendmmsg return SECCOMP_RET_USER_NOTIF; foreign ABIs, x32 and io_uring get ENOSYS;
//! everything else runs at full speed in the kernel), hands the listener to the supervisor
//! (`fdpass.rs`), and execs the command (same pid: exit status and signals are the command's).
//! The supervisor lives until every process of the tree is gone (the listener reports
//! POLLHUP), so daemons started in the tree stay supervised.
//!
//! The supervisor answers notifications (`notify.rs`) with the routing policy of the library
//! (`tsproxy_core::route::decide`) and answers DNS for the tree (`dns.rs`).
//!
//! A process that also loads libtsproxy.so is handled by the library first: it never issues a
//! connect to a tailnet address (it connects to the proxy, which the supervisor lets through).
mod dns;
mod fdpass;
pub mod filter;
mod notify;
mod selfproxy;
mod udp;

use std::io;
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

/// Fork the supervisor, install the filter on this process, hand over the listener. On Ok the
/// caller sets the returned variables and execs the command.
pub fn install(cfg: &Config) -> Result<Handoff, String> {
    if !cfg!(target_arch = "x86_64") {
        return Err("the supervisor's filter is written for x86_64 only".into());
    }
    supported()?;
    let prog = filter::filter()?;
    // The DNS responder's socket is made here so its address can be handed to the command's
    // environment (TSPROXY_SUPERVISOR_DNS): the preload library in a supervised process
    // registers the tailnet names it resolves with it, so placeholders mean the same name on
    // both sides (Go dials with raw syscalls even when it resolved through glibc).
    let responder = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("DNS responder: {e}"))?;
    let dns_addr = responder.local_addr().map_err(|e| format!("DNS responder: {e}"))?;
    let key = dns::new_key().map_err(|e| format!("DNS responder key: {e}"))?;
    // The command will have our pid (we exec it): the root of the supervised tree.
    // SAFETY: getpid has no preconditions.
    let root = unsafe { libc::getpid() };
    let mut sv = [0i32; 2];
    syscall!(SYS_socketpair, libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr()).map_err(|e| format!("socketpair: {e}"))?;
    // SAFETY: fork in the launcher, which is single-threaded here (no thread was started), so
    // the child's copy of every lock and allocator state is consistent.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: still single-threaded (a fork of a single-threaded process).
        let s2 = unsafe { libc::fork() };
        if s2 != 0 {
            // Tell the launcher who the supervisor is (or that the fork failed: -1), then leave
            // without running atexit handlers or destructors of the launcher's state.
            let _ = sys::send(sv[1], &s2.to_ne_bytes());
            // SAFETY: _exit has no preconditions.
            unsafe { libc::_exit(0) };
        }
        let _ = syscall!(SYS_close, sv[0]);
        supervise(sv[1], cfg.clone(), responder, key, root);
    }
    drop(responder);
    let _ = syscall!(SYS_close, sv[1]);
    let mut st = 0;
    // SAFETY: reaping the intermediate child we just forked; st is a valid int.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    let mut buf = [0u8; 4];
    let spid = match sys::recv(sv[0], &mut buf, 0) {
        Ok(4) if i32::from_ne_bytes(buf) > 0 => i32::from_ne_bytes(buf),
        _ => {
            let _ = syscall!(SYS_close, sv[0]);
            return Err("the supervisor did not start".into());
        }
    };
    let r = install_filter_and_send(cfg, &prog, sv[0], spid);
    let _ = syscall!(SYS_close, sv[0]);
    r.map(|()| Handoff { dns: dns_addr, key: dns::key_hex(&key) })
}

fn install_filter_and_send(cfg: &Config, prog_v: &[libc::sock_filter], sock: i32, spid: i32) -> Result<(), String> {
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
    let listener = match syscall!(SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, killable, prog_p) {
        Ok(fd) => fd as i32,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            log(
                cfg,
                LogLevel::Debug,
                format_args!("kernel without SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux < 5.19): a signal can interrupt a held connect"),
            );
            syscall!(SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, base, prog_p).map_err(|e| format!("seccomp: {e}"))? as i32
        }
        Err(e) => return Err(format!("seccomp: {e}")),
    };
    let sent = fdpass::send_fd(sock, listener);
    let _ = syscall!(SYS_close, listener);
    sent.map_err(|e| format!("handing the listener over: {e}"))?;
    // Let the supervisor take our fds even where Yama restricts ptrace to ancestors. No need to
    // wait for it: notifications queue on the listener until it reads them.
    let _ = syscall!(SYS_prctl, libc::PR_SET_PTRACER, spid, 0, 0, 0);
    Ok(())
}

/// The supervisor process: never returns.
fn supervise(sock: i32, cfg: Config, responder: UdpSocket, key: [u8; dns::KEY_LEN], root: i32) -> ! {
    // The supervisor is a fork of the launcher: its argv is the launcher's, where `--proxy
    // socks5://user:password@...` may be, readable by every user in /proc/PID/cmdline (ps).
    // It lives as long as the command: overwrite it now.
    scrub_cmdline();
    // SAFETY: setsid has no preconditions.
    unsafe { libc::setsid() };
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 of a valid fd onto 0 and 1: the supervisor must not hold the program's
        // pipes open (a reader would never see EOF). Stderr stays, for the log.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
    let listener = match fdpass::recv_fd(sock) {
        Ok(fd) => fd,
        // SAFETY: _exit has no preconditions.
        Err(_) => unsafe { libc::_exit(0) },
    };
    let _ = syscall!(SYS_close, sock);
    notify::run(cfg, listener, responder, key, root);
    // SAFETY: _exit has no preconditions.
    unsafe { libc::_exit(0) }
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

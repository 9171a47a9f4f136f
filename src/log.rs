//! Logging: write(2) to stderr or to TSPROXY_LOG_FILE, never through stdio, only at the level
//! configured. One line per message, and no raw control character of any input (a name, a
//! proxy's answer) ever reaches it: they are escaped as `\xNN`.
//!
//! Which fd 2 is stderr: the one the process had when the library was loaded (its identity,
//! device and inode, is taken then — one fstat, the only thing done at load time). A program
//! that closed stderr and reused the number for a file of its own never gets our lines in it;
//! a socket on fd 2 (a daemon's) is skipped too. The log file is opened, appended to and closed
//! per line (raw syscalls), so no fd of ours lingers for the program to trip over; a log file
//! that cannot be opened is said once on stderr, and lines go to stderr instead.
use crate::state;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tsproxy_core::config::LogLevel;
use tsproxy_core::sys;

/// Identity of fd 2 at load time: (st_dev, st_ino); both 0 when it was not open or a socket.
static STDERR_DEV: AtomicU64 = AtomicU64::new(0);
static STDERR_INO: AtomicU64 = AtomicU64::new(0);
static FILE_FAILED: AtomicBool = AtomicBool::new(false);

fn stat2() -> Option<libc::stat> {
    // SAFETY: all-zero is a valid stat buffer; the kernel fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    tsproxy_core::syscall!(SYS_fstat, 2, &mut st as *mut libc::stat).ok().map(|_| st)
}

extern "C" fn remember_stderr() {
    // And the pid, so that a vfork child (which runs in this memory) is always told apart
    // from this process (`sys::in_borrowed_memory`), whatever it calls first.
    crate::fork::at_load();
    if let Some(st) = stat2() {
        if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            STDERR_DEV.store(st.st_dev, Ordering::Relaxed);
            STDERR_INO.store(st.st_ino.max(1), Ordering::Relaxed);
        }
    }
}

// The one thing done at load time: remember what stderr is (a single fstat) and the pid.
#[used]
#[link_section = ".init_array"]
static REMEMBER_STDERR: extern "C" fn() = remember_stderr;

fn stderr_is_ours() -> bool {
    let ino = STDERR_INO.load(Ordering::Relaxed);
    ino != 0 && stat2().is_some_and(|st| st.st_ino.max(1) == ino && st.st_dev == STDERR_DEV.load(Ordering::Relaxed))
}

pub fn enabled(level: LogLevel) -> bool {
    level <= state::get().log_level
}

/// `msg` with every control character escaped, so a log line is always exactly one line.
pub fn escape(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    for ch in msg.chars() {
        if (ch as u32) < 0x20 || ch as u32 == 0x7f {
            out.push_str(&format!("\\x{:02x}", ch as u32));
        } else {
            out.push(ch);
        }
    }
    out
}

pub fn write(level: LogLevel, args: std::fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let tag = match level {
        LogLevel::Error => "error",
        LogLevel::Info => "info",
        _ => "debug",
    };
    let line = format!("tsproxy[{}] {tag}: {}\n", sys::pid(), escape(&args.to_string()));
    if let Some(path) = &state::get().log_file {
        if !FILE_FAILED.load(Ordering::Relaxed) {
            match append(path, line.as_bytes()) {
                Ok(()) => return,
                Err(e) => {
                    if !FILE_FAILED.swap(true, Ordering::Relaxed) && stderr_is_ours() {
                        let msg = format!("tsproxy[{}] error: cannot open TSPROXY_LOG_FILE {:?}: {e}; logging to stderr\n", sys::pid(), escape(path));
                        sys::write_all_fd(2, msg.as_bytes());
                    }
                }
            }
        }
    }
    if stderr_is_ours() {
        sys::write_all_fd(2, line.as_bytes());
    }
}

/// Whose files the log may be appended to, or followed through: this process's effective
/// user's, or root's.
fn trusted_owner(uid: libc::uid_t) -> bool {
    // SAFETY: geteuid has no preconditions.
    uid == 0 || uid == unsafe { libc::geteuid() }
}

/// Append one line to the log file. Another local user must not be able to choose where our
/// lines go, nor read them (they name the destinations the program dials): a log path in a
/// directory others can write (`/tmp/tsproxy.log`) may already be their symlink — to a file of
/// ours, which we would append to — or their file, open to them. So a symlink as the last
/// component is followed only when it belongs to this user or root (as `/dev/stderr` does),
/// and the file opened must belong to this user or root; anything else is an error (the line
/// goes to stderr, README: TSPROXY_LOG_FILE).
fn append(path: &str, line: &[u8]) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let refused = || std::io::Error::from_raw_os_error(libc::EACCES);
    // Raw syscalls: `close` is one of our hooks and must not be re-entered from here.
    let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOCTTY;
    let fd = match tsproxy_core::syscall!(SYS_openat, libc::AT_FDCWD, c.as_ptr(), flags | libc::O_NOFOLLOW, 0o600) {
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            // SAFETY: all-zero is a valid stat buffer; the kernel fills it.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            tsproxy_core::syscall!(SYS_newfstatat, libc::AT_FDCWD, c.as_ptr(), &mut st as *mut libc::stat, libc::AT_SYMLINK_NOFOLLOW)?;
            if st.st_mode & libc::S_IFMT != libc::S_IFLNK || !trusted_owner(st.st_uid) {
                return Err(refused());
            }
            tsproxy_core::syscall!(SYS_openat, libc::AT_FDCWD, c.as_ptr(), flags, 0o600)?
        }
        r => r?,
    };
    // SAFETY: as above.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let ours = tsproxy_core::syscall!(SYS_fstat, fd, &mut st as *mut libc::stat).is_ok() && trusted_owner(st.st_uid);
    if ours {
        sys::write_all_fd(fd as i32, line);
    }
    let _ = tsproxy_core::syscall!(SYS_close, fd);
    if ours {
        Ok(())
    } else {
        Err(refused())
    }
}

macro_rules! log {
    ($lvl:ident, $($t:tt)*) => {
        if $crate::log::enabled(::tsproxy_core::config::LogLevel::$lvl) {
            $crate::log::write(::tsproxy_core::config::LogLevel::$lvl, format_args!($($t)*));
        }
    };
}
pub(crate) use log;

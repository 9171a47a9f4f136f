//! Logging: write(2) to stderr or to TSPROXY_LOG_FILE, never through stdio, only at the level
//! configured. Stderr is skipped when fd 2 is a socket (a daemon may have reused it). The log
//! file is opened, appended to and closed per line, so no fd of ours lingers for the program to
//! trip over.
use crate::state;
use tsproxy_core::config::LogLevel;
use tsproxy_core::sys;

pub fn enabled(level: LogLevel) -> bool {
    level <= state::get().log_level
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
    // SAFETY: getpid cannot fail.
    let pid = unsafe { libc::getpid() };
    let line = format!("tsproxy[{pid}] {tag}: {args}\n");
    match &state::get().log_file {
        Some(path) => {
            let Ok(c) = std::ffi::CString::new(path.as_str()) else { return };
            // Raw syscalls: `close` is one of our hooks and must not be re-entered from here.
            let flags = libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC;
            if let Ok(fd) = tsproxy_core::syscall!(SYS_openat, libc::AT_FDCWD, c.as_ptr(), flags, 0o600) {
                sys::write_all_fd(fd as i32, line.as_bytes());
                let _ = tsproxy_core::syscall!(SYS_close, fd);
            }
        }
        None => {
            // SAFETY: all-zero is a valid stat buffer; fstat only writes into it.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: st is a valid, writable stat buffer.
            let r = unsafe { libc::fstat(2, &mut st) };
            if r == 0 && st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
                sys::write_all_fd(2, line.as_bytes());
            }
        }
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

//! `Errno`: an error number for the application, as a type of its own so it is never confused
//! with a file descriptor or a length that happens to be an `i32` too.
use std::fmt;

/// A POSIX error number (`errno`) to report to the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// The raw number, for `errno` or a seccomp response.
    pub fn raw(self) -> i32 {
        self.0
    }

    /// The errno an `io::Error` carries (EIO when it carries none).
    pub fn of(e: &std::io::Error) -> Errno {
        Errno(e.raw_os_error().unwrap_or(libc::EIO))
    }

    /// The calling thread's current errno.
    pub fn last() -> Errno {
        Errno(crate::sys::errno())
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

/// Shorthands for the error numbers tsproxy reports.
pub mod codes {
    use super::Errno;
    /// Connection refused.
    pub const ECONNREFUSED: Errno = Errno(libc::ECONNREFUSED);
    /// Network unreachable.
    pub const ENETUNREACH: Errno = Errno(libc::ENETUNREACH);
    /// Host unreachable.
    pub const EHOSTUNREACH: Errno = Errno(libc::EHOSTUNREACH);
    /// Timed out.
    pub const ETIMEDOUT: Errno = Errno(libc::ETIMEDOUT);
    /// Operation already in progress.
    pub const EALREADY: Errno = Errno(libc::EALREADY);
    /// Already connected.
    pub const EISCONN: Errno = Errno(libc::EISCONN);
    /// Not connected.
    pub const ENOTCONN: Errno = Errno(libc::ENOTCONN);
    /// Try again.
    pub const EAGAIN: Errno = Errno(libc::EAGAIN);
    /// Operation now in progress.
    pub const EINPROGRESS: Errno = Errno(libc::EINPROGRESS);
    /// Invalid argument.
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    /// Address family not supported.
    pub const EAFNOSUPPORT: Errno = Errno(libc::EAFNOSUPPORT);
    /// Message too long.
    pub const EMSGSIZE: Errno = Errno(libc::EMSGSIZE);
    /// Interrupted.
    pub const EINTR: Errno = Errno(libc::EINTR);
    /// Bad file descriptor.
    pub const EBADF: Errno = Errno(libc::EBADF);
}

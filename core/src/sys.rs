//! Raw system calls. Everything the library does on a socket goes through here, never through
//! libc's `connect`/`send`/`recv` wrappers: inside `libtsproxy.so` those symbols resolve to our own
//! hooks, and a raw syscall cannot re-enter them.
use std::io;

/// Run a raw syscall; -1 becomes `io::Error` from errno.
#[macro_export]
macro_rules! syscall {
    ($nr:ident $(, $arg:expr)* $(,)?) => {{
        let nr = ::libc::$nr;
        let args: &[::libc::c_long] = &[$($arg as ::libc::c_long),*];
        // SAFETY: the caller of the macro passes arguments valid for this syscall (pointers to
        // live memory of the right size); the kernel validates the rest and reports errors
        // through the return value.
        let r = unsafe { $crate::sys::raw(nr, args) };
        if r == -1 { Err(::std::io::Error::last_os_error()) } else { Ok(r) }
    }};
}

/// `syscall(2)` with up to six arguments.
///
/// # Safety
/// The arguments must be valid for syscall `nr`.
pub unsafe fn raw(nr: libc::c_long, a: &[libc::c_long]) -> libc::c_long {
    let g = |i: usize| a.get(i).copied().unwrap_or(0);
    // SAFETY: forwarded to the caller; unused trailing arguments are ignored by the kernel.
    unsafe { libc::syscall(nr, g(0), g(1), g(2), g(3), g(4), g(5)) }
}

pub fn errno() -> i32 {
    // SAFETY: __errno_location always returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() }
}

pub fn set_errno(e: i32) {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = e }
}

pub fn code(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

pub fn fcntl_getfl(fd: i32) -> io::Result<i32> {
    syscall!(SYS_fcntl, fd, libc::F_GETFL).map(|r| r as i32)
}

pub fn fcntl_setfl(fd: i32, fl: i32) -> io::Result<()> {
    syscall!(SYS_fcntl, fd, libc::F_SETFL, fl).map(|_| ())
}

pub fn getsockopt_int(fd: i32, level: i32, opt: i32) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    syscall!(SYS_getsockopt, fd, level, opt, &mut v as *mut libc::c_int, &mut len as *mut libc::socklen_t)?;
    Ok(v)
}

/// SO_SNDTIMEO / SO_RCVTIMEO as a Duration (None when unset, i.e. zero).
pub fn sock_timeout(fd: i32, opt: i32) -> Option<std::time::Duration> {
    let mut tv = libc::timeval { tv_sec: 0, tv_usec: 0 };
    let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    syscall!(SYS_getsockopt, fd, libc::SOL_SOCKET, opt, &mut tv as *mut libc::timeval, &mut len as *mut libc::socklen_t).ok()?;
    let d = std::time::Duration::new(tv.tv_sec as u64, tv.tv_usec as u32 * 1000);
    (!d.is_zero()).then_some(d)
}

pub fn connect_raw(fd: i32, addr: *const libc::sockaddr, len: libc::socklen_t) -> io::Result<()> {
    syscall!(SYS_connect, fd, addr, len).map(|_| ())
}

/// Dissolve a TCP association (connect with AF_UNSPEC) so the socket can connect again.
pub fn disconnect(fd: i32) {
    // SAFETY: zeroed sockaddr is a valid bit pattern.
    let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
    sa.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    let _ = connect_raw(fd, &sa, std::mem::size_of::<libc::sockaddr>() as libc::socklen_t);
}

pub fn send(fd: i32, buf: &[u8]) -> io::Result<usize> {
    syscall!(SYS_sendto, fd, buf.as_ptr(), buf.len(), libc::MSG_NOSIGNAL, 0usize, 0usize).map(|r| r as usize)
}

pub fn recv(fd: i32, buf: &mut [u8], flags: i32) -> io::Result<usize> {
    syscall!(SYS_recvfrom, fd, buf.as_mut_ptr(), buf.len(), flags, 0usize, 0usize).map(|r| r as usize)
}

/// poll one fd for `events`, waiting at most `ms` (-1: forever). Returns revents (0 on timeout).
pub fn poll1(fd: i32, events: i16, ms: i32) -> io::Result<i16> {
    let mut p = libc::pollfd { fd, events, revents: 0 };
    let ts;
    let tsp = if ms < 0 {
        std::ptr::null()
    } else {
        ts = libc::timespec { tv_sec: (ms / 1000) as _, tv_nsec: ((ms % 1000) as i64 * 1_000_000) as _ };
        &ts as *const libc::timespec
    };
    let n = syscall!(SYS_ppoll, &mut p as *mut libc::pollfd, 1usize, tsp, 0usize, 0usize)?;
    Ok(if n == 0 { 0 } else { p.revents })
}

pub fn write_all_fd(fd: i32, mut buf: &[u8]) {
    while !buf.is_empty() {
        match syscall!(SYS_write, fd, buf.as_ptr(), buf.len()) {
            Ok(n) => buf = &buf[n as usize..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

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

/// A system call with up to six arguments: -1 and errno on failure, as `syscall(2)`.
///
/// On x86_64 it is the `syscall` instruction itself, not libc's `syscall()` wrapper: the
/// preload library exports a `syscall` of its own (it hands the socket calls that programs make
/// through libc's wrapper to its hooks), and tsproxy's own system calls must never reach it.
///
/// # Safety
/// The arguments must be valid for syscall `nr`.
pub unsafe fn raw(nr: libc::c_long, a: &[libc::c_long]) -> libc::c_long {
    let g = |i: usize| a.get(i).copied().unwrap_or(0);
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: forwarded to the caller.
        let r = unsafe { bare(nr, [g(0), g(1), g(2), g(3), g(4), g(5)]) };
        if (-4095..0).contains(&r) {
            set_errno(-r as i32);
            return -1;
        }
        r
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: forwarded to the caller; unused trailing arguments are ignored by the kernel.
    unsafe {
        libc::syscall(nr, g(0), g(1), g(2), g(3), g(4), g(5))
    }
}

/// The `syscall` instruction alone: the kernel's result, `-errno` on failure, and nothing
/// written anywhere else — no errno, no libc. For code that runs on a thread pointer that is
/// not its own (the launcher's supervisor before the launcher's exec: wrapper's spawn.rs).
///
/// # Safety
/// The arguments must be valid for syscall `nr`.
#[cfg(target_arch = "x86_64")]
#[inline]
pub unsafe fn bare(nr: libc::c_long, a: [libc::c_long; 6]) -> libc::c_long {
    let r: libc::c_long;
    // SAFETY: the caller passes arguments valid for this system call; the kernel's ABI: number
    // in rax, arguments in rdi, rsi, rdx, r10, r8, r9, result in rax, rcx and r11 clobbered; no
    // stack is used. Memory the arguments point to may be read or written by the kernel (hence
    // no `nomem`/`readonly`).
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr => r,
            in("rdi") a[0], in("rsi") a[1], in("rdx") a[2], in("r10") a[3], in("r8") a[4], in("r9") a[5],
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    r
}

/// The calling thread's errno.
pub fn errno() -> i32 {
    // SAFETY: __errno_location always returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Set the calling thread's errno (the boundary does this last, after everything of ours ran).
pub fn set_errno(e: i32) {
    // SAFETY: __errno_location returns a valid, aligned pointer to this thread's own errno,
    // which no other thread writes.
    unsafe { *libc::__errno_location() = e }
}

/// The errno inside an `io::Error` (EIO for an error that carries none).
pub fn code(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// `fcntl(fd, F_GETFL)`: the file status flags (O_NONBLOCK...).
pub fn fcntl_getfl(fd: i32) -> io::Result<i32> {
    syscall!(SYS_fcntl, fd, libc::F_GETFL).map(|r| r as i32)
}

/// `fcntl(fd, F_SETFL, fl)`.
pub fn fcntl_setfl(fd: i32, fl: i32) -> io::Result<()> {
    syscall!(SYS_fcntl, fd, libc::F_SETFL, fl).map(|_| ())
}

/// An `int`-valued socket option (SO_TYPE, SO_ERROR, SO_DOMAIN...).
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

/// Set in the upper 32 bits of a socklen_t syscall argument. The kernel reads that argument as
/// an `int` and never sees these bits; the launcher's seccomp filter does, and lets a marked
/// connect/sendto through without waking the supervisor: it comes from libtsproxy.so, which has
/// already decided about it.
pub const SECCOMP_MARK: u64 = 0x7473_7078 << 32;

fn marked(len: libc::socklen_t) -> i64 {
    (len as u64 | SECCOMP_MARK) as i64
}

/// connect(2) as a raw syscall, marked (see `SECCOMP_MARK`): the library's own connects to the
/// proxy and its pass-through connects under the supervisor.
pub fn connect_raw(fd: i32, addr: *const libc::sockaddr, len: libc::socklen_t) -> io::Result<()> {
    syscall!(SYS_connect, fd, addr, marked(len)).map(|_| ())
}

/// sendto with an address, marked like `connect_raw`.
pub fn sendto_marked(fd: i32, buf: *const libc::c_void, n: usize, flags: i32, addr: *const libc::sockaddr, len: libc::socklen_t) -> io::Result<usize> {
    syscall!(SYS_sendto, fd, buf, n, flags, addr, marked(len)).map(|r| r as usize)
}

/// Does the socket have a peer (getpeername succeeds)?
pub fn is_connected(fd: i32) -> bool {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut sa: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    syscall!(SYS_getpeername, fd, &mut sa as *mut libc::sockaddr_storage, &mut len as *mut libc::socklen_t).is_ok()
}

/// Dissolve a TCP association (connect with AF_UNSPEC) so the socket can connect again.
pub fn disconnect(fd: i32) {
    // SAFETY: zeroed sockaddr is a valid bit pattern.
    let mut sa: libc::sockaddr = unsafe { std::mem::zeroed() };
    sa.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    let _ = connect_raw(fd, &sa, std::mem::size_of::<libc::sockaddr>() as libc::socklen_t);
}

/// send(2) with MSG_NOSIGNAL (a closed proxy connection is an error, never SIGPIPE).
pub fn send(fd: i32, buf: &[u8]) -> io::Result<usize> {
    syscall!(SYS_sendto, fd, buf.as_ptr(), buf.len(), libc::MSG_NOSIGNAL, 0usize, 0usize).map(|r| r as usize)
}

/// recv(2) into `buf`.
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

/// The socket's own address (`getsockname`, a raw system call: no hook of ours re-entered).
/// An IPv4-mapped address stays mapped; callers that compare unmap it.
pub fn local_addr(fd: i32) -> Option<std::net::SocketAddr> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut l = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    syscall!(SYS_getsockname, fd, &mut st as *mut libc::sockaddr_storage, &mut l as *mut libc::socklen_t).ok()?;
    // SAFETY: the kernel wrote `l` bytes (at most the storage's size) of an address into `st`.
    unsafe { crate::sockaddr::read((&st as *const libc::sockaddr_storage).cast(), l) }
}

/// Write all of `buf` to `fd`, retrying on EINTR; gives up silently on any other error (used
/// for log lines, which must never fail the call they describe — nor kill the program: a
/// write to a pipe whose reader is gone raises SIGPIPE, whose default action ends the process,
/// and the program, which wrote nothing, would have lived. So SIGPIPE is blocked in this
/// thread for the write, and one that the write raised is taken back (`rt_sigtimedwait`),
/// unless one was already pending before it.)
pub fn write_all_fd(fd: i32, mut buf: &[u8]) {
    let pipe: u64 = 1 << (libc::SIGPIPE - 1);
    let mut old: u64 = 0;
    let blocked = syscall!(SYS_rt_sigprocmask, libc::SIG_BLOCK, &pipe as *const u64, &mut old as *mut u64, 8usize).is_ok();
    let mut pending: u64 = 0;
    let had = blocked && syscall!(SYS_rt_sigpending, &mut pending as *mut u64, 8usize).is_ok() && pending & pipe != 0;
    let mut epipe = false;
    while !buf.is_empty() {
        match syscall!(SYS_write, fd, buf.as_ptr(), buf.len()) {
            Ok(n) => buf = &buf[n as usize..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                epipe = e.raw_os_error() == Some(libc::EPIPE);
                break;
            }
        }
    }
    if blocked {
        if epipe && !had {
            let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            let _ = syscall!(SYS_rt_sigtimedwait, &pipe as *const u64, 0usize, &zero as *const libc::timespec, 8usize);
        }
        let _ = syscall!(SYS_rt_sigprocmask, libc::SIG_SETMASK, &old as *const u64, 0usize, 8usize);
    }
}

/// epoll_ctl(2) with an event built from `events` and `data`.
pub fn epoll_ctl(epfd: i32, op: i32, fd: i32, events: u32, data: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    syscall!(SYS_epoll_ctl, epfd, op, fd, &mut ev as *mut libc::epoll_event).map(|_| ())
}

/// Read a small /proc file with raw syscalls (never through hooked libc `read`).
pub fn read_proc(path: &std::ffi::CStr) -> io::Result<Vec<u8>> {
    let fd = syscall!(SYS_openat, libc::AT_FDCWD, path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC)? as i32;
    let mut out = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    let r = loop {
        match syscall!(SYS_read, fd, buf.as_mut_ptr(), buf.len()) {
            Ok(0) => break Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n as usize]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
        if out.len() > (1 << 22) {
            break Ok(out);
        }
    };
    let _ = syscall!(SYS_close, fd);
    r
}

/// The epoll registrations listed in /proc/self/fdinfo/EPFD: (target fd, events, data).
pub fn epoll_registrations(epfd: i32) -> Vec<(i32, u32, u64)> {
    let Ok(path) = std::ffi::CString::new(format!("/proc/self/fdinfo/{epfd}")) else { return Vec::new() };
    let Ok(text) = read_proc(&path) else { return Vec::new() };
    parse_epoll_fdinfo(&String::from_utf8_lossy(&text))
}

/// Parse `tfd: N events: HEX data: HEX ...` lines.
pub fn parse_epoll_fdinfo(text: &str) -> Vec<(i32, u32, u64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        if it.next() != Some("tfd:") {
            continue;
        }
        let fd = it.next().and_then(|v| v.parse().ok());
        let ev = (it.next() == Some("events:")).then(|| it.next().and_then(|v| u32::from_str_radix(v, 16).ok())).flatten();
        let data = (it.next() == Some("data:")).then(|| it.next().and_then(|v| u64::from_str_radix(v, 16).ok())).flatten();
        if let (Some(fd), Some(ev), Some(data)) = (fd, ev, data) {
            out.push((fd, ev, data));
        }
    }
    out
}

/// Is `fd` registered in epoll instance `epfd`? Some(answer) from kcmp(KCMP_EPOLL_TFD), O(1);
/// None when the kernel lacks kcmp (then read /proc/self/fdinfo).
pub fn epoll_has(epfd: i32, fd: i32) -> Option<bool> {
    #[repr(C)]
    struct Slot {
        efd: u32,
        tfd: u32,
        toff: u32,
    }
    const KCMP_EPOLL_TFD: i32 = 7;
    let slot = Slot { efd: epfd as u32, tfd: fd as u32, toff: 0 };
    let pid = pid();
    match syscall!(SYS_kcmp, pid, pid, KCMP_EPOLL_TFD, fd, &slot as *const Slot) {
        Ok(0) => Some(true),
        Ok(_) => Some(false),
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) || e.raw_os_error() == Some(libc::EPERM) => None,
        Err(_) => Some(false),
    }
}

static PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// This process's pid, cached (call `refresh_pid` in a fork child).
pub fn pid() -> i32 {
    let p = PID.load(std::sync::atomic::Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    // SAFETY: getpid has no preconditions.
    let p = unsafe { libc::getpid() };
    PID.store(p, std::sync::atomic::Ordering::Relaxed);
    p
}

/// Does this thread run in memory it shares with its parent process: a `vfork()` child (or a
/// `clone(CLONE_VM)` one) between its start and its `exec`/`_exit`? Its pid is not the one
/// cached, which no fork handler reset (glibc runs none for vfork). Such a child has a
/// descriptor table of its own but *our* tables are its parent's: bookkeeping done there for
/// the child's `close`/`dup2`/`close_range` (CPython's subprocess does all three after vfork)
/// would take the parent's pending handshakes out of the parent's driver. One `getpid` system
/// call. The library caches its pid at load time and in every fork child, so a vfork child
/// never finds the cache empty.
/// A `clone()` child without `CLONE_VM` (memory copied, no fork handlers) also answers true:
/// it keeps stale entries for descriptors it closes, which per-fd state tolerates (an entry is
/// trusted only while its descriptor is the same socket).
pub fn in_borrowed_memory() -> bool {
    let p = PID.load(std::sync::atomic::Ordering::Relaxed);
    p != 0 && syscall!(SYS_getpid).is_ok_and(|r| r as i32 != p)
}

/// Cache this process's pid now: at load time and in a fork child (which has its own), so that
/// it is never first cached by a vfork child running in this memory (see
/// [`in_borrowed_memory`]).
pub fn refresh_pid() {
    if let Ok(p) = syscall!(SYS_getpid) {
        PID.store(p as i32, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Is `fd` an epoll instance?
pub fn is_epoll(fd: i32) -> bool {
    let Ok(path) = std::ffi::CString::new(format!("/proc/self/fd/{fd}")) else { return false };
    let mut buf = [0u8; 64];
    match syscall!(SYS_readlinkat, libc::AT_FDCWD, path.as_ptr(), buf.as_mut_ptr(), buf.len()) {
        Ok(n) => &buf[..n as usize] == b"anon_inode:[eventpoll]",
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_are_read_without_faulting() {
        let me = std::process::id() as i32;
        let a = b"header".to_vec();
        let b = vec![7u8; 70_000];
        assert_eq!(read_datagram(me, DatagramAt::Buf(a.as_ptr() as u64, a.len() as u64)), Some(a.clone()));
        assert_eq!(read_datagram(me, DatagramAt::Buf(0, 0)), Some(vec![]));
        // Gathered from iovecs, cut at DATAGRAM_MAX; empty iovecs skipped.
        let iov = [
            libc::iovec { iov_base: a.as_ptr() as *mut libc::c_void, iov_len: a.len() },
            libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 },
            libc::iovec { iov_base: b.as_ptr() as *mut libc::c_void, iov_len: b.len() },
        ];
        let got = read_datagram(me, DatagramAt::Iov(iov.as_ptr() as u64, 3)).unwrap();
        assert_eq!(got.len(), DATAGRAM_MAX);
        assert_eq!(&got[..6], b"header");
        assert!(got[6..].iter().all(|&x| x == 7));
        // Bad pointers: None (EFAULT), never a fault; too many iovecs: None.
        assert_eq!(read_datagram(me, DatagramAt::Buf(8, 16)), None);
        assert_eq!(read_datagram(me, DatagramAt::Iov(8, 1)), None);
        let bad = [libc::iovec { iov_base: 8 as *mut libc::c_void, iov_len: 4 }];
        assert_eq!(read_datagram(me, DatagramAt::Iov(bad.as_ptr() as u64, 1)), None);
        assert_eq!(read_datagram(me, DatagramAt::Iov(iov.as_ptr() as u64, 1025)), None);
    }

    #[test]
    fn fdinfo_parsing() {
        let t = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\ntfd:        5 events:       19 data:                5  pos:0 ino:1c7b sdev:8\ntfd:       12 events: 80000004 data: deadbeef00000001  pos:0 ino:1c7c sdev:8\n";
        assert_eq!(parse_epoll_fdinfo(t), vec![(5, 0x19, 5), (12, 0x8000_0004, 0xdead_beef_0000_0001)]);
    }

    #[test]
    fn live_epoll_fdinfo() {
        // SAFETY: plain syscalls on fds this test owns.
        unsafe {
            let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
            let mut p = [0; 2];
            libc::pipe(p.as_mut_ptr());
            epoll_ctl(ep, libc::EPOLL_CTL_ADD, p[0], (libc::EPOLLIN | libc::EPOLLET) as u32, 0xabc).unwrap();
            assert!(is_epoll(ep));
            assert_ne!(epoll_has(ep, p[0]), Some(false));
            assert_ne!(epoll_has(ep, p[1]), Some(true));
            assert!(!is_epoll(p[0]));
            // The kernel adds EPOLLERR|EPOLLHUP (always reported anyway) to every registration.
            let want = (libc::EPOLLIN | libc::EPOLLET | libc::EPOLLERR | libc::EPOLLHUP) as u32;
            assert_eq!(epoll_registrations(ep), vec![(p[0], want, 0xabc)]);
            libc::close(ep);
            libc::close(p[0]);
            libc::close(p[1]);
        }
    }
}

/// Where a datagram's bytes are in a process's memory, as numbers (never dereferenced here).
#[derive(Clone, Copy, Debug)]
pub enum DatagramAt {
    /// sendto's `(buf, len)`.
    Buf(u64, u64),
    /// A msghdr's `(msg_iov, msg_iovlen)`.
    Iov(u64, u64),
}

/// Bytes of a datagram [`read_datagram`] reads at most: the largest UDP payload is 65,507
/// (IPv4) or 65,527 bytes (IPv6 without jumbograms); a larger send fails in the kernel.
pub const DATAGRAM_MAX: usize = 65536;

/// The kernel's limit on iovecs per message (UIO_MAXIOV).
const IOV_MAX: usize = 1024;

/// The first [`DATAGRAM_MAX`] bytes of a datagram in the memory of process (or thread) `pid`,
/// gathered from its iovecs, with `process_vm_readv`: a bad pointer gives None (the kernel's
/// EFAULT), never a fault — so the library can read its caller's buffers (pid = its own) for
/// a send the kernel would fail with EFAULT, and the supervisor the target's. None also when
/// the send would fail anyway (more than UIO_MAXIOV iovecs).
pub fn read_datagram(pid: i32, at: DatagramAt) -> Option<Vec<u8>> {
    let mut remote: Vec<libc::iovec> = Vec::new();
    let read = |local: &mut [u8], remote: &[libc::iovec]| -> Option<()> {
        if local.is_empty() {
            return Some(());
        }
        let l = libc::iovec { iov_base: local.as_mut_ptr().cast(), iov_len: local.len() };
        let n = syscall!(SYS_process_vm_readv, pid, &l as *const libc::iovec, 1, remote.as_ptr(), remote.len(), 0).ok()?;
        (n as usize == local.len()).then_some(())
    };
    match at {
        DatagramAt::Buf(p, n) => remote.push(libc::iovec { iov_base: p as *mut libc::c_void, iov_len: n as usize }),
        DatagramAt::Iov(p, n) => {
            if n as usize > IOV_MAX {
                return None;
            }
            let size = std::mem::size_of::<libc::iovec>();
            let len = n as usize * size;
            let mut raw = vec![0u8; len];
            read(&mut raw, &[libc::iovec { iov_base: p as *mut libc::c_void, iov_len: len }])?;
            for c in raw.chunks_exact(size) {
                // SAFETY: c holds size_of::<iovec>() initialized bytes and every bit pattern is
                // a valid iovec; its pointer only goes to process_vm_readv, as a number.
                remote.push(unsafe { std::ptr::read_unaligned(c.as_ptr().cast()) });
            }
        }
    }
    let mut left = DATAGRAM_MAX;
    remote.retain_mut(|v| {
        v.iov_len = v.iov_len.min(left);
        left -= v.iov_len;
        v.iov_len > 0
    });
    let mut buf = vec![0u8; DATAGRAM_MAX - left];
    read(&mut buf, &remote)?;
    Some(buf)
}

//! `syscall(2)`, libc's generic wrapper, which some libraries use for calls they think libc
//! may lack: libuv before 1.45 sends and receives UDP batches with `syscall(SYS_sendmmsg)` and
//! `syscall(SYS_recvmmsg)` (dig, and every program on such a libuv), so a datagram to a
//! tailnet destination, or a DNS question for a tailnet name, would pass every other hook; and
//! every libuv (node) closes descriptors with `syscall(SYS_close)`, and programs older than
//! glibc's `close_range` wrapper call `syscall(SYS_close_range)`.
//!
//! Not a hook with logic of its own: the socket calls are handed to the exported hooks of the
//! same name (each through its own boundary, as if the program had called libc's function —
//! which is what glibc's wrappers do with the same arguments), every other number to libc's
//! `syscall` untouched (one compare). tsproxy's own raw syscalls never come here: they are made
//! with the `syscall` instruction itself (`tsproxy_core::sys::raw`).
//!
//! x86_64 passes a variadic call's integer arguments in the registers a fixed seven-argument
//! function reads them from (rdi, rsi, rdx, rcx, r8, r9, then the stack), so the export can take
//! them as fixed arguments; the real `syscall` is called the same way (glibc's is a few
//! instructions of assembly that read those registers).
use libc::{c_int, c_long, c_uint, mmsghdr, msghdr, sockaddr, socklen_t, timespec};

/// # Safety
/// syscall(2)'s contract, for the number given.
#[no_mangle]
#[cfg(target_arch = "x86_64")]
pub unsafe extern "C-unwind" fn syscall(n: c_long, a1: c_long, a2: c_long, a3: c_long, a4: c_long, a5: c_long, a6: c_long) -> c_long {
    // SAFETY: (every arm) the program's own arguments for this system call, passed on with the
    // types the system call (and the hook of libc's function of that name) takes them as.
    unsafe {
        match n {
            // libuv closes with syscall(SYS_close) (uv__close_nocancel): a socket whose
            // handshake runs must be forgotten with it, as by close().
            libc::SYS_close => super::close(a1 as c_int) as c_long,
            // Programs that predate glibc's close_range wrapper (2.34) call it this way: our
            // own descriptors in the range must be spared, as by close_range().
            libc::SYS_close_range => super::close_range(a1 as c_uint, a2 as c_uint, a3 as c_int) as c_long,
            libc::SYS_connect => super::connect(a1 as c_int, a2 as *const sockaddr, a3 as socklen_t) as c_long,
            libc::SYS_sendto => {
                super::sendto(a1 as c_int, a2 as *const libc::c_void, a3 as usize, a4 as c_int, a5 as *const sockaddr, a6 as socklen_t) as c_long
            }
            libc::SYS_sendmsg => super::sendmsg(a1 as c_int, a2 as *const msghdr, a3 as c_int) as c_long,
            libc::SYS_sendmmsg => super::sendmmsg(a1 as c_int, a2 as *mut mmsghdr, a3 as c_uint, a4 as c_int) as c_long,
            libc::SYS_recvfrom => {
                super::recvfrom(a1 as c_int, a2 as *mut libc::c_void, a3 as usize, a4 as c_int, a5 as *mut sockaddr, a6 as *mut socklen_t) as c_long
            }
            libc::SYS_recvmsg => super::recvmsg(a1 as c_int, a2 as *mut msghdr, a3 as c_int) as c_long,
            libc::SYS_recvmmsg => super::recvmmsg(a1 as c_int, a2 as *mut mmsghdr, a3 as c_uint, a4 as c_int, a5 as *mut timespec) as c_long,
            _ => pass(n, a1, a2, a3, a4, a5, a6),
        }
    }
}

/// libc's own `syscall`.
///
/// # Safety
/// As `syscall`.
#[cfg(target_arch = "x86_64")]
unsafe fn pass(n: c_long, a1: c_long, a2: c_long, a3: c_long, a4: c_long, a5: c_long, a6: c_long) -> c_long {
    let real = real!(syscall: fn(c_long, c_long, c_long, c_long, c_long, c_long, c_long) -> c_long);
    // SAFETY: the caller's arguments, unchanged, to the function they were meant for.
    unsafe { real(n, a1, a2, a3, a4, a5, a6) }
}

//! Receiving on a socket whose receives tsproxy makes itself (the DNS sockets of `dns::wire`,
//! the UDP relays of `net::udp`): the receive is made nonblocking, and a blocking caller waits
//! at the boundary (a cancellation point, interruptible by signals) rather than in the kernel.
//! Both kinds wait, and come back from a signal, by the same rules here.
use crate::boundary::{Ctx, Detour, Wait};
use libc::c_int;
use tsproxy_core::{sys, syscall, Errno};

/// The wait for a blocking receive that found nothing queued: until `fd` is readable, within
/// what is left of `SO_RCVTIMEO` (then `EAGAIN`, as the kernel says).
pub fn wait_readable<T>(fd: c_int, ctx: &mut Ctx) -> Detour<T> {
    let start = *ctx.start.get_or_insert_with(std::time::Instant::now);
    let left = match sys::sock_timeout(fd, libc::SO_RCVTIMEO) {
        Some(t) => {
            let left = t.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Detour::Fail(Errno(libc::EAGAIN));
            }
            left.as_millis().clamp(1, i32::MAX as u128) as c_int
        }
        None => -1,
    };
    Detour::Wait(Wait { fds: crate::net::pending::wake::one(fd, libc::POLLIN), n: 1, timeout_ms: left, sigmask: std::ptr::null() })
}

/// Back from such a wait, interrupted by a signal handler: does the receive fail with `EINTR`?
/// The kernel restarts it when the handler has `SA_RESTART`; which signal came is not known
/// here, so: no (restart) when every signal the program catches has it (the usual case:
/// glibc's `signal()` sets it), yes when one does not. Costs 64 `rt_sigaction` reads, only
/// after an interruption.
pub fn interrupted(ctx: &Ctx) -> bool {
    ctx.round > 0 && matches!(ctx.woke, Some((r, e)) if r < 0 && e.raw() == libc::EINTR) && !restartable()
}

fn restartable() -> bool {
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // The kernel's sigaction: handler, flags, restorer, an 8-byte mask.
        let mut old: [u64; 4] = [0; 4];
        if syscall!(SYS_rt_sigaction, sig, 0usize, old.as_mut_ptr(), 8usize).is_err() {
            continue;
        }
        let (handler, flags) = (old[0], old[1]);
        let caught = handler != libc::SIG_DFL as u64 && handler != libc::SIG_IGN as u64;
        if caught && flags & libc::SA_RESTART as u64 == 0 {
            return false;
        }
    }
    true
}

//! The two placeholders of a name (IPv4 and IPv6, both from one `getaddrinfo(AF_UNSPEC)`) lead
//! to the same name at the proxy. A client that tries a name's addresses in turn (Python's
//! `create_connection`, glibc-style loops, Go's dialer after the first fails) would otherwise
//! ask the proxy twice for a dial that has just failed, and wait twice as long for a peer that
//! does not answer. So a failure through one family's placeholder is remembered for
//! [`WINDOW_MS`], and a connect through the *other* family's placeholder of the same name and
//! port within that window gets the same errno at once. A retry through the same address
//! always goes to the proxy again (a server that has just come up must be reachable).
//!
//! Lock-free: a small array of packed words (slot 24 bits, port 16, family 1, errno 8, time
//! 15 bits in 32 ms units), overwritten freely; a lost entry costs one more proxy dial, never a
//! wrong answer, because an entry only ever speaks for its own slot, port and family.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use tsproxy_core::{names, Errno};

/// How long a failure speaks for the other family's placeholder.
pub const WINDOW_MS: u64 = 1000;
const N: usize = 64;
const UNIT_MS: u64 = 32;
static RECENT: [AtomicU64; N] = [const { AtomicU64::new(0) }; N];

fn now_units() -> u64 {
    // SAFETY: all-zero is a valid timespec; clock_gettime writes it (the vDSO: no syscall,
    // and not one of our hooks).
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid clock id and out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000) / UNIT_MS
}

/// The slot, port and family of a placeholder destination.
fn key(dest: SocketAddr) -> Option<(u32, u16, u64)> {
    let v6 = matches!(dest, SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_none());
    let slot = names::slot_of(&tsproxy_core::cidr::unmap(dest.ip()))?;
    Some((slot, dest.port(), v6 as u64))
}

/// The placeholder's slot and port, for a destination that is a placeholder.
pub fn key_of(dest: SocketAddr) -> Option<(u32, u16)> {
    key(dest).map(|(s, p, _)| (s, p))
}

fn index(slot: u32, port: u16) -> usize {
    ((slot as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ port as u64).wrapping_mul(0x9E37_79B9) as usize % N
}

/// A connect to the placeholder `dest` failed with `e` at the proxy.
pub fn failed(dest: SocketAddr, e: Errno) {
    // Only what the proxy says about the destination itself; EAFNOSUPPORT/EINVAL (an address
    // that does not fit the socket) and the like speak for that one call alone.
    if ![libc::ECONNREFUSED, libc::ETIMEDOUT, libc::EHOSTUNREACH, libc::ENETUNREACH].contains(&e.raw()) {
        return;
    }
    let Some((slot, port, fam)) = key(dest) else { return };
    let Ok(code) = u8::try_from(e.raw()) else { return };
    let w = (slot as u64) << 40 | (port as u64) << 24 | fam << 23 | (code as u64) << 15 | (now_units() & 0x7fff);
    RECENT[index(slot, port)].store(w, Ordering::Relaxed);
}

/// A connect to the placeholder `dest` succeeded: a later abandonment of the other family's
/// attempt (the loser of a happy-eyeballs race, closed by the program) speaks for nothing.
pub fn succeeded(dest: SocketAddr) {
    let Some((slot, port, fam)) = key(dest) else { return };
    let w = (slot as u64) << 40 | (port as u64) << 24 | fam << 23 | (now_units() & 0x7fff);
    RECENT[index(slot, port)].store(w, Ordering::Relaxed);
}

/// The program closed a connect to the placeholder `dest` that had been waiting at the proxy
/// for `waited` (its own timeout ran out: Python's `create_connection(timeout=)`, curl's
/// `--connect-timeout`). When that is long (at least half a second) and the other family's
/// attempt has not just succeeded, the other family's placeholder would wait as long for the
/// same name: it times out at once instead (`ETIMEDOUT`), so trying both addresses in turn
/// does not double the program's timeout.
pub fn abandoned(dest: SocketAddr, waited: std::time::Duration) {
    if waited < std::time::Duration::from_millis(500) {
        return;
    }
    let Some((slot, port, fam)) = key(dest) else { return };
    let w = RECENT[index(slot, port)].load(Ordering::Relaxed);
    let fresh = w != 0 && (w >> 40) as u32 == slot && (w >> 24) as u16 == port && (now_units().wrapping_sub(w) & 0x7fff) * UNIT_MS < WINDOW_MS;
    if fresh && (w >> 15) & 0xff == 0 && (w >> 23) & 1 != fam {
        return; // the other family connected just now
    }
    failed(dest, Errno(libc::ETIMEDOUT));
}

/// The errno a connect to the placeholder `dest` gets at once, because the other family's
/// placeholder of the same name and port failed with it within [`WINDOW_MS`].
pub fn fresh_failure(dest: SocketAddr) -> Option<Errno> {
    let (slot, port, fam) = key(dest)?;
    let w = RECENT[index(slot, port)].load(Ordering::Relaxed);
    if w == 0 || (w >> 40) as u32 != slot || (w >> 24) as u16 != port || (w >> 23) & 1 == fam || (w >> 15) & 0xff == 0 {
        return None;
    }
    let age = (now_units().wrapping_sub(w) & 0x7fff) * UNIT_MS;
    (age < WINDOW_MS).then_some(Errno(((w >> 15) & 0xff) as i32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn a_failure_speaks_for_the_other_family_only() {
        let s = names::try_intern("siblings-test-peer").unwrap();
        let v4 = SocketAddr::new(IpAddr::V4(names::v4(s)), 8080);
        let v6 = SocketAddr::new(IpAddr::V6(names::v6(s)), 8080);
        let mapped = SocketAddr::new(IpAddr::V6(names::v4(s).to_ipv6_mapped()), 8080);
        assert_eq!(fresh_failure(v6), None);
        failed(v4, Errno(libc::ECONNREFUSED));
        assert_eq!(fresh_failure(v6), Some(Errno(libc::ECONNREFUSED)));
        assert_eq!(fresh_failure(v4), None, "a retry of the same address goes to the proxy");
        assert_eq!(fresh_failure(mapped), None, "a v4-mapped address is the IPv4 placeholder");
        assert_eq!(fresh_failure(SocketAddr::new(v6.ip(), 8081)), None, "another port");
        failed(v6, Errno(libc::ETIMEDOUT));
        assert_eq!(fresh_failure(v4), Some(Errno(libc::ETIMEDOUT)));
        assert_eq!(fresh_failure("100.64.0.2:8080".parse().unwrap()), None);
        // A long wait abandoned by the program: the other family times out at once; unless
        // the other family has just connected (a happy-eyeballs loser closed).
        let q4 = SocketAddr::new(v4.ip(), 7070);
        let q6 = SocketAddr::new(v6.ip(), 7070);
        abandoned(q4, std::time::Duration::from_millis(100));
        assert_eq!(fresh_failure(q6), None, "a short wait speaks for nothing");
        abandoned(q4, std::time::Duration::from_millis(1500));
        assert_eq!(fresh_failure(q6), Some(Errno(libc::ETIMEDOUT)));
        succeeded(q6);
        assert_eq!(fresh_failure(q4), None);
        abandoned(q4, std::time::Duration::from_millis(1500));
        assert_eq!(fresh_failure(q6), None, "the loser of a race");
        let p = SocketAddr::new(v4.ip(), 9090);
        failed(p, Errno(libc::EAFNOSUPPORT));
        assert_eq!(fresh_failure(SocketAddr::new(v6.ip(), 9090)), None, "not about the destination");
    }
}

//! Placeholder addresses for tailnet names.
//!
//! A tailnet name never reaches the system resolver. `getaddrinfo("peer")` answers with a
//! placeholder, `240.0.x.y` (from 240.0.0.0/4, reserved, routed nowhere) or `100::x.y` (from
//! 100::/64, the IPv6 discard-only prefix), and `connect()` to a placeholder sends the *name* to
//! the proxy (SOCKS5 ATYP 3), so tailscaled resolves it with MagicDNS.
//!
//! The table is lock-free (a fixed array of atomic pointers, filled by compare-and-swap, never
//! emptied), so it is safe from any thread, in a forked child and in a signal handler that only
//! reads. The slot is chosen by hashing the name, so a process and its exec'd children usually
//! agree on the address of a name even without sharing memory.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicPtr, Ordering};

pub const SLOTS: usize = 16384;

static TABLE: [AtomicPtr<String>; SLOTS] = [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS];

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// The slot of `name` (normalized: lower case, no trailing dot), adding it if new. None when the
/// table is full (16384 distinct names in one process).
pub fn intern(name: &str) -> Option<u32> {
    let n = crate::config::normalize_name(name);
    if n.is_empty() || n.len() > 255 {
        return None;
    }
    let start = (fnv1a(&n) % SLOTS as u64) as usize;
    let mut fresh: *mut String = std::ptr::null_mut();
    for i in 0..SLOTS {
        let slot = (start + i) % SLOTS;
        let mut cur = TABLE[slot].load(Ordering::Acquire);
        if cur.is_null() {
            if fresh.is_null() {
                fresh = Box::into_raw(Box::new(n.clone()));
            }
            match TABLE[slot].compare_exchange(std::ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(slot as u32),
                Err(other) => cur = other,
            }
        }
        // SAFETY: non-null pointers in TABLE come from Box::into_raw and are never freed.
        if unsafe { &*cur } == &n {
            if !fresh.is_null() {
                // SAFETY: `fresh` was never published; we still own it.
                drop(unsafe { Box::from_raw(fresh) });
            }
            return Some(slot as u32);
        }
    }
    if !fresh.is_null() {
        // SAFETY: as above.
        drop(unsafe { Box::from_raw(fresh) });
    }
    None
}

/// Put `name` in exactly `slot` (another process chose it). False when the slot holds another
/// name here.
pub fn intern_at(slot: u32, name: &str) -> bool {
    let n = crate::config::normalize_name(name);
    let Some(cell) = TABLE.get(slot as usize) else { return false };
    let fresh = Box::into_raw(Box::new(n.clone()));
    match cell.compare_exchange(std::ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => true,
        Err(cur) => {
            // SAFETY: `fresh` was never published; `cur` is published and never freed.
            unsafe {
                drop(Box::from_raw(fresh));
                *cur == n
            }
        }
    }
}

/// The name in `slot`, if one was interned there.
pub fn name(slot: u32) -> Option<&'static str> {
    let p = TABLE.get(slot as usize)?.load(Ordering::Acquire);
    // SAFETY: published pointers are valid for the life of the process (never freed).
    (!p.is_null()).then(|| unsafe { (*p).as_str() })
}

pub fn v4(slot: u32) -> Ipv4Addr {
    let n = slot + 1;
    Ipv4Addr::new(240, 0, (n >> 8) as u8, n as u8)
}

pub fn v6(slot: u32) -> Ipv6Addr {
    Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, ((slot + 1) >> 16) as u16, (slot + 1) as u16)
}

/// The slot a placeholder address stands for.
pub fn slot_of(ip: &IpAddr) -> Option<u32> {
    let n = match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            if o[0] != 240 || o[1] != 0 {
                return None;
            }
            (o[2] as u32) << 8 | o[3] as u32
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            if s[..6] != [0x100, 0, 0, 0, 0, 0] {
                return None;
            }
            (s[6] as u32) << 16 | s[7] as u32
        }
    };
    (1..=SLOTS as u32).contains(&n).then(|| n - 1)
}

pub fn is_placeholder(ip: &IpAddr) -> bool {
    slot_of(ip).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intern_is_stable_and_reversible() {
        let a = intern("peer-1").unwrap();
        assert_eq!(intern("PEER-1.").unwrap(), a);
        assert_eq!(name(a), Some("peer-1"));
        let b = intern("peer-2.tail1234.ts.net").unwrap();
        assert_ne!(a, b);
        assert_eq!(slot_of(&IpAddr::V4(v4(a))), Some(a));
        assert_eq!(slot_of(&IpAddr::V6(v6(b))), Some(b));
        assert!(v4(a).octets()[0] == 240);
        assert_eq!(v6(b).segments()[0], 0x100);
    }

    #[test]
    fn concurrent_interning_agrees() {
        let names: Vec<String> = (0..200).map(|i| format!("host-{i}")).collect();
        let results: Vec<Vec<u32>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8).map(|_| s.spawn(|| names.iter().map(|n| intern(n).unwrap()).collect())).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in &results[1..] {
            assert_eq!(r, &results[0]);
        }
        let mut uniq = results[0].clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), 200);
        for (n, s) in names.iter().zip(&results[0]) {
            assert_eq!(name(*s), Some(n.as_str()));
        }
    }

    #[test]
    fn not_placeholders() {
        for ip in ["240.1.0.1", "241.0.0.1", "100.64.0.1", "0.0.0.0", "::1", "100::1:0:0:1", "fd7a:115c:a1e0::1", "240.0.0.0"] {
            assert!(!is_placeholder(&ip.parse().unwrap()), "{ip}");
        }
        assert_eq!(intern(""), None);
        assert_eq!(intern(&"a".repeat(256)), None);
    }
}

//! Placeholder addresses for tailnet names, and the rules that decide what may be one.
//!
//! A tailnet name never reaches the system resolver. `getaddrinfo("peer")` answers with a
//! placeholder, `240.0.x.y` (from 240.0.0.0/4, reserved, routed nowhere) or `100::x:y` (from
//! 100::/64, the IPv6 discard-only prefix), and `connect()` to a placeholder sends the *name* to
//! the proxy (SOCKS5 ATYP 3), so tailscaled resolves it with MagicDNS.
//!
//! # The table
//!
//! A name's slot is a hash of the name into 2^24 - 1 slots (so every process computes the same
//! slot for it, and two names collide rarely); on a collision the next slot is tried. The
//! placeholder of slot `s` is `240.0.0.0 + s + 1` (inside 240.0.0.0/8) and `100::` + `s + 1`.
//! Which name a slot holds is decided once for every process of the user by the per-user
//! [`registry`](crate::registry) (a shared, user-private file): the first process to give a
//! slot a name wins, and every other process that meets that placeholder — resolved there or
//! not — reads the name from it. Without a registry a process decides alone (still by hash, so
//! usually the same). Each process also keeps the names it has met in a local table: lock-free
//! (a fixed array of atomic pointers, filled by compare-and-swap, never emptied), so it is safe
//! from any thread, in a forked child (no lock can be inherited held, no lazy initialisation can
//! be half done) and in a signal handler that only reads.
//!
//! # Exhaustion never leaks
//!
//! The local table holds at most [`MAX_NAMES`] names (7/8 of its [`CAPACITY`] entries, so
//! linear probing always ends quickly); past that, [`try_intern`] returns
//! [`InternError::Full`]. It never evicts: a slot, once given out, means its name for the life
//! of the process (and of the registry), because a placeholder address the application already
//! holds (in a connection pool, a cache, another process) must never start meaning another name
//! — that would send the application's bytes to the wrong host. A full table is therefore a
//! *temporary resolver failure* for new names: callers answer `EAI_AGAIN` (`getaddrinfo`),
//! `TRY_AGAIN` (`gethostbyname`) or SERVFAIL (the supervisor's DNS responder), and never hand
//! the name to the system resolver, which would leak it.
//!
//! # What may be a name
//!
//! Only a host name in the RFC 1123 form ([`is_host_name`]) is ever interned, so nothing that
//! could break a SOCKS5 request or an HTTP request line (CR, LF, NUL, spaces, `@`, `/`...) can
//! reach a proxy, and nothing that glibc would read as an address ([`is_address_literal`], which
//! follows glibc's `inet_aton` grammar: `127.1`, `0x7f000001`, `2130706433`) is mistaken for a
//! name.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// Number of slots, and so of distinct placeholder addresses: slot `s` is `240.0.0.0 + s + 1`,
/// which keeps every placeholder inside 240.0.0.0/8 (and `100::` + `s + 1` in IPv6).
pub const SLOTS: u32 = (1 << 24) - 1;

/// Entries of this process's table of names.
pub const CAPACITY: usize = 65536;

/// Most names one process can hold. Below [`CAPACITY`] on purpose: a table kept at most 7/8
/// full keeps every probe sequence short, so lookups stay cheap even on its last name.
pub const MAX_NAMES: usize = CAPACITY / 8 * 7;

/// How many slots after a name's hash are tried before giving up (collisions are rare: this
/// bound only matters for a registry filled by another process on purpose).
const SLOT_TRIES: u32 = 64;

/// Longest host name (RFC 1035 §2.3.4: 255 octets on the wire, 253 characters written out
/// without the trailing dot).
pub const MAX_NAME_LEN: usize = 253;

/// A name and its slot, as kept in the local table.
struct Entry {
    slot: u32,
    name: String,
}

static TABLE: [AtomicPtr<Entry>; CAPACITY] = [const { AtomicPtr::new(std::ptr::null_mut()) }; CAPACITY];

/// Names published or about to be (a reservation taken before the compare-and-swap).
static USED: AtomicUsize = AtomicUsize::new(0);

/// Why a name got no placeholder. Each one tells the caller what to say (and log): the name is
/// never given to the system resolver in any of these cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InternError {
    /// Longer than [`MAX_NAME_LEN`] (after removing one trailing dot).
    TooLong,
    /// Not an RFC 1123 host name (empty, a label too long, a byte outside letters, digits and
    /// hyphens, a hyphen at a label's edge).
    Invalid,
    /// [`MAX_NAMES`] names are already in the table: answer "try again" (`EAI_AGAIN`).
    Full,
}

impl std::fmt::Display for InternError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InternError::TooLong => "name too long",
            InternError::Invalid => "not a valid host name",
            InternError::Full => "name table full",
        })
    }
}

impl std::error::Error for InternError {}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

/// Take one of the [`MAX_NAMES`] places. False when none is left.
fn reserve() -> bool {
    if USED.fetch_add(1, Ordering::AcqRel) >= MAX_NAMES {
        USED.fetch_sub(1, Ordering::AcqRel);
        return false;
    }
    true
}

fn unreserve() {
    USED.fetch_sub(1, Ordering::AcqRel);
}

/// Normalize `name` (lower case, one trailing dot removed) and check that it may be interned.
fn checked(name: &str) -> Result<String, InternError> {
    let n = crate::config::normalize_name(name);
    if n.len() > MAX_NAME_LEN {
        return Err(InternError::TooLong);
    }
    // `n` already lost its one trailing dot: a second one ("x..") is an empty label.
    if n.ends_with('.') || !is_host_name(&n) {
        return Err(InternError::Invalid);
    }
    Ok(n)
}

fn index(slot: u32) -> usize {
    (slot.wrapping_mul(0x9E37_79B1) >> 16) as usize % CAPACITY
}

/// The local table's name for `slot`.
fn local(slot: u32) -> Option<&'static str> {
    let i0 = index(slot);
    for k in 0..CAPACITY {
        let p = TABLE[(i0 + k) % CAPACITY].load(Ordering::Acquire);
        if p.is_null() {
            return None;
        }
        // SAFETY: published pointers come from Box::into_raw and are never freed.
        let e = unsafe { &*p };
        if e.slot == slot {
            return Some(e.name.as_str());
        }
    }
    None
}

/// Put `slot` = `n` in the local table. Ok(true): it is there now (or was); Ok(false): the
/// slot already holds another name here; Err: the table is full.
fn publish(slot: u32, n: &str) -> Result<bool, InternError> {
    let i0 = index(slot);
    let mut fresh: *mut Entry = std::ptr::null_mut();
    let mut result = Err(InternError::Full);
    for k in 0..CAPACITY {
        let cell = &TABLE[(i0 + k) % CAPACITY];
        let mut cur = cell.load(Ordering::Acquire);
        if cur.is_null() {
            if fresh.is_null() {
                if !reserve() {
                    break;
                }
                fresh = Box::into_raw(Box::new(Entry { slot, name: n.to_owned() }));
            }
            match cell.compare_exchange(std::ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(true),
                Err(other) => cur = other,
            }
        }
        // SAFETY: published pointers come from Box::into_raw and are never freed.
        let e = unsafe { &*cur };
        if e.slot == slot {
            result = Ok(e.name == n);
            break;
        }
    }
    if !fresh.is_null() {
        unreserve();
        // SAFETY: `fresh` was never published; we still own it.
        drop(unsafe { Box::from_raw(fresh) });
    }
    result
}

/// The slot of `name` (normalized: lower case, no trailing dot), adding it if new — in this
/// process and in the user's registry, so other processes read the same meaning.
///
/// Callers must map every error to a failed lookup (`EAI_AGAIN` for [`InternError::Full`],
/// `EAI_NONAME` otherwise) and never fall back to the system resolver: see the module docs.
pub fn try_intern(name: &str) -> Result<u32, InternError> {
    let n = checked(name)?;
    let h = (fnv1a(&n) % SLOTS as u64) as u32;
    for k in 0..SLOT_TRIES {
        let slot = (h + k) % SLOTS;
        match local(slot) {
            Some(m) if m == n => return Ok(slot),
            Some(_) => continue,
            None => {}
        }
        match crate::registry::claim(slot, &n) {
            crate::registry::Claim::Ours | crate::registry::Claim::Unavailable => {}
            crate::registry::Claim::Taken(other) => {
                // Remember it: a placeholder of that slot reaching us means `other`.
                let _ = publish(slot, &other);
                continue;
            }
            crate::registry::Claim::Unknown => continue,
        }
        match publish(slot, &n)? {
            true => return Ok(slot),
            false => continue,
        }
    }
    Err(InternError::Full)
}

/// Put `name` in exactly `slot` (the supervisor, another process, chose it), so both processes
/// agree on its placeholder. False when the slot holds another name here or in the registry,
/// the name may not be interned, or the table is full.
pub fn intern_at(slot: u32, name: &str) -> bool {
    let Ok(n) = checked(name) else { return false };
    if slot >= SLOTS {
        return false;
    }
    if let Some(m) = local(slot) {
        return m == n;
    }
    match crate::registry::claim(slot, &n) {
        crate::registry::Claim::Taken(other) => {
            let _ = publish(slot, &other);
            false
        }
        crate::registry::Claim::Unknown => false,
        crate::registry::Claim::Ours | crate::registry::Claim::Unavailable => publish(slot, &n) == Ok(true),
    }
}

/// How many names this process holds (for diagnostics: how close to [`MAX_NAMES`]).
pub fn used() -> usize {
    USED.load(Ordering::Acquire).min(MAX_NAMES)
}

/// The name in `slot`, if one was given to it, here or by any process of this user: what
/// `connect()` to its placeholder asks the proxy for.
pub fn name(slot: u32) -> Option<&'static str> {
    if slot >= SLOTS {
        return None;
    }
    if let Some(n) = local(slot) {
        return Some(n);
    }
    let n = crate::registry::find(slot)?;
    let n = checked(&n).ok()?;
    let _ = publish(slot, &n);
    local(slot)
}

/// The IPv4 placeholder of `slot` (`240.x.y.z`), what `getaddrinfo` answers for AF_INET.
pub fn v4(slot: u32) -> Ipv4Addr {
    Ipv4Addr::from(0xf000_0000 | (slot + 1))
}

/// The IPv6 placeholder of `slot` (`100::x:y`), what `getaddrinfo` answers for AF_INET6.
pub fn v6(slot: u32) -> Ipv6Addr {
    Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, ((slot + 1) >> 16) as u16, (slot + 1) as u16)
}

/// The slot a placeholder address stands for (None: not a placeholder).
pub fn slot_of(ip: &IpAddr) -> Option<u32> {
    let n = match ip {
        IpAddr::V4(a) => {
            let v = u32::from(*a);
            if v >> 24 != 240 {
                return None;
            }
            v & 0x00ff_ffff
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            if s[..6] != [0x100, 0, 0, 0, 0, 0] {
                return None;
            }
            (s[6] as u32) << 16 | s[7] as u32
        }
    };
    (1..=SLOTS).contains(&n).then(|| n - 1)
}

/// Is `ip` one of our placeholders? (Such a destination is always proxied, by name.)
pub fn is_placeholder(ip: &IpAddr) -> bool {
    slot_of(ip).is_some()
}

/// Is `n` a host name in the RFC 1123 §2.1 form: dot-separated labels of 1 to 63 letters,
/// digits and hyphens, no hyphen first or last in a label, at most [`MAX_NAME_LEN`] characters
/// (one trailing dot allowed on top)?
///
/// Only such names may be tailnet names: MagicDNS names are of this form, and everything else
/// (CR, LF, NUL, spaces, `@`, `:`, `/`, `%`, `_`, non-ASCII) could smuggle a second request line
/// or header into an HTTP CONNECT request, or is simply not a name tailscaled would resolve.
pub fn is_host_name(n: &str) -> bool {
    let n = n.strip_suffix('.').unwrap_or(n);
    if n.is_empty() || n.len() > MAX_NAME_LEN {
        return false;
    }
    n.split('.').all(|l| {
        let b = l.as_bytes();
        (1..=63).contains(&b.len()) && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-') && b[0] != b'-' && b[b.len() - 1] != b'-'
    })
}

/// Does glibc read `s` as an address rather than a name? True for every string glibc's
/// `inet_aton` accepts ([`inet_aton`]: `0`, `2130706433`, `0x7f000001`, `127.1`, `0177.0.0.1`,
/// `1.2.3`, even `1.2.3.4 trailing`), every IPv6 literal, and IPv6 literals with a `%scope`
/// suffix. Such strings are addresses: never tailnet names, never placeholders.
pub fn is_address_literal(s: &str) -> bool {
    if inet_aton(s).is_some() || s.parse::<IpAddr>().is_ok() {
        return true;
    }
    match s.split_once('%') {
        Some((a, scope)) => !scope.is_empty() && a.parse::<Ipv6Addr>().is_ok(),
        None => false,
    }
}

/// glibc's `inet_aton` (resolv/inet_addr.c), in pure Rust: 1 to 4 parts separated by dots, each
/// a C integer constant (`0x`/`0X` hex, leading `0` octal, else decimal) that starts with a
/// digit (no sign, no leading space); the parts before the last are bytes, the last fills the
/// remaining bytes (`a.b.c`: c is 16 bits; `a.b`: b is 24 bits; `a`: 32 bits). The first
/// character after the last part must be the end of the string or an ASCII space character
/// (space, `\t`, `\n`, `\v`, `\f`, `\r`), after which glibc ignores everything ("trailing
/// garbage"). `getaddrinfo` uses the stricter [`inet_aton_exact`].
pub fn inet_aton(s: &str) -> Option<Ipv4Addr> {
    inet_aton_end(s.as_bytes()).map(|(a, _)| a)
}

/// glibc's `__inet_aton_exact`, which `getaddrinfo` and `gethostbyname` use since glibc 2.32:
/// [`inet_aton`] without the trailing part.
pub fn inet_aton_exact(s: &str) -> Option<Ipv4Addr> {
    inet_aton_end(s.as_bytes()).and_then(|(a, end)| (end == s.len()).then_some(a))
}

/// The address and the offset of the first byte not converted.
fn inet_aton_end(s: &[u8]) -> Option<(Ipv4Addr, usize)> {
    const MAX: [u64; 4] = [0xffff_ffff, 0xff_ffff, 0xffff, 0xff];
    let mut bytes = [0u8; 4];
    let mut parts = 0;
    let mut i = 0;
    let val = loop {
        if !s.get(i).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        let (v, len) = strtoul0(&s[i..])?;
        i += len;
        if s.get(i) == Some(&b'.') {
            if parts > 2 || v > 0xff {
                return None;
            }
            bytes[parts] = v as u8;
            parts += 1;
            i += 1;
        } else {
            break v;
        }
    };
    // Like C's isspace in the C locale (Rust's is_ascii_whitespace leaves out \v).
    if let Some(&c) = s.get(i) {
        if !matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
            return None;
        }
    }
    if val > MAX[parts] {
        return None;
    }
    let word = u32::from_be_bytes(bytes) | val as u32;
    Some((Ipv4Addr::from(word), i))
}

/// `strtoul(s, &end, 0)` for a string that starts with a digit: the value (None when it does
/// not fit in 32 bits, which glibc rejects too) and the number of bytes consumed.
fn strtoul0(s: &[u8]) -> Option<(u64, usize)> {
    let (radix, mut i) = match s {
        [b'0', b'x' | b'X', c, ..] if c.is_ascii_hexdigit() => (16, 2),
        [b'0', ..] => (8, 1),
        _ => (10, 0),
    };
    let mut v: u64 = 0;
    let mut big = false;
    while let Some(d) = s.get(i).and_then(|c| (*c as char).to_digit(radix)) {
        v = v * radix as u64 + d as u64;
        big |= v > 0xffff_ffff;
        if big {
            v = 0x1_0000_0000; // keep consuming digits, as strtoul does, without overflow
        }
        i += 1;
    }
    (!big).then_some((v, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intern_is_stable_and_reversible() {
        let a = try_intern("peer-1").unwrap();
        assert_eq!(try_intern("PEER-1.").unwrap(), a);
        assert_eq!(name(a), Some("peer-1"));
        let b = try_intern("peer-2.tail1234.ts.net").unwrap();
        assert_ne!(a, b);
        assert_eq!(slot_of(&IpAddr::V4(v4(a))), Some(a));
        assert_eq!(slot_of(&IpAddr::V6(v6(b))), Some(b));
        assert!(v4(a).octets()[0] == 240);
        assert_eq!(a, (fnv1a("peer-1") % SLOTS as u64) as u32, "the slot is the name's hash");
        assert_eq!(v6(b).segments()[0], 0x100);
    }

    #[test]
    fn concurrent_interning_agrees() {
        let names: Vec<String> = (0..200).map(|i| format!("host-{i}")).collect();
        let results: Vec<Vec<u32>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8).map(|_| s.spawn(|| names.iter().map(|n| try_intern(n).unwrap()).collect())).collect();
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
        for ip in ["239.255.255.255", "241.0.0.1", "100.64.0.1", "0.0.0.0", "::1", "100::1:0:0:1", "fd7a:115c:a1e0::1", "240.0.0.0", "100::1:0:0", "100::100:0"]
        {
            assert!(!is_placeholder(&ip.parse().unwrap()), "{ip}");
        }
        assert!(is_placeholder(&"240.255.255.255".parse().unwrap()));
        assert_eq!(slot_of(&"240.255.255.255".parse().unwrap()), Some(SLOTS - 1));
        assert_eq!(slot_of(&"240.0.0.1".parse().unwrap()), Some(0));
        assert_eq!(slot_of(&IpAddr::V6(v6(SLOTS - 1))), Some(SLOTS - 1));
        assert_eq!(v4(SLOTS - 1), "240.255.255.255".parse::<Ipv4Addr>().unwrap());
    }

    #[test]
    fn intern_refuses_what_is_not_a_host_name() {
        assert_eq!(try_intern(""), Err(InternError::Invalid));
        assert_eq!(try_intern("."), Err(InternError::Invalid));
        assert_eq!(try_intern("x.."), Err(InternError::Invalid));
        assert_eq!(try_intern(&"a".repeat(254)), Err(InternError::TooLong));
        assert_eq!(try_intern(&format!("{}.", "a.".repeat(126) + "b")), Ok(try_intern(&("a.".repeat(126) + "b")).unwrap()));
        for bad in ["peer\r\nX-Evil: 1", "peer\0", "pe er", "peer:80", "a@b", "a/b", "-peer", "peer-", "a..b", "_srv", "pe%er", "é", &"a".repeat(64)] {
            assert_eq!(try_intern(bad), Err(InternError::Invalid), "{bad:?}");
            assert!(!intern_at(7, bad), "{bad:?}");
        }
        assert_eq!(InternError::TooLong.to_string(), "name too long");
        assert_eq!(InternError::Full.to_string(), "name table full");
    }

    #[test]
    fn intern_at_agrees_with_the_table() {
        let s = try_intern("at-peer").unwrap();
        assert!(intern_at(s, "AT-PEER."));
        assert!(!intern_at(s, "other-peer"));
        let free = (0..SLOTS).rev().find(|&i| name(i).is_none()).unwrap();
        assert!(intern_at(free, "placed-peer"));
        assert_eq!(name(free), Some("placed-peer"));
        assert!(!intern_at(SLOTS, "x"));
        assert!(used() >= 2);
    }

    #[test]
    fn host_names() {
        for ok in ["a", "peer-1", "PEER", "peer.", "x.tail1234.ts.net", "1a", "a-b-c", &"a".repeat(63), "0x", "08", "1.2.3.4.5"] {
            assert!(is_host_name(ok), "{ok:?}");
        }
        let max = ["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)].join(".");
        assert_eq!(max.len(), 253);
        assert!(is_host_name(&max));
        assert!(is_host_name(&format!("{max}.")));
        assert!(!is_host_name(&format!("{max}e")));
        for bad in ["", ".", "..", "a..b", ".a", "a.-b", "a-.b", "a_b", "a b", "a\tb", "a\nb", "a\rb", "a\0b", "a.b..", "ü", &"a".repeat(64), "a:b", "[::1]"] {
            assert!(!is_host_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn inet_aton_grammar() {
        let ok: &[(&str, [u8; 4])] = &[
            ("0", [0, 0, 0, 0]),
            ("2130706433", [127, 0, 0, 1]),
            ("0x7f000001", [127, 0, 0, 1]),
            ("0X7F000001", [127, 0, 0, 1]),
            ("017700000001", [127, 0, 0, 1]),
            ("127.1", [127, 0, 0, 1]),
            ("127.0.1", [127, 0, 0, 1]),
            ("0177.0.0.1", [127, 0, 0, 1]),
            ("1.2.3", [1, 2, 0, 3]),
            ("1.2.65535", [1, 2, 255, 255]),
            ("1.16777215", [1, 255, 255, 255]),
            ("0xff.0x0.00.0377", [255, 0, 0, 255]),
            ("4294967295", [255, 255, 255, 255]),
            ("1.2.3.4", [1, 2, 3, 4]),
            ("00", [0, 0, 0, 0]),
            ("0x0", [0, 0, 0, 0]),
        ];
        for (s, b) in ok {
            assert_eq!(inet_aton(s), Some(Ipv4Addr::from(*b)), "{s:?}");
            assert_eq!(inet_aton_exact(s), Some(Ipv4Addr::from(*b)), "{s:?}");
        }
        // Trailing garbage after an ASCII space character: inet_aton yes, exact no.
        for s in ["1.2.3.4 x", "127.1\tfoo", "1\n", "0x10\x0b", "5\x0c", "9\r\n"] {
            assert!(inet_aton(s).is_some(), "{s:?}");
            assert!(inet_aton_exact(s).is_none(), "{s:?}");
        }
        for s in [
            "",
            " 1",
            "+1",
            "-1",
            "1.",
            "1..2",
            ".1",
            "1.2.3.4.",
            "1.2.3.4.5",
            "256.1",
            "1.256.1",
            "1.2.256.1",
            "1.2.65536",
            "1.16777216",
            "4294967296",
            "99999999999999999999999",
            "0x",
            "0xg",
            "08",
            "09",
            "0x1g",
            "1a",
            "a",
            "1.2.3.4x",
            "1,2",
            "1.2.3.4\0",
            "1.2.3.4\u{a0}",
            "0x100000000",
            "1.0x",
            "peer",
        ] {
            assert_eq!(inet_aton(s), None, "{s:?}");
        }
    }

    #[test]
    fn address_literals() {
        for s in ["0", "127.1", "0x7f000001", "::1", "fd7a:115c:a1e0::1", "fe80::1%eth0", "fe80::1%2", "::ffff:1.2.3.4", "1.2.3.4 x"] {
            assert!(is_address_literal(s), "{s:?}");
        }
        for s in ["peer", "fe80::1%", "peer%eth0", "0x", "08", "1.2.3.4.5", "[::1]"] {
            assert!(!is_address_literal(s), "{s:?}");
        }
    }
}

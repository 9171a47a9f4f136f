//! `names::inet_aton` against glibc's own `inet_aton`, and `names::inet_aton_exact` against
//! `getaddrinfo(AI_NUMERICHOST)` (which uses glibc's `__inet_aton_exact`).
use proptest::prelude::*;
use std::ffi::CString;
use std::net::Ipv4Addr;
use tsproxy_core::names;

extern "C" {
    fn inet_aton(cp: *const libc::c_char, inp: *mut libc::in_addr) -> libc::c_int;
}

fn glibc_aton(s: &str) -> Option<Ipv4Addr> {
    let c = CString::new(s).ok()?;
    let mut a = libc::in_addr { s_addr: 0 };
    // SAFETY: c is a NUL-terminated string, a a valid in_addr.
    (unsafe { inet_aton(c.as_ptr(), &mut a) } != 0).then(|| Ipv4Addr::from(u32::from_be(a.s_addr)))
}

fn glibc_numeric_host(s: &str) -> Option<Ipv4Addr> {
    let c = CString::new(s).ok()?;
    // SAFETY: zeroed addrinfo is a valid hints value.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_family = libc::AF_INET;
    hints.ai_flags = libc::AI_NUMERICHOST;
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    // SAFETY: valid pointers; the result is freed below.
    let rc = unsafe { libc::getaddrinfo(c.as_ptr(), std::ptr::null(), &hints, &mut res) };
    if rc != 0 {
        return None;
    }
    // SAFETY: getaddrinfo succeeded: res points to a list whose first entry is AF_INET.
    let ip = unsafe {
        let sin = (*res).ai_addr as *const libc::sockaddr_in;
        let ip = Ipv4Addr::from(u32::from_be((*sin).sin_addr.s_addr));
        libc::freeaddrinfo(res);
        ip
    };
    Some(ip)
}

const SAMPLES: &[&str] = &[
    "0",
    "00",
    "08",
    "0x",
    "0x0",
    "0xg",
    "2130706433",
    "0x7f000001",
    "017700000001",
    "127.1",
    "127.0.1",
    "0177.0.0.1",
    "1.2.3",
    "1.2.65535",
    "1.2.65536",
    "1.16777215",
    "1.16777216",
    "4294967295",
    "4294967296",
    "99999999999999999999999",
    "1.2.3.4",
    "1.2.3.4.",
    "1.2.3.4.5",
    "1.",
    ".1",
    "1..2",
    " 1",
    "+1",
    "-1",
    "1.2.3.4 x",
    "1.2.3.4\t",
    "1\n",
    "1\x0b",
    "1\x0c",
    "1\r",
    "1.2.3.4x",
    "256.1",
    "0xff.0x0.00.0377",
    "0X1",
    "1e3",
    "peer",
    "",
    "1.0x",
    "0x.1",
];

#[test]
fn samples_agree_with_glibc() {
    for s in SAMPLES {
        assert_eq!(names::inet_aton(s), glibc_aton(s), "inet_aton({s:?})");
        assert_eq!(names::inet_aton_exact(s), glibc_numeric_host(s), "exact({s:?})");
    }
}

fn fuzz_cases() -> u32 {
    std::env::var("TSPROXY_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

macro_rules! glibc_props {
    ($cases:expr, $($attr:meta),* ; $random:ident, $dotted:ident) => {
        proptest! {
    #![proptest_config(ProptestConfig { cases: $cases, .. ProptestConfig::default() })]

    $(#[$attr])*
    #[test]
    fn $random(s in "[0-9xXa-fA-F. \t\n+-]{0,20}") {
        prop_assert_eq!(names::inet_aton(&s), glibc_aton(&s), "inet_aton({:?})", s);
        prop_assert_eq!(names::inet_aton_exact(&s), glibc_numeric_host(&s), "exact({:?})", s);
    }

    $(#[$attr])*
    #[test]
    fn $dotted(parts in proptest::collection::vec((0u64..0x1_0000_0001, 0usize..3), 1..6), tail in "( [a-z]{0,3})?") {
        let s = parts.iter().map(|(v, f)| match f { 0 => format!("{v}"), 1 => format!("0{v:o}"), _ => format!("0x{v:x}") }).collect::<Vec<_>>().join(".") + &tail;
        prop_assert_eq!(names::inet_aton(&s), glibc_aton(&s), "inet_aton({:?})", s);
        prop_assert_eq!(names::inet_aton_exact(&s), glibc_numeric_host(&s), "exact({:?})", s);
    }
}
    };
}

glibc_props!(5000, ; random_strings_agree_with_glibc, dotted_numbers_agree_with_glibc);
// The same, long: `make fuzz` (see tests/fuzz.rs).
glibc_props!(fuzz_cases(), ignore ; fuzz_random_strings_agree_with_glibc, fuzz_dotted_numbers_agree_with_glibc);

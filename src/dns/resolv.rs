//! The libresolv query API — `res_query`, `res_search`, `res_querydomain`, their `res_n*` forms
//! (the caller's resolver state) and `res_send`/`res_nsend` (a query the caller built) — for
//! tailnet names. glibc runs these without `getaddrinfo` (its internal calls never reach our
//! hooks), so each is answered here: a tailnet name never goes to the system resolver.
//!
//! The answer is a DNS response synthesized from the placeholders `getaddrinfo` gives (core's
//! `dns::answer_placeholder`): A gets the IPv4 placeholder, AAAA the IPv6 one, any other type or
//! class NOERROR without data — the name exists, with no record of that kind. It is judged as
//! glibc judges a server's response: `res_query` returns its length, or -1 with `h_errno`
//! `NO_DATA` when it has no answer (the response is still in the buffer); `res_search` leaves
//! `HOST_NOT_FOUND` in `h_errno` after a success, as glibc's search does; `h_errno` is also
//! written to the resolver state (`statp->res_h_errno`, `_res` for the non-`n` forms), as
//! glibc's `RES_SET_H_ERRNO` does. A tailnet name without a placeholder (the name table is full)
//! fails with `TRY_AGAIN`, like a server failure: it is still never asked.
//!
//! The buffer is filled as glibc's UDP path fills it: the first `anslen` bytes and never one
//! more, the length returned being what was written; under a header (12 bytes) -1 with `EINVAL`
//! and `TRY_AGAIN`, before anything is written; a buffer too short for the question gets its
//! `anslen` bytes and `errno` `EMSGSIZE` (glibc's question check fails that way on it).
//!
//! Not only host names. glibc sends the name as `ns_name_pton` reads it, so the question it
//! would send is judged, by the rule the sends to port 53 are refused by
//! (`route::tailnet_question`): an escaped spelling of a tailnet host name is that name; an SRV
//! or TXT lookup under a tailnet domain, and a `res_send` message asking a tailnet name in any
//! question or under any opcode, get SERVFAIL (what the supervisor's responder answers them).
//!
//! Search lists. `res_search("peer-1")` with `search corp.example` would send
//! `peer-1.corp.example`, then `peer-1`: a tailnet name is answered as it is, with no search,
//! exactly as `getaddrinfo` answers it. A name that is *not* a tailnet name may still become one
//! through the search list (`db.prod` with `search corp.example` and
//! `TSPROXY_DOMAINS=corp.example`): then tsproxy runs glibc's search itself (same order, same
//! stop rules, `resolv/res_query.c`), asking glibc (`res_nquery`, which never searches) for each
//! candidate that is not a tailnet name and answering the others. When no candidate is a tailnet
//! name the call goes to glibc untouched. `res_querydomain` checks the name it composes.
use super::tailnet_slot;
use crate::boundary::{passed, Bypass, Detour};
use crate::state;
use libc::{c_char, c_int, c_uchar, c_void};
use std::ffi::CStr;
use tsproxy_core::dns as msg;
use tsproxy_core::Errno;

/// glibc's `struct __res_state` (`resolv/bits/types/res_state.h`), the fields read or written
/// here, by offset for LP64 (x86_64, aarch64). It is public ABI, unchanged since glibc 2.2 (the
/// c-harness test reads `res_h_errno` back through glibc's own header).
mod rs {
    /// `unsigned long options`.
    pub const OPTIONS: usize = 8;
    /// `char *dnsrch[MAXDNSRCH + 1]`, NULL-terminated.
    pub const DNSRCH: usize = 72;
    /// `unsigned ndots:4` (the low bits of the word after `pfcode`, little-endian).
    pub const NDOTS: usize = 392;
    /// `int res_h_errno`.
    pub const RES_H_ERRNO: usize = 496;
    pub const MAXDNSRCH: usize = 6;
    pub const RES_INIT: u64 = 0x1;
    pub const RES_DEFNAMES: u64 = 0x80;
    pub const RES_DNSRCH: u64 = 0x200;
    pub const RES_NOTLDQUERY: u64 = 0x0100_0000;
}
const _: () = assert!(std::mem::size_of::<usize>() == 8, "struct __res_state offsets are for LP64");

// netdb.h
const HOST_NOT_FOUND: c_int = 1;
const TRY_AGAIN: c_int = 2;
const NO_RECOVERY: c_int = 3;
const NO_DATA: c_int = 4;
/// arpa/nameser.h: longest presentation name glibc composes (`MAXDNAME`).
const MAXDNAME: usize = 1025;
const HFIXEDSZ: usize = 12;
const SERVFAIL: u8 = 2;

extern "C" {
    fn pthread_setcancelstate(state: c_int, old: *mut c_int) -> c_int;
    fn __h_errno_location() -> *mut c_int;
    /// This thread's `_res`.
    fn __res_state() -> *mut c_void;
    /// `res_init` (resolv.h defines it to this name).
    fn __res_init() -> c_int;
}

/// A resolver state: the caller's (`res_n*`) or this thread's `_res`.
#[derive(Clone, Copy)]
pub struct Statp(*mut u8);

impl Statp {
    /// # Safety
    /// `p` is null or a `struct __res_state` the caller passed (or glibc's `_res`).
    pub unsafe fn of(p: *mut c_void) -> Statp {
        Statp(p.cast())
    }

    /// This thread's `_res`.
    pub fn thread() -> Statp {
        // SAFETY: glibc returns this thread's resolver state, valid for the thread's life.
        Statp(unsafe { __res_state() }.cast())
    }

    fn options(self) -> u64 {
        // SAFETY: a valid __res_state (see `of`); unaligned-safe read of `options`.
        unsafe { std::ptr::read_unaligned(self.0.add(rs::OPTIONS).cast::<u64>()) }
    }

    fn ndots(self) -> usize {
        // SAFETY: as above.
        (unsafe { *self.0.add(rs::NDOTS) } & 0xf) as usize
    }

    fn res_h_errno(self) -> c_int {
        // SAFETY: as above.
        unsafe { std::ptr::read_unaligned(self.0.add(rs::RES_H_ERRNO).cast::<c_int>()) }
    }

    /// glibc's `RES_SET_H_ERRNO`: the state's copy and the thread's `h_errno`.
    fn set_h_errno(self, v: c_int) {
        // SAFETY: as above; __h_errno_location is this thread's h_errno.
        unsafe {
            std::ptr::write_unaligned(self.0.add(rs::RES_H_ERRNO).cast::<c_int>(), v);
            *__h_errno_location() = v;
        }
    }

    /// The search list (`dnsrch`), as glibc's fallback reads it.
    fn search_list(self) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..rs::MAXDNSRCH {
            // SAFETY: dnsrch has MAXDNSRCH + 1 pointers; each non-null one is a C string that
            // res_init set (into defdname).
            let p = unsafe { std::ptr::read_unaligned(self.0.add(rs::DNSRCH + i * 8).cast::<*const c_char>()) };
            if p.is_null() {
                break;
            }
            // SAFETY: as above.
            out.push(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned());
        }
        out
    }
}

/// Is `name` a tailnet name (core's rules, as for getaddrinfo)?
fn is_tailnet(name: &str) -> bool {
    let st = state::get();
    st.routes().is_tailnet_name(name, |n| st.known_locally(n))
}

/// A query id for the messages we build (res_mkquery's are random; nothing compares them).
fn next_id() -> u16 {
    static N: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0x5a17);
    N.fetch_add(0x9e37, std::sync::atomic::Ordering::Relaxed)
}

/// The query glibc would send for `name` (its presentation form read as `ns_name_pton` reads
/// it), when a question of it is a tailnet question by the rule the sends to port 53 are
/// refused by (`route::tailnet_question`): the name, unescaped, or a name under a tailnet domain
/// that is not a host name (`_http._tcp.peer.tail1234.ts.net`, an SRV lookup).
fn tailnet_wire_query(name: &str, class: c_int, ty: c_int) -> Option<Vec<u8>> {
    let q = msg::query_presentation(next_id(), name.as_bytes(), ty as u16, class as u16)?;
    let st = state::get();
    tsproxy_core::route::tailnet_question(st.routes(), &q, |n| st.known_locally(n))?;
    Some(q)
}

/// Would glibc's query for `name` ask the system resolver about a tailnet name?
fn asks_tailnet(name: &str, class: c_int, ty: c_int) -> bool {
    is_tailnet(name) || tailnet_wire_query(name, class, ty).is_some()
}

/// tsproxy's response for `name`: None when it is not a tailnet name (glibc asks the
/// resolver), `Some(Err(()))` when it is one without a placeholder (answer "try again"), else the
/// response and the offset where its question ends.
///
/// A name whose query asks a tailnet question although the name as written is not a tailnet
/// host name is never sent either: spelled with escapes (`pe\101r-1.tail1234.ts.net`), it is
/// answered as the name it stands for; not a host name (an SRV or TXT lookup under a tailnet
/// domain), it gets SERVFAIL, as the supervisor's responder answers it ("try again").
fn synthesize(name: &str, class: c_int, ty: c_int) -> Option<Result<(Vec<u8>, usize), ()>> {
    if !is_tailnet(name) {
        let q = tailnet_wire_query(name, class, ty)?;
        if let Some(p) = msg::parse_query(&q) {
            if is_tailnet(&p.name) {
                return synthesize(&p.name, class, ty);
            }
        }
        crate::log::log!(Debug, "res_* {name:?} class {class} type {ty} -> a question for a tailnet name; SERVFAIL from tsproxy");
        let r = msg::error_response(&q, SERVFAIL)?;
        let end = q.len();
        return Some(Ok((r, end)));
    }
    let (class, ty) = (class as u16, ty as u16);
    let slot = if msg::wants_address(class, ty) {
        match tailnet_slot(name)? {
            Ok(s) => Some(s),
            Err(()) => return Some(Err(())),
        }
    } else {
        None
    };
    let Some(q) = msg::query_class(next_id(), name, ty, class) else { return Some(Err(())) };
    let Some(parsed) = msg::parse_query(&q) else { return Some(Err(())) };
    let r = msg::answer_placeholder(&q, &parsed, slot);
    crate::log::log!(Debug, "res_* {name} class {class} type {ty} -> tailnet name, answered by tsproxy");
    Some(Ok((r, parsed.end)))
}

/// Copy `r` into the caller's buffer as glibc's UDP receive does. Err(errno) when the buffer
/// cannot hold a header (nothing written). Ok((written, errno to leave)).
///
/// # Safety
/// `answer` has `anslen` writable bytes.
unsafe fn deliver(r: &[u8], qend: usize, answer: *mut c_uchar, anslen: c_int) -> Result<(c_int, Option<Errno>), Errno> {
    if answer.is_null() || anslen < HFIXEDSZ as c_int {
        return Err(Errno(libc::EINVAL));
    }
    let n = r.len().min(anslen as usize);
    // SAFETY: n <= anslen writable bytes (contract), r has n readable bytes.
    unsafe { std::ptr::copy_nonoverlapping(r.as_ptr(), answer, n) };
    Ok((n as c_int, (n < qend).then_some(Errno(libc::EMSGSIZE))))
}

/// Like `res_nquery` for a name we answer: h_errno as glibc's `__res_context_query` sets it.
///
/// # Safety
/// `answer` has `anslen` writable bytes.
unsafe fn query_answer(st: Statp, res: Result<(Vec<u8>, usize), ()>, answer: *mut c_uchar, anslen: c_int) -> Detour<c_int> {
    let Ok((r, qend)) = res else {
        st.set_h_errno(TRY_AGAIN);
        return Detour::Fail(Errno(libc::ETIMEDOUT));
    };
    // SAFETY: forwarded contract.
    match unsafe { deliver(&r, qend, answer, anslen) } {
        Err(e) => {
            st.set_h_errno(TRY_AGAIN);
            Detour::Fail(e)
        }
        Ok((n, errno)) => {
            // As glibc judges a response (the header is in the buffer: anslen >= 12): an
            // error RCODE or no answer record fails, h_errno by RCODE.
            let rcode = r.get(3).map_or(0, |b| b & 0xf);
            if rcode != 0 || r.get(6..8) == Some(&[0, 0]) {
                st.set_h_errno(match rcode {
                    0 => NO_DATA,
                    3 => HOST_NOT_FOUND,
                    SERVFAIL => TRY_AGAIN,
                    _ => NO_RECOVERY,
                });
                return match errno {
                    Some(e) => Detour::Return(-1, e),
                    None => Detour::Done(-1),
                };
            }
            match errno {
                Some(e) => Detour::Return(n, e),
                None => Detour::Done(n),
            }
        }
    }
}

fn utf8<'a>(p: *const c_char) -> Option<&'a str> {
    // SAFETY: callers pass the caller's NUL-terminated name (checked non-null).
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_str().ok()).flatten()
}

/// res_query / res_nquery.
///
/// # Safety
/// res_query(3)'s contract; `st` is the state the call uses.
pub unsafe fn query(st: Statp, name: *const c_char, class: c_int, ty: c_int, answer: *mut c_uchar, anslen: c_int) -> Detour<c_int> {
    let Some(n) = utf8(name) else { return Detour::Bypass(Bypass::NotApplicable) };
    match synthesize(n, class, ty) {
        // SAFETY: forwarded contract.
        Some(r) => unsafe { query_answer(st, r, answer, anslen) },
        None => Detour::Bypass(Bypass::NotTailnet),
    }
}

/// `name.domain` as glibc's querydomain composes it (None: too long, glibc reports it).
fn compose(name: &str, domain: Option<&str>) -> Option<String> {
    match domain {
        None => (!name.is_empty() && name.len() - 1 < MAXDNAME - 1).then(|| name.to_string()),
        Some(d) => (name.len() + d.len() + 1 < MAXDNAME).then(|| format!("{name}.{d}")),
    }
}

/// res_querydomain / res_nquerydomain: the composed name decides.
///
/// # Safety
/// res_querydomain(3)'s contract.
pub unsafe fn querydomain(
    st: Statp,
    name: *const c_char,
    domain: *const c_char,
    class: c_int,
    ty: c_int,
    answer: *mut c_uchar,
    anslen: c_int,
) -> Detour<c_int> {
    let Some(n) = utf8(name) else { return Detour::Bypass(Bypass::NotApplicable) };
    let d = if domain.is_null() {
        None
    } else {
        match utf8(domain) {
            Some(d) => Some(d),
            None => return Detour::Bypass(Bypass::NotApplicable),
        }
    };
    let Some(full) = compose(n, d) else { return Detour::Bypass(Bypass::NotApplicable) };
    match synthesize(&full, class, ty) {
        // SAFETY: forwarded contract.
        Some(r) => unsafe { query_answer(st, r, answer, anslen) },
        None => Detour::Bypass(Bypass::NotTailnet),
    }
}

/// res_search / res_nsearch. `init`: the non-`n` form, whose state glibc initializes on first
/// use (res_nsearch on an uninitialized state is glibc's error to report).
///
/// # Safety
/// res_search(3)'s contract; `real_nquery` is glibc's res_nquery.
#[allow(clippy::too_many_arguments)]
pub unsafe fn search(
    st: Statp,
    init: bool,
    name: *const c_char,
    class: c_int,
    ty: c_int,
    answer: *mut c_uchar,
    anslen: c_int,
    real_nquery: unsafe extern "C-unwind" fn(*mut c_void, *const c_char, c_int, c_int, *mut c_uchar, c_int) -> c_int,
) -> Detour<c_int> {
    let Some(n) = utf8(name) else { return Detour::Bypass(Bypass::NotApplicable) };
    if let Some(r) = synthesize(n, class, ty) {
        // The name itself: answered, no search (as getaddrinfo answers it). glibc's search
        // starts with errno 0 and HOST_NOT_FOUND, which a success leaves in place (errno 0 is
        // set by the boundary, from the Return below).
        st.set_h_errno(HOST_NOT_FOUND);
        // SAFETY: forwarded contract.
        return match unsafe { query_answer(st, r, answer, anslen) } {
            Detour::Done(k) => Detour::Return(k, Errno(0)),
            d => d,
        };
    }
    let dots = n.bytes().filter(|&b| b == b'.').count();
    if n.ends_with('.') || (dots == 0 && std::env::var_os("HOSTALIASES").is_some()) {
        // A trailing dot: asked as is, never searched. An alias file: glibc's alias rules.
        return Detour::Bypass(Bypass::NotTailnet);
    }
    if st.options() & rs::RES_INIT == 0 {
        // SAFETY: res_init has no preconditions; it is what glibc's res_search does first.
        if !init || unsafe { __res_init() } != 0 {
            return Detour::Bypass(Bypass::NotApplicable);
        }
    }
    let opts = st.options();
    let searches = (dots == 0 && opts & rs::RES_DEFNAMES != 0) || (dots > 0 && opts & rs::RES_DNSRCH != 0);
    let list = if searches { st.search_list() } else { Vec::new() };
    let tailnet_candidate = list.iter().any(|d| compose(n, Some(d.strip_prefix('.').unwrap_or(d))).is_some_and(|c| asks_tailnet(&c, class, ty)));
    if !tailnet_candidate {
        return Detour::Bypass(Bypass::NotTailnet);
    }
    crate::log::log!(Debug, "res_search {n}: the search list makes tailnet names of it; searching in tsproxy");
    // SAFETY: forwarded contract.
    unsafe { run_search(st, n, dots, &list, class, ty, answer, anslen, real_nquery) }
}

/// Cancellation disabled while alive (glibc's PTHREAD_CANCEL_DISABLE is 1).
struct NoCancel(c_int);

impl NoCancel {
    fn new() -> NoCancel {
        let mut old = 0;
        // SAFETY: a valid out-pointer; always succeeds for a valid state.
        unsafe { pthread_setcancelstate(1, &mut old) };
        NoCancel(old)
    }
}

impl Drop for NoCancel {
    fn drop(&mut self) {
        // SAFETY: restores the state saved by `new`.
        unsafe { pthread_setcancelstate(self.0, std::ptr::null_mut()) };
    }
}

/// glibc's `__res_context_search` (resolv/res_query.c, 2.36), candidate by candidate: tailnet
/// names answered here, the others asked of glibc's res_nquery (which does not search).
///
/// glibc's res_nquery waits for the network in cancellation points, and this runs inside the
/// boundary's `catch_unwind`, which a cancellation's forced unwind must never cross: so
/// cancellation is deferred for the search (as glibc defers it while getaddrinfo_a waits); a
/// pending cancellation acts at the thread's next cancellation point.
///
/// # Safety
/// As `search`.
#[allow(clippy::too_many_arguments)]
unsafe fn run_search(
    st: Statp,
    name: &str,
    dots: usize,
    list: &[String],
    class: c_int,
    ty: c_int,
    answer: *mut c_uchar,
    anslen: c_int,
    real_nquery: unsafe extern "C-unwind" fn(*mut c_void, *const c_char, c_int, c_int, *mut c_uchar, c_int) -> c_int,
) -> Detour<c_int> {
    let one = |cand: Option<String>| -> c_int {
        let Some(cand) = cand else {
            st.set_h_errno(NO_RECOVERY);
            return -1;
        };
        let d = match synthesize(&cand, class, ty) {
            // SAFETY: forwarded contract.
            Some(r) => unsafe { query_answer(st, r, answer, anslen) },
            None => {
                let Ok(c) = std::ffi::CString::new(cand) else { return -1 };
                // SAFETY: glibc's res_nquery with the caller's state and buffer.
                let k = unsafe { real_nquery(st.0.cast(), c.as_ptr(), class, ty, answer, anslen) };
                return k;
            }
        };
        match d {
            Detour::Done(k) => k,
            Detour::Return(k, e) => {
                tsproxy_core::sys::set_errno(e.raw());
                k
            }
            Detour::Fail(e) => {
                tsproxy_core::sys::set_errno(e.raw());
                -1
            }
            _ => -1,
        }
    };
    let _deferred = NoCancel::new();
    tsproxy_core::sys::set_errno(0);
    st.set_h_errno(HOST_NOT_FOUND);
    let opts = st.options();
    let mut saved = None;
    let (mut tried_as_is, mut searched, mut got_nodata, mut got_servfail, mut root_on_list) = (false, false, false, false, false);
    if dots >= st.ndots() {
        let r = one(compose(name, None));
        if r > 0 {
            return passed(r);
        }
        saved = Some(st.res_h_errno());
        tried_as_is = true;
    }
    if (dots == 0 && opts & rs::RES_DEFNAMES != 0) || (dots > 0 && opts & rs::RES_DNSRCH != 0) {
        for d in list {
            searched = true;
            let d = d.strip_prefix('.').unwrap_or(d);
            root_on_list |= d.is_empty();
            let r = one(compose(name, Some(d)));
            if r > 0 {
                return passed(r);
            }
            if tsproxy_core::sys::errno() == libc::ECONNREFUSED {
                st.set_h_errno(TRY_AGAIN);
                return passed(-1);
            }
            let done = match st.res_h_errno() {
                NO_DATA => {
                    got_nodata = true;
                    false
                }
                HOST_NOT_FOUND => false,
                // SAFETY: anslen >= 4 checked; the header glibc (or we) just wrote.
                TRY_AGAIN if anslen >= 4 && !answer.is_null() && unsafe { *answer.add(3) } & 0xf == SERVFAIL => {
                    got_servfail = true;
                    false
                }
                _ => true,
            };
            if done || opts & rs::RES_DNSRCH == 0 {
                break;
            }
        }
    }
    if (dots > 0 || !searched || opts & rs::RES_NOTLDQUERY == 0) && !(tried_as_is || root_on_list) {
        let r = one(compose(name, None));
        if r > 0 {
            return passed(r);
        }
    }
    if let Some(h) = saved {
        st.set_h_errno(h);
    } else if got_nodata {
        st.set_h_errno(NO_DATA);
    } else if got_servfail {
        st.set_h_errno(TRY_AGAIN);
    }
    passed(-1)
}

/// res_send / res_nsend: a query the caller built. Its question decides; the response carries
/// its id and question. res_send judges no rcode: a no-data response is returned as it is.
///
/// # Safety
/// res_send(3)'s contract.
pub unsafe fn send(query: *const c_uchar, len: c_int, answer: *mut c_uchar, anslen: c_int) -> Detour<c_int> {
    if query.is_null() || len < HFIXEDSZ as c_int {
        return Detour::Bypass(Bypass::NotApplicable);
    }
    // SAFETY: the caller's query of len bytes.
    let q = unsafe { std::slice::from_raw_parts(query, len as usize) };
    let p = match msg::parse_query(q) {
        Some(p) if is_tailnet(&p.name) => p,
        // Any other message that asks a tailnet question (a second question, a compressed
        // name, another opcode, a name under a tailnet domain that is not a host name): glibc
        // would send it as it is, so it gets SERVFAIL here, as the supervisor's responder
        // answers it (the rule the sends to port 53 are refused by).
        _ => {
            let st = state::get();
            if tsproxy_core::route::tailnet_question(st.routes(), q, |n| st.known_locally(n)).is_none() {
                return Detour::Bypass(Bypass::NotTailnet);
            }
            let Some(r) = msg::error_response(q, SERVFAIL) else { return Detour::Fail(Errno(libc::ETIMEDOUT)) };
            crate::log::log!(Debug, "res_send: a question for a tailnet name; SERVFAIL from tsproxy");
            // SAFETY: forwarded contract.
            return match unsafe { deliver(&r, r.len(), answer, anslen) } {
                Err(e) => Detour::Fail(e),
                Ok((n, None)) => Detour::Done(n),
                Ok((n, Some(e))) => Detour::Return(n, e),
            };
        }
    };
    let slot = if msg::wants_address(p.qclass, p.qtype) {
        match tailnet_slot(&p.name) {
            None => return Detour::Bypass(Bypass::NotTailnet),
            // No placeholder: as if every server failed.
            Some(Err(())) => return Detour::Fail(Errno(libc::ETIMEDOUT)),
            Some(Ok(s)) => Some(s),
        }
    } else {
        None
    };
    let r = msg::answer_placeholder(q, &p, slot);
    crate::log::log!(Debug, "res_send {} type {} -> tailnet name, answered by tsproxy", p.name, p.qtype);
    // SAFETY: forwarded contract.
    match unsafe { deliver(&r, p.end, answer, anslen) } {
        Err(e) => Detour::Fail(e),
        Ok((n, None)) => Detour::Done(n),
        Ok((n, Some(e))) => Detour::Return(n, e),
    }
}

//! Names: which are tailnet names (never sent to the system resolver), and the lookups tsproxy
//! itself needs.
pub mod addrinfo;
pub mod gai_a;
pub mod hostent;
pub mod nameinfo;
pub mod resolv;
pub mod wire;
pub mod wire_tcp;

use crate::state;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tsproxy_core::names;

/// The name glibc's resolver would ask for `name`: its backslash escapes read as `ns_name_pton`
/// reads them (`pe\101r-1` is `peer-1` on the wire: nss_dns builds its questions that way, for
/// getaddrinfo and gethostbyname too), so that the name judged is the name that would be sent.
/// Without a backslash (nearly always) the name itself, nothing allocated; one glibc would not
/// send (a bad escape) also stays as it is.
pub fn as_sent(name: &str) -> std::borrow::Cow<'_, str> {
    if !name.contains('\\') {
        return std::borrow::Cow::Borrowed(name);
    }
    let q = tsproxy_core::dns::query_presentation(0, name.as_bytes(), tsproxy_core::dns::TYPE_A, tsproxy_core::dns::CLASS_IN);
    match q.as_deref().and_then(|q| tsproxy_core::dns::questions(q).next()) {
        Some(w) => std::borrow::Cow::Owned(w.name),
        None => std::borrow::Cow::Borrowed(name),
    }
}

/// Must a reverse lookup of `ip` not reach the system resolver? A tailnet address or a
/// placeholder (`route::reverse_is_tailnet`) — unless /etc/hosts lists it, which glibc's `files`
/// source answers before any DNS source. The caller has already tried `name_of`.
pub fn reverse_withheld(ip: IpAddr) -> bool {
    tsproxy_core::route::reverse_is_tailnet(state::get().routes(), ip) && !tsproxy_core::hosts::lists_address(ip)
}

/// The placeholder slot for `name` if it is a tailnet name: None when it is not one (libc
/// resolves it), `Some(Err(()))` when it is one but gets no placeholder (the table is full):
/// the lookup then fails with "try again" — a tailnet name never goes to the system resolver.
pub fn tailnet_slot(name: &str) -> Option<Result<u32, ()>> {
    let st = state::get();
    if !st.routes().is_tailnet_name(name, |n| st.known_locally(n)) {
        return None;
    }
    let slot = match names::try_intern(name) {
        Ok(s) => s,
        Err(e) => {
            let why = match e {
                names::InternError::TooLong => "too long",
                names::InternError::Invalid => "not a host name",
                names::InternError::Full => "the name table is full",
            };
            crate::log::log!(Error, "tailnet name {name:?} not resolved: {why}; answering \"try again\"");
            return Some(Err(()));
        }
    };
    note_registry();
    Some(Ok(match &st.supervisor_dns {
        Some(sup) => register_with_supervisor(name, slot, *sup),
        None => slot,
    }))
}

/// Say once per process when names cannot be shared with the user's other processes (README,
/// Names): a squatted `/tmp/tsproxy-<uid>` is an error worth seeing, anything else information.
fn note_registry() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static SAID: AtomicBool = AtomicBool::new(false);
    if let Err(why) = tsproxy_core::registry::state() {
        if !SAID.swap(true, Ordering::Relaxed) {
            if why.contains("another user") {
                // SAFETY: geteuid has no preconditions.
                let euid = unsafe { libc::geteuid() };
                crate::log::log!(
                    Error,
                    "name registry not used: /tmp/tsproxy-{euid} belongs to another user or is open to others; tailnet names stay within each process"
                );
            } else {
                crate::log::log!(Info, "name registry not used: {why}; tailnet names stay within each process");
            }
        }
    }
}

/// Under the launcher's seccomp supervisor: make sure the supervisor (a separate process that
/// handles dials made with raw syscalls, such as Go's) knows what our placeholder means, by
/// asking its DNS responder for the name. If it chose another slot, use that one here too.
fn register_with_supervisor(name: &str, slot: u32, sup: SocketAddr) -> u32 {
    let Some(q) = tsproxy_core::dns::query(slot as u16, name, tsproxy_core::dns::TYPE_A) else { return slot };
    // The responder answers only its own tree: the launcher hands the key to the command
    // (`TSPROXY_SUPERVISOR_DNS_KEY`); the question goes out as b"TSK1" + key + query.
    let q = match std::env::var("TSPROXY_SUPERVISOR_DNS_KEY") {
        Ok(k) if !k.is_empty() => [b"TSK1".as_slice(), k.as_bytes(), &q].concat(),
        _ => q,
    };
    let Some(answer) = udp_ask(sup, &q) else {
        crate::log::log!(Info, "supervisor did not answer for {name:?}");
        return slot;
    };
    match tsproxy_core::dns::first_address(&answer, slot as u16).and_then(|ip| names::slot_of(&ip)) {
        Some(theirs) if theirs != slot && names::intern_at(theirs, name) => theirs,
        _ => slot,
    }
}

/// One UDP question and answer with raw syscalls (the hooks must not see them), 200 ms at most.
fn udp_ask(to: SocketAddr, q: &[u8]) -> Option<Vec<u8>> {
    use tsproxy_core::{sys, syscall};
    let (sa, len) = tsproxy_core::sockaddr::encode(to, libc::AF_INET)?;
    let fd = syscall!(SYS_socket, libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, 0).ok()? as i32;
    let mut out = None;
    if sys::connect_raw(fd, (&sa as *const libc::sockaddr_storage).cast(), len).is_ok() && sys::send(fd, q).is_ok() {
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(200);
        let mut buf = [0u8; 512];
        while out.is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now()).as_millis() as i32;
            if left <= 0 || sys::poll1(fd, libc::POLLIN, left).unwrap_or(0) == 0 {
                break;
            }
            if let Ok(n) = sys::recv(fd, &mut buf, 0) {
                out = Some(buf[..n].to_vec());
            }
        }
    }
    let _ = syscall!(SYS_close, fd);
    out
}

/// The tailnet name a placeholder address stands for.
pub fn name_of(ip: IpAddr) -> Option<&'static str> {
    names::slot_of(&tsproxy_core::cidr::unmap(ip)).and_then(names::name)
}

/// Names /etc/hosts lists, plus this machine's hostname.
pub fn local_names() -> HashSet<String> {
    tsproxy_core::hosts::local_names()
}

/// A proxy's host: IP literals and `localhost` without any lookup, other names through the
/// real getaddrinfo.
pub fn resolve_proxy_host(host: &str, port: u16) -> Vec<SocketAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return vec![SocketAddr::new(ip, port)];
    }
    if host == "localhost" {
        return vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port), SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port)];
    }
    let mut out = Vec::new();
    let Ok(c) = std::ffi::CString::new(host) else { return out };
    // SAFETY: all-zero addrinfo is valid hints.
    let mut hints: libc::addrinfo = unsafe { std::mem::zeroed() };
    hints.ai_socktype = libc::SOCK_STREAM;
    let mut res: *mut libc::addrinfo = std::ptr::null_mut();
    let gai = real!(getaddrinfo: fn(*const libc::c_char, *const libc::c_char, *const libc::addrinfo, *mut *mut libc::addrinfo) -> libc::c_int);
    // SAFETY: valid C string, hints and out-pointer.
    if unsafe { gai(c.as_ptr(), std::ptr::null(), &hints, &mut res) } != 0 {
        crate::log::log!(Error, "cannot resolve proxy host {host:?}");
        return out;
    }
    let mut p = res;
    while !p.is_null() {
        // SAFETY: p walks the list getaddrinfo returned; ai_addr holds ai_addrlen bytes.
        unsafe {
            if let Some(a) = tsproxy_core::sockaddr::read((*p).ai_addr, (*p).ai_addrlen) {
                out.push(SocketAddr::new(a.ip(), port));
            }
            p = (*p).ai_next;
        }
    }
    // SAFETY: res came from the real getaddrinfo.
    unsafe { libc::freeaddrinfo(res) };
    out.dedup();
    out
}

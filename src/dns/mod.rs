//! Names: which are tailnet names (never sent to the system resolver), and the lookups tsproxy
//! itself needs.
pub mod addrinfo;
pub mod hostent;
pub mod nameinfo;

use crate::state;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tsproxy_core::config::normalize_name;
use tsproxy_core::names;

/// The placeholder slot for `name` if it is a tailnet name, else None (libc resolves it).
pub fn tailnet_slot(name: &str) -> Option<u32> {
    let st = state::get();
    if !st.routes().is_tailnet_name(name, |n| st.known_locally(n)) {
        return None;
    }
    let slot = names::intern(name);
    if slot.is_none() {
        crate::log::log!(Error, "name table full; {name:?} is not resolved");
    }
    slot
}

/// The tailnet name a placeholder address stands for.
pub fn name_of(ip: IpAddr) -> Option<&'static str> {
    names::slot_of(&tsproxy_core::cidr::unmap(ip)).and_then(names::name)
}

/// Names /etc/hosts lists, plus this machine's hostname.
pub fn local_names() -> HashSet<String> {
    let mut set = HashSet::new();
    if let Ok(text) = std::fs::read_to_string("/etc/hosts") {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            set.extend(line.split_whitespace().skip(1).map(normalize_name));
        }
    }
    // SAFETY: all-zero is a valid utsname; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is writable.
    if unsafe { libc::uname(&mut u) } == 0 {
        // SAFETY: uname NUL-terminates nodename.
        let n = unsafe { std::ffi::CStr::from_ptr(u.nodename.as_ptr()) }.to_string_lossy();
        let n = normalize_name(&n);
        if let Some((first, _)) = n.split_once('.') {
            set.insert(first.to_string());
        }
        set.insert(n);
    }
    set
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

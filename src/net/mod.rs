//! Where a connection goes, and the connect path itself.
pub mod connect;
pub mod fds;
pub mod io;
pub mod pending;
pub mod send;
pub mod tunnels;

use crate::state;
use std::net::SocketAddr;
use tsproxy_core::config::IpClass;
use tsproxy_core::{names, Target};

/// Why a destination goes straight to libc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bypass {
    /// Loopback, LAN, public: outside the tailnet ranges and TSPROXY_ROUTES.
    NotTailnet,
    /// A tailnet address that NO_PROXY lists: the user asked for a direct dial.
    NoProxy,
}

#[derive(Debug)]
pub enum Route {
    Direct(Bypass),
    Proxy(Target),
    /// Never dial, never proxy: the errno and why.
    Refuse(tsproxy_core::Errno, &'static str),
}

/// Decide for `dest`. A few compares for everything that is not ours.
pub fn decide(dest: SocketAddr) -> Route {
    let cfg = state::get().routes();
    let ip = tsproxy_core::cidr::unmap(dest.ip());
    match cfg.classify_ip(ip) {
        IpClass::Direct => Route::Direct(Bypass::NotTailnet),
        IpClass::NoProxy => Route::Direct(Bypass::NoProxy),
        IpClass::Tailnet => Route::Proxy(Target::Ip(SocketAddr::new(ip, dest.port()))),
        IpClass::Placeholder => match names::slot_of(&ip).and_then(names::name) {
            Some(n) => Route::Proxy(Target::Name(n.to_string(), dest.port())),
            None => Route::Refuse(tsproxy_core::Errno(libc::ECONNREFUSED), "placeholder address of a name this process never resolved"),
        },
    }
}

//! Where a connection goes, and the connect path itself.
pub mod connect;
pub mod fds;
pub mod io;
pub mod pending;
pub mod rx;
pub mod selfproxy;
pub mod send;
pub mod siblings;
pub mod tunnels;
pub mod udp;

use crate::state;
use std::net::SocketAddr;
pub use tsproxy_core::route::Route;

/// Decide for `dest` with the one routing policy (`tsproxy_core::route`, which the supervisor
/// uses too). A few compares for everything that is not ours. In a process that is itself a
/// configured proxy, what would be tunnelled is not (`selfproxy`: never to itself).
pub fn decide(dest: SocketAddr) -> Route {
    let r = tsproxy_core::route::decide(state::get().routes(), dest);
    if matches!(r, Route::Proxy(_)) && selfproxy::is_proxy() {
        return tsproxy_core::route::in_proxy(r);
    }
    r
}

/// The policy alone, for calls libc makes on tsproxy's behalf (the nested path, which refuses
/// every tailnet destination anyway): no self-proxy check there — that check may itself be what
/// made the call (resolving a proxy's host name), and must not recurse.
pub fn decide_nested(dest: SocketAddr) -> Route {
    tsproxy_core::route::decide(state::get().routes(), dest)
}

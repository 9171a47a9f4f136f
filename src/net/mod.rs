//! Where a connection goes, and the connect path itself.
pub mod connect;
pub mod fds;
pub mod io;
pub mod pending;
pub mod send;
pub mod tunnels;

use crate::state;
use std::net::SocketAddr;
pub use tsproxy_core::route::Route;

/// Decide for `dest` with the one routing policy (`tsproxy_core::route`, which the supervisor
/// uses too). A few compares for everything that is not ours.
pub fn decide(dest: SocketAddr) -> Route {
    tsproxy_core::route::decide(state::get().routes(), dest)
}

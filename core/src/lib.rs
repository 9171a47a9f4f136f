//! Pure logic shared by `libtsproxy.so` and the `tsproxy` launcher (and, later, the seccomp
//! supervisor): configuration, destination classification, the placeholder-name table, the
//! SOCKS5 / HTTP CONNECT codecs (pure functions on bytes) and the handshake that drives them on a
//! raw socket fd with raw syscalls only, so it can never re-enter the preload hooks.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod cidr;
pub mod conffile;
pub mod config;
pub mod dns;
pub mod errno;
pub mod hosts;
pub mod http;
pub mod logline;
pub mod names;
pub mod peer;
pub mod registry;
pub mod route;
pub mod sockaddr;
pub mod socks5;
pub mod sys;
pub mod tunnel;

pub use errno::Errno;
use std::net::SocketAddr;

/// Where a proxied connection should go, as the proxy will be asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A literal address: SOCKS5 ATYP 1/4, `CONNECT 1.2.3.4:80`.
    Ip(SocketAddr),
    /// A name the proxy resolves (MagicDNS): SOCKS5 ATYP 3, `CONNECT peer:80`.
    Name(String, u16),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Ip(a) => write!(f, "{a}"),
            Target::Name(n, p) => write!(f, "{n}:{p}"),
        }
    }
}

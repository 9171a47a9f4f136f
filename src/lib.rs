//! `libtsproxy.so`: LD_PRELOAD this into a program and its TCP connections to tailnet
//! destinations (100.64.0.0/10, fd7a:115c:a1e0::/48, MagicDNS names, TSPROXY_ROUTES) become
//! SOCKS5 or HTTP CONNECT tunnels through tailscaled, on the program's own socket. Everything
//! else goes to libc untouched.
//!
//! Layout (after mirrord's layer): `hooks/` holds the exported symbols, each made by `hook!` around logic in
//! `net/` (connect, tunnels, pending handshakes) or `dns/` (names), through the one boundary in
//! `boundary.rs` (guard, `catch_unwind`, errno last, libc called outside).
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[macro_use]
mod real;
#[macro_use]
mod boundary;
mod dns;
mod fdset;
mod fork;
mod hooks;
mod log;
mod net;
mod racy;
mod spin;
mod state;

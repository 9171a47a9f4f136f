//! `libtsproxy.so`: LD_PRELOAD this into a program and its TCP connections to tailnet
//! destinations (100.64.0.0/10, fd7a:115c:a1e0::/48, MagicDNS names, TSPROXY_ROUTES) become
//! SOCKS5 or HTTP CONNECT tunnels through tailscaled, on the program's own socket. Everything
//! else goes to libc untouched.
//!
//! Layout (after mirrord's layer): `hooks/` holds the exported symbols, each a one-liner that
//! calls safe logic in `net/` (connect, tunnels) or `dns/` (names), under `ffi::shield`, which
//! keeps panics from crossing `extern "C"` and sets errno last.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[macro_use]
mod real;
mod dns;
mod ffi;
mod fork;
mod guard;
mod hooks;
mod log;
mod net;
mod racy;
mod spin;
mod state;

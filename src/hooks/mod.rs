//! The exported symbols. Every one is made by the `hook!` macro (see `boundary`), so each goes
//! through the same guarded boundary: fast check, re-entrancy guard, `catch_unwind`, errno
//! saved and set last, libc called outside. A panic fails closed (connects refused, lookups
//! failed). `syscall` is the one export without logic of its own: it hands the socket calls
//! made through libc's generic wrapper to the hooks of the same name (see `syscall.rs`).
#![allow(clippy::missing_safety_doc)]
mod connect;
mod dns;
mod epoll;
mod fd;
mod io;
mod poll;
mod rcmd;
mod resolv;
mod syscall;

pub use connect::{__connect, connect, getpeername, getsockname, getsockopt, listen, sendmmsg, sendmsg, sendto};
pub use dns::{getaddrinfo, gethostbyaddr, gethostbyaddr_r, gethostbyname, gethostbyname2, gethostbyname2_r, gethostbyname_r, getnameinfo};
pub use epoll::{epoll_create, epoll_create1, epoll_ctl};
pub use fd::{close, close_range, dup, dup2, dup3, fcntl, fcntl64, socket};
pub use io::{
    __read_chk, __recv_chk, __recvfrom_chk, __send, __write, pwritev2, read, readv, recv, recvfrom, recvmmsg, recvmsg, send, sendfile, sendfile64, splice,
    write, writev,
};
pub use poll::{__poll_chk, __ppoll_chk, poll, ppoll, pselect, select};
pub use rcmd::{rcmd, rcmd_af, rexec, rexec_af, ruserok, ruserok_af};
// (The pre-2.34 `__res_*` exports take their real function from these names.)
pub use resolv::{getaddrinfo_a, res_nquery, res_nquerydomain, res_nsearch, res_nsend, res_query, res_querydomain, res_search, res_send};
pub use syscall::syscall;

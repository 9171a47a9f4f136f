//! The exported symbols. Each is a one-liner: `shield` (no panic crosses into C, errno set last)
//! around safe logic elsewhere. A panic fails closed: connects are refused, lookups fail.
#![allow(clippy::missing_safety_doc)]
mod connect;
mod epoll;
mod fd;
mod getaddrinfo;
mod gethostbyname;
mod getnameinfo;
mod getpeername;
mod getsockopt;
mod io;
mod poll;
mod sendto;

pub use connect::connect;
pub use getaddrinfo::getaddrinfo;
pub use gethostbyname::{gethostbyaddr, gethostbyaddr_r, gethostbyname, gethostbyname2, gethostbyname2_r, gethostbyname_r};
pub use getnameinfo::getnameinfo;
pub use getpeername::getpeername;
pub use sendto::{sendmsg, sendto};
pub use epoll::{epoll_create, epoll_create1, epoll_ctl, epoll_pwait, epoll_pwait2, epoll_wait};
pub use fd::{close, close_range, dup, dup2, dup3, fcntl, fcntl64, socket};
pub use getsockopt::getsockopt;
pub use io::{__read_chk, __recv_chk, __recvfrom_chk, read, readv, recv, recvfrom, recvmsg, send, write, writev};
pub use poll::{__poll_chk, __ppoll_chk, poll, ppoll, pselect, select};

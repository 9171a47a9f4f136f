//! The exported symbols. Each is a one-liner: `shield` (no panic crosses into C, errno set last)
//! around safe logic elsewhere. A panic fails closed: connects are refused, lookups fail.
#![allow(clippy::missing_safety_doc)]
mod connect;
mod getaddrinfo;
mod gethostbyname;
mod getnameinfo;
mod getpeername;
mod sendto;

pub use connect::connect;
pub use getaddrinfo::getaddrinfo;
pub use gethostbyname::{gethostbyaddr, gethostbyaddr_r, gethostbyname, gethostbyname2, gethostbyname2_r, gethostbyname_r};
pub use getnameinfo::getnameinfo;
pub use getpeername::getpeername;
pub use sendto::{sendmsg, sendto};

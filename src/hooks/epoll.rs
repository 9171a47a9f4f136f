//! epoll: instances are remembered as they are created (where to find registrations made
//! before a connect); epoll_ctl on a socket still handshaking is answered from the
//! registrations kept aside. The waits are not hooked at all: the driver thread advances
//! handshakes, and the application's sets never hold anything of ours.
use crate::net::pending::{self, epoll};
use libc::{c_int, epoll_event};

hook! {
    fn epoll_create(size: c_int) -> c_int;
    fast: false;
    fail: -1, on_panic: ENOMEM;
    |real, ctx| {
        let fd = real(size);
        epoll::on_epoll_create(fd);
        crate::boundary::passed(fd)
    }
}

hook! {
    fn epoll_create1(flags: c_int) -> c_int;
    fast: false;
    fail: -1, on_panic: ENOMEM;
    |real, ctx| {
        let fd = real(flags);
        epoll::on_epoll_create(fd);
        crate::boundary::passed(fd)
    }
}

hook! {
    fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, ev: *mut epoll_event) -> c_int;
    fast: {
        if op == libc::EPOLL_CTL_ADD {
            crate::net::fds::added_to_epoll(fd);
        }
        !pending::active()
    };
    fail: -1, on_panic: ENOMEM;
    |real, ctx| epoll::epoll_ctl(epfd, op, fd, ev)
}

//! Calls that put bytes on a socket or take them off: one relaxed load when no handshake is
//! pending anywhere; otherwise a socket still handshaking answers EAGAIN (nonblocking) or waits
//! for the tunnel (blocking), as the kernel answers for a socket in SYN_SENT — so no byte of
//! the program's can reach the proxy's handshake, and no byte of the proxy's reply can reach
//! the program. sendfile and splice are here for that reason (they write to a socket without
//! write(2)); sendmsg/sendmmsg/sendto are in `connect` (they may carry an address).
use crate::net::pending::{self, Gate};
use libc::{c_int, c_uint, c_void, iovec, loff_t, mmsghdr, msghdr, off64_t, off_t, size_t, sockaddr, socklen_t, ssize_t, timespec};

macro_rules! gated_io {
    ($( $name:ident ( $fd:ident $(, $a:ident : $t:ty)* ) -> $ret:ty; )*) => {$(
        hook! {
            fn $name($fd: c_int $(, $a: $t)*) -> $ret;
            fast: !pending::active();
            fail: -1, on_panic: EIO;
            |real, ctx| pending::gate($fd, ctx, Gate::Io)
        }
    )*};
}

gated_io! {
    read(fd, buf: *mut c_void, n: size_t) -> ssize_t;
    write(fd, buf: *const c_void, n: size_t) -> ssize_t;
    readv(fd, iov: *const iovec, cnt: c_int) -> ssize_t;
    writev(fd, iov: *const iovec, cnt: c_int) -> ssize_t;
    recv(fd, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t;
    send(fd, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t;
    recvfrom(fd, buf: *mut c_void, n: size_t, flags: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> ssize_t;
    recvmsg(fd, msg: *mut msghdr, flags: c_int) -> ssize_t;
    recvmmsg(fd, msgs: *mut mmsghdr, vlen: c_uint, flags: c_int, timeout: *mut timespec) -> c_int;
    __read_chk(fd, buf: *mut c_void, n: size_t, buflen: size_t) -> ssize_t;
    __recv_chk(fd, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int) -> ssize_t;
    __recvfrom_chk(fd, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> ssize_t;
}

// The socket is the *destination* of sendfile (out_fd) and either end of splice.
hook! {
    fn sendfile(out_fd: c_int, in_fd: c_int, off: *mut off_t, count: size_t) -> ssize_t;
    fast: !pending::active();
    fail: -1, on_panic: EIO;
    |real, ctx| pending::gate(out_fd, ctx, Gate::Io)
}

hook! {
    fn sendfile64(out_fd: c_int, in_fd: c_int, off: *mut off64_t, count: size_t) -> ssize_t;
    fast: !pending::active();
    fail: -1, on_panic: EIO;
    |real, ctx| pending::gate(out_fd, ctx, Gate::Io)
}

hook! {
    fn splice(fd_in: c_int, off_in: *mut loff_t, fd_out: c_int, off_out: *mut loff_t, len: size_t, flags: c_uint) -> ssize_t;
    fast: !pending::active();
    fail: -1, on_panic: EIO;
    |real, ctx| match pending::gate::<ssize_t>(fd_out, ctx, Gate::Io) {
        crate::boundary::Detour::Bypass(_) => pending::gate(fd_in, ctx, Gate::Io),
        d => d,
    }
}

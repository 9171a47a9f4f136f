//! read/write/send/recv and friends: one relaxed load when no handshake is pending anywhere;
//! otherwise a socket still handshaking answers EAGAIN (see net::pending).
use crate::ffi::{shield, Ret};
use libc::{c_int, c_void, iovec, msghdr, size_t, sockaddr, socklen_t, ssize_t};

macro_rules! gated_io {
    ($( $name:ident ( $fd:ident $(, $a:ident : $t:ty)* ) ; )*) => {$(
        #[no_mangle]
        pub unsafe extern "C" fn $name($fd: c_int $(, $a: $t)*) -> ssize_t {
            let real = real!($name: fn(c_int $(, $t)*) -> ssize_t);
            if !crate::net::pending::active() {
                // SAFETY: the caller's arguments, passed on.
                return unsafe { real($fd $(, $a)*) };
            }
            // SAFETY: the caller's arguments, passed on.
            shield(Ret::err(-1, libc::EIO), || crate::net::io::gated($fd, || unsafe { real($fd $(, $a)*) }))
        }
    )*};
}

gated_io! {
    read(fd, buf: *mut c_void, n: size_t);
    write(fd, buf: *const c_void, n: size_t);
    readv(fd, iov: *const iovec, cnt: c_int);
    writev(fd, iov: *const iovec, cnt: c_int);
    recv(fd, buf: *mut c_void, n: size_t, flags: c_int);
    send(fd, buf: *const c_void, n: size_t, flags: c_int);
    recvfrom(fd, buf: *mut c_void, n: size_t, flags: c_int, addr: *mut sockaddr, alen: *mut socklen_t);
    recvmsg(fd, msg: *mut msghdr, flags: c_int);
    __read_chk(fd, buf: *mut c_void, n: size_t, buflen: size_t);
    __recv_chk(fd, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int);
    __recvfrom_chk(fd, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int, addr: *mut sockaddr, alen: *mut socklen_t);
}

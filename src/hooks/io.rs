//! Calls that put bytes on a socket or take them off: one relaxed load when no handshake is
//! pending anywhere; otherwise a socket still handshaking answers EAGAIN (nonblocking) or waits
//! for the tunnel (blocking), as the kernel answers for a socket in SYN_SENT — so no byte of
//! the program's can reach the proxy's handshake, and no byte of the proxy's reply can reach
//! the program. sendfile and splice are here for that reason (they write to a socket without
//! write(2)); sendmsg/sendmmsg/sendto are in `connect` (they may carry an address).
use crate::boundary::Detour;
use crate::dns::wire;
use crate::net::pending::{self, Gate};
use crate::net::udp;
use libc::{c_int, c_uint, c_void, iovec, loff_t, mmsghdr, msghdr, off64_t, off_t, size_t, sockaddr, socklen_t, ssize_t, timespec};
use std::ptr::null_mut;

/// One iovec over a caller's buffer.
fn one(buf: *const c_void, n: size_t) -> iovec {
    iovec { iov_base: buf as *mut c_void, iov_len: n }
}

// Each hook: one or two relaxed loads while nothing is pending and no DNS socket is ours;
// a DNS socket of `dns::wire`'s goes there (its sends go to its server or are answered, its
// receives report the server), anything else is gated while its handshake runs.
macro_rules! io_hook {
    ($name:ident ( $fd:ident $(, $a:ident : $t:ty)* ) -> $ret:ty; $gate:expr; |$ctx:ident| $dns:expr) => {
        hook! {
            fn $name($fd: c_int $(, $a: $t)*) -> $ret;
            fast: !pending::active() && !wire::active() && !udp::active();
            fail: -1, on_panic: EIO;
            |real, $ctx| {
                if wire::marked($fd) || udp::marked($fd) {
                    match $dns {
                        Some(d) => return d,
                        None => {}
                    }
                }
                pending::gate($fd, $ctx, $gate)
            }
        }
    };
}

/// A receive on a socket of `dns::wire`'s or `net::udp`'s.
///
/// # Safety
/// As `wire::recv`.
unsafe fn rx(
    fd: c_int,
    iov: *const iovec,
    n: usize,
    control: *mut c_void,
    clen: usize,
    flags: c_int,
    ctx: &mut crate::boundary::Ctx,
) -> Option<Detour<wire::Got>> {
    if udp::marked(fd) {
        // SAFETY: forwarded contract.
        return unsafe { udp::relay::recv(fd, iov, n, control, clen, flags, ctx) };
    }
    // SAFETY: forwarded contract.
    unsafe { wire::recv(fd, iov, n, control, clen, flags, ctx) }
}

/// A send without an address on a socket of `dns::wire`'s or `net::udp`'s.
///
/// # Safety
/// As `wire::send`.
unsafe fn tx(fd: c_int, iov: *const iovec, n: usize, control: *mut c_void, clen: usize, flags: c_int) -> Option<Detour<ssize_t>> {
    if udp::marked(fd) {
        // SAFETY: forwarded contract.
        return unsafe { udp::relay::send(fd, None, iov, n, control, clen, flags) };
    }
    // SAFETY: forwarded contract.
    unsafe { wire::send(fd, iov, n, control, clen, flags) }
}

/// A receive on a DNS socket: the byte count, the sender written where the caller wants it.
///
/// # Safety
/// `addr`/`alen`: null, or the caller's address buffer and its length.
unsafe fn got(fd: c_int, d: Option<Detour<wire::Got>>, addr: *mut sockaddr, alen: *mut socklen_t) -> Option<Detour<ssize_t>> {
    d.map(|d| match d {
        Detour::Done(g) => {
            // SAFETY: forwarded contract.
            unsafe { wire::write_addr(fd, g.from, addr, alen) };
            Detour::Done(g.n as ssize_t)
        }
        Detour::Fail(e) => Detour::Fail(e),
        Detour::Wait(w) => Detour::Wait(w),
        Detour::Return(_, e) => Detour::Fail(e),
        Detour::Bypass(b) => Detour::Bypass(b),
    })
}

io_hook!(read(fd, buf: *mut c_void, n: size_t) -> ssize_t; Gate::Recv(0); |ctx| got(fd, rx(fd, &one(buf, n), 1, null_mut(), 0, 0, ctx), null_mut(), null_mut()));
io_hook!(__read_chk(fd, buf: *mut c_void, n: size_t, buflen: size_t) -> ssize_t; Gate::Recv(0); |ctx| got(fd, rx(fd, &one(buf, n.min(buflen)), 1, null_mut(), 0, 0, ctx), null_mut(), null_mut()));
io_hook!(write(fd, buf: *const c_void, n: size_t) -> ssize_t; Gate::Send(0); |ctx| tx(fd, &one(buf, n), 1, null_mut(), 0, 0));
io_hook!(readv(fd, iov: *const iovec, cnt: c_int) -> ssize_t; Gate::Recv(0); |ctx| got(fd, rx(fd, iov, cnt.max(0) as usize, null_mut(), 0, 0, ctx), null_mut(), null_mut()));
io_hook!(writev(fd, iov: *const iovec, cnt: c_int) -> ssize_t; Gate::Send(0); |ctx| tx(fd, iov, cnt.max(0) as usize, null_mut(), 0, 0));
io_hook!(recv(fd, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t; Gate::Recv(flags); |ctx| got(fd, rx(fd, &one(buf, n), 1, null_mut(), 0, flags, ctx), null_mut(), null_mut()));
io_hook!(__recv_chk(fd, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int) -> ssize_t; Gate::Recv(flags); |ctx| got(fd, rx(fd, &one(buf, n.min(buflen)), 1, null_mut(), 0, flags, ctx), null_mut(), null_mut()));
io_hook!(send(fd, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t; Gate::Send(flags); |ctx| tx(fd, &one(buf, n), 1, null_mut(), 0, flags));
// glibc's exported aliases of write and send, and pwritev2, which with offset -1 writes a
// socket as writev does: each a way to a connected DNS socket past the hooks above. (stdio
// and aio_write call glibc's internal write, which no preloaded library sees: README.)
io_hook!(__write(fd, buf: *const c_void, n: size_t) -> ssize_t; Gate::Send(0); |ctx| tx(fd, &one(buf, n), 1, null_mut(), 0, 0));
io_hook!(__send(fd, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t; Gate::Send(flags); |ctx| tx(fd, &one(buf, n), 1, null_mut(), 0, flags));
io_hook!(pwritev2(fd, iov: *const iovec, cnt: c_int, off: off_t, flags: c_int) -> ssize_t; Gate::Send(0); |ctx| if off == -1 { tx(fd, iov, cnt.max(0) as usize, null_mut(), 0, 0) } else { None });
io_hook!(recvfrom(fd, buf: *mut c_void, n: size_t, flags: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> ssize_t; Gate::Recv(flags); |ctx| got(fd, rx(fd, &one(buf, n), 1, null_mut(), 0, flags, ctx), addr, alen));
io_hook!(__recvfrom_chk(fd, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> ssize_t; Gate::Recv(flags); |ctx| got(fd, rx(fd, &one(buf, n.min(buflen)), 1, null_mut(), 0, flags, ctx), addr, alen));
io_hook!(recvmsg(fd, msg: *mut msghdr, flags: c_int) -> ssize_t; Gate::Recv(flags); |ctx| recvmsg_dns(fd, msg, flags, ctx));
io_hook!(recvmmsg(fd, msgs: *mut mmsghdr, vlen: c_uint, flags: c_int, timeout: *mut timespec) -> c_int; Gate::Recv(flags); |ctx| recvmmsg_dns(fd, msgs, vlen, flags, ctx));

/// recvmsg on a DNS socket: the caller's iovecs and control buffer, its msg_flags and
/// msg_controllen set as the kernel sets them, the sender in msg_name.
///
/// # Safety
/// recvmsg(2)'s contract.
unsafe fn recvmsg_dns(fd: c_int, msg: *mut msghdr, flags: c_int, ctx: &mut crate::boundary::Ctx) -> Option<Detour<ssize_t>> {
    // SAFETY: the caller's msghdr (contract); null is the kernel's EFAULT to give.
    let m = unsafe { msg.as_mut() }?;
    // SAFETY: the msghdr's buffers are the caller's (contract).
    let d = unsafe { rx(fd, m.msg_iov, m.msg_iovlen, m.msg_control, m.msg_controllen, flags, ctx) }?;
    Some(match d {
        Detour::Done(g) => {
            m.msg_flags = g.flags;
            m.msg_controllen = g.controllen;
            // SAFETY: msg_name has msg_namelen writable bytes (contract).
            unsafe { wire::write_addr(fd, g.from, m.msg_name.cast(), &mut m.msg_namelen) };
            Detour::Done(g.n as ssize_t)
        }
        Detour::Fail(e) | Detour::Return(_, e) => Detour::Fail(e),
        Detour::Wait(w) => Detour::Wait(w),
        Detour::Bypass(b) => Detour::Bypass(b),
    })
}

/// recvmmsg on a DNS socket: the first datagram as the flags say (waiting if they do), then
/// whatever is already queued, each reported as recvmsg would.
///
/// # Safety
/// recvmmsg(2)'s contract.
unsafe fn recvmmsg_dns(fd: c_int, msgs: *mut mmsghdr, vlen: c_uint, flags: c_int, ctx: &mut crate::boundary::Ctx) -> Option<Detour<c_int>> {
    if msgs.is_null() || vlen == 0 {
        return None;
    }
    let mut n = 0usize;
    while n < vlen.min(1024) as usize {
        let f = if n == 0 { flags & !libc::MSG_WAITFORONE } else { (flags & !libc::MSG_WAITFORONE) | libc::MSG_DONTWAIT };
        // SAFETY: msgs holds vlen entries (contract).
        let e = unsafe { &mut *msgs.add(n) };
        // SAFETY: forwarded contract.
        match unsafe { recvmsg_dns(fd, &mut e.msg_hdr, f, ctx) }? {
            Detour::Done(k) => {
                e.msg_len = k as c_uint;
                n += 1;
            }
            Detour::Wait(w) if n == 0 => return Some(Detour::Wait(w)),
            Detour::Fail(err) if n == 0 => return Some(Detour::Fail(err)),
            _ => break,
        }
    }
    Some(Detour::Done(n as c_int))
}

// The socket is the *destination* of sendfile (out_fd) and either end of splice.
hook! {
    fn sendfile(out_fd: c_int, in_fd: c_int, off: *mut off_t, count: size_t) -> ssize_t;
    fast: !pending::active();
    fail: -1, on_panic: EIO;
    |real, ctx| pending::gate(out_fd, ctx, Gate::Send(0))
}

hook! {
    fn sendfile64(out_fd: c_int, in_fd: c_int, off: *mut off64_t, count: size_t) -> ssize_t;
    fast: !pending::active();
    fail: -1, on_panic: EIO;
    |real, ctx| pending::gate(out_fd, ctx, Gate::Send(0))
}

hook! {
    fn splice(fd_in: c_int, off_in: *mut loff_t, fd_out: c_int, off_out: *mut loff_t, len: size_t, flags: c_uint) -> ssize_t;
    fast: !pending::active();
    fail: -1, on_panic: EIO;
    |real, ctx| match pending::gate::<ssize_t>(fd_out, ctx, Gate::Send(0)) {
        crate::boundary::Detour::Bypass(_) => pending::gate(fd_in, ctx, Gate::Recv(0)),
        d => d,
    }
}

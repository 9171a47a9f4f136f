//! sendto()/sendmsg()/sendmmsg() with a destination address: TCP Fast Open to a tailnet
//! destination is a tunnelled connect followed by a plain send; a datagram to a tailnet
//! destination goes through the socket's SOCKS5 UDP association (`net::udp`), never directly. Without an
//! address they are socket calls gated like write() while a handshake is pending.
use super::connect::tunnel;
use super::pending::{self, Gate};
use super::{decide, Route};
use crate::boundary::{Bypass, Ctx, Detour};
use crate::log::log;
use crate::state;
use libc::{c_int, c_uint, c_void, mmsghdr, msghdr, sockaddr, socklen_t, ssize_t};
use tsproxy_core::sys::DatagramAt;
use tsproxy_core::{route, sockaddr as sa, sys, Errno};

/// What to do with a send that names a destination.
enum Plan {
    /// Not ours: libc (or, under the supervisor, a marked raw send).
    Libc,
    /// TCP Fast Open to a proxied destination: tunnel first (inline), then send.
    FastOpen(tsproxy_core::Target),
    Fail(Errno),
    /// A DNS question for a tailnet name to this server: answered here (`dns::wire`), never
    /// sent.
    Answer(std::net::SocketAddr),
    /// A datagram to a proxied destination: through the socket's UDP association (`net::udp`).
    Udp(tsproxy_core::Target, std::net::SocketAddr),
}

/// A datagram to port 53 asking a tailnet name (`route::tailnet_question`, the rule the
/// supervisor applies too): refused, never sent to that server (dig, c-ares and libuv send
/// their own queries with sendto/sendmsg/sendmmsg). Only called for port 53, so every other
/// send pays one compare. Stream sockets are not inspected (DNS over TCP: README, Limitations).
///
/// # Safety
/// `data` describes the buffers of the send being made (sendto's `buf`/`len`, or a msghdr's
/// `msg_iov`/`msg_iovlen`), which the caller promises readable, as the kernel is about to read
/// them.
unsafe fn dns_refused(fd: c_int, dest: std::net::SocketAddr, data: DatagramAt) -> bool {
    // SAFETY: forwarded contract.
    let Some(bytes) = (unsafe { read_own(data) }) else { return false };
    let st = state::get();
    let Some(name) = route::tailnet_question(st.routes(), &bytes, |n| st.known_locally(n)) else { return false };
    match sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) {
        Ok(ty) if ty != libc::SOCK_STREAM => {
            log!(Error, "send fd={fd} {dest}: a DNS query for tailnet name {name:?}; refused (a tailnet name never goes to a DNS server)");
            true
        }
        _ => false, // a stream socket, or not a socket: the kernel answers
    }
}

/// A send to port 53 of a destination that is not the tailnet's. A question for a tailnet name
/// is answered here (`Plan::Answer`). What cannot be judged as one question is refused, as the
/// supervisor does (wrapper/src/supervisor/notify.rs, `on_send`): on a datagram socket a send
/// that is not one whole DNS message (MSG_MORE, a corked socket's piece, a segmented (GSO)
/// send, bytes after the message) may become part of a datagram we never see whole (EPERM);
/// TCP Fast Open on a stream socket is a connect that the DNS-over-TCP swap never sees
/// (EOPNOTSUPP, as a kernel with client TFO off: the client connects instead). Anything else
/// goes to libc. A whole question costs no system call more than before.
///
/// # Safety
/// As `dns_refused`.
unsafe fn dns_plan(fd: c_int, dest: std::net::SocketAddr, flags: c_int, data: DatagramAt) -> Plan {
    // SAFETY: forwarded contract.
    let Some(bytes) = (unsafe { read_own(data) }) else { return Plan::Libc };
    let whole = route::whole_dns_datagram(&bytes, flags);
    let tfo = flags & libc::MSG_FASTOPEN != 0;
    if !whole || tfo {
        match sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) {
            Ok(libc::SOCK_DGRAM) if !whole => {
                log!(Info, "send fd={fd} {dest}: not one whole DNS message (MSG_MORE, corked, segmented or trailing bytes); refused");
                return Plan::Fail(Errno(libc::EPERM));
            }
            Ok(libc::SOCK_STREAM) if tfo => {
                log!(Info, "send fd={fd} {dest}: TCP Fast Open to a DNS server refused (EOPNOTSUPP); DNS over TCP goes through connect");
                return Plan::Fail(Errno(libc::EOPNOTSUPP));
            }
            _ => {}
        }
    }
    let st = state::get();
    if route::tailnet_question(st.routes(), &bytes, |n| st.known_locally(n)).is_some() {
        return Plan::Answer(dest);
    }
    Plan::Libc
}

/// Answer a DNS question for a tailnet name sent to `server` (`dns::wire`): the send's result.
///
/// # Safety
/// As `dns_refused`.
unsafe fn answer(fd: c_int, server: std::net::SocketAddr, data: DatagramAt) -> Detour<ssize_t> {
    // SAFETY: forwarded contract.
    let Some(bytes) = (unsafe { read_own(data) }) else { return Detour::Fail(Errno(libc::EFAULT)) };
    match crate::dns::wire::maybe_answer(fd, server, &bytes) {
        Some(Ok(k)) => Detour::Done(k as ssize_t),
        Some(Err(e)) => Detour::Fail(e),
        // Not a datagram socket after all: as before this module answered, the question is
        // refused rather than sent.
        // SAFETY: forwarded contract.
        None if unsafe { dns_refused(fd, server, data) } => Detour::Fail(Errno(libc::ENETUNREACH)),
        None => Detour::Bypass(Bypass::NotTailnet),
    }
}

/// The first `sys::DATAGRAM_MAX` bytes of the datagram the program is sending, copied from its
/// own buffers. Read directly, not with process_vm_readv on ourselves: a program may run under
/// a seccomp filter of its own that kills on process_vm_readv (systemd's `SystemCallFilter=`
/// without `@debug`, sandboxes), and send DNS queries all the same (resolved, dnsmasq). The
/// price: a program that passes an unreadable buffer faults here where the kernel would have
/// said EFAULT — undefined in POSIX, and no legal use.
///
/// # Safety
/// As `dns_refused`: the buffers `at` describes are readable for their lengths.
unsafe fn read_own(at: DatagramAt) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut take = |p: u64, n: u64| {
        let n = (n as usize).min(sys::DATAGRAM_MAX - out.len());
        if p != 0 && n > 0 {
            // SAFETY: the caller's contract: p holds at least n readable bytes.
            out.extend_from_slice(unsafe { std::slice::from_raw_parts(p as *const u8, n) });
        }
    };
    match at {
        DatagramAt::Buf(p, n) => take(p, n),
        DatagramAt::Iov(p, n) => {
            if p == 0 || n as usize > 1024 {
                return None; // the kernel refuses more than UIO_MAXIOV iovecs itself
            }
            for i in 0..n as usize {
                // SAFETY: the caller's contract: msg_iov holds msg_iovlen readable iovecs.
                let v = unsafe { std::ptr::read_unaligned((p as *const libc::iovec).add(i)) };
                take(v.iov_base as u64, v.iov_len as u64);
            }
        }
    }
    Some(out)
}

/// # Safety
/// `addr` is null or points to `alen` readable bytes; `data` describes the buffers of this
/// very send (readable, as the kernel is about to read them).
unsafe fn plan(fd: c_int, flags: c_int, addr: *const sockaddr, alen: socklen_t, data: DatagramAt) -> Plan {
    // SAFETY: forwarded contract.
    let Some(dest) = (unsafe { sa::read(addr, alen) }).or_else(|| {
        // Family 0 (never set): the kernel's datagram and raw send paths read it as the
        // socket's own family; read it the same way (rare: only then ask the socket).
        // SAFETY: forwarded contract; at least the family is readable when alen >= 2.
        let fam = (!addr.is_null() && alen >= 2).then(|| unsafe { std::ptr::read_unaligned(std::ptr::addr_of!((*addr).sa_family)) });
        if fam != Some(0) {
            return None;
        }
        let dom = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN).ok()?;
        let ty = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE).ok()?;
        // SAFETY: forwarded contract.
        unsafe { sa::read_send(addr, alen, dom, ty) }
    }) else {
        return Plan::Libc;
    };
    let target = match decide(dest) {
        // SAFETY: forwarded contract (`data` is this send's own buffers).
        Route::Direct(_) if dest.port() == route::DNS_PORT => return unsafe { dns_plan(fd, dest, flags, data) },
        Route::Direct(_) => return Plan::Libc,
        Route::Refuse(e, why) => {
            log!(Error, "send fd={fd} {dest}: refused: {why}");
            return Plan::Fail(e);
        }
        Route::Proxy(t) => t,
    };
    let ty = match sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE) {
        Ok(t) => t,
        Err(e) => return Plan::Fail(Errno::of(&e)),
    };
    if ty == libc::SOCK_DGRAM {
        return Plan::Udp(target, dest);
    }
    if ty != libc::SOCK_STREAM {
        log!(Error, "send fd={fd} {target}: only datagram and stream sockets are proxied; refused");
        return Plan::Fail(Errno(libc::ENETUNREACH));
    }
    if flags & libc::MSG_FASTOPEN == 0 {
        // A stream socket ignores the address (connected) or fails with ENOTCONN/EPIPE
        // without sending anything: the kernel's answer is the right one.
        return Plan::Libc;
    }
    Plan::FastOpen(target)
}

fn raw_send(fd: c_int, buf: *const c_void, n: usize, flags: c_int) -> Detour<ssize_t> {
    match tsproxy_core::syscall!(SYS_sendto, fd, buf, n, flags & !libc::MSG_FASTOPEN, 0usize, 0usize) {
        Ok(k) => Detour::Done(k as ssize_t),
        Err(e) => Detour::Fail(Errno::of(&e)),
    }
}

/// A marked raw send under the supervisor (its filter lets it through), else libc.
fn direct(fd: c_int, buf: *const c_void, n: usize, flags: c_int, addr: *const sockaddr, alen: socklen_t) -> Detour<ssize_t> {
    if !addr.is_null() && crate::state::get().supervisor_dns.is_some() {
        return match sys::sendto_marked(fd, buf, n, flags, addr, alen) {
            Ok(k) => Detour::Done(k as ssize_t),
            Err(e) => Detour::Fail(Errno::of(&e)),
        };
    }
    Detour::Bypass(Bypass::NotTailnet)
}

/// # Safety
/// sendto(2)'s contract.
pub unsafe fn sendto(fd: c_int, buf: *const c_void, n: usize, flags: c_int, addr: *const sockaddr, alen: socklen_t, ctx: &mut Ctx) -> Detour<ssize_t> {
    if ctx.round > 0 {
        // TCP Fast Open: back from a wait of the inline handshake.
        return match pending::resume_inline(fd, ctx) {
            Detour::Done(_) => raw_send(fd, buf, n, flags),
            Detour::Wait(w) => Detour::Wait(w),
            Detour::Fail(e) => Detour::Fail(e),
            _ => Detour::Fail(Errno(libc::ECONNREFUSED)),
        };
    }
    if addr.is_null() {
        if super::udp::marked(fd) {
            let v = libc::iovec { iov_base: buf as *mut c_void, iov_len: n };
            // SAFETY: buf holds n readable bytes (contract).
            if let Some(d) = unsafe { super::udp::relay::send(fd, None, &v, 1, std::ptr::null_mut(), 0, flags) } {
                return d;
            }
        }
        if crate::dns::wire::marked(fd) {
            let v = libc::iovec { iov_base: buf as *mut c_void, iov_len: n };
            // SAFETY: buf holds n readable bytes (contract).
            if let Some(d) = unsafe { crate::dns::wire::send(fd, &v, 1, std::ptr::null_mut(), 0, flags) } {
                return d;
            }
        }
        return pending::gate(fd, ctx, Gate::Send(flags));
    }
    let data = DatagramAt::Buf(buf as u64, n as u64);
    // SAFETY: forwarded contract.
    match unsafe { plan(fd, flags, addr, alen, data) } {
        Plan::Libc => direct(fd, buf, n, flags, addr, alen),
        Plan::Fail(e) => Detour::Fail(e),
        Plan::Udp(t, dest) => {
            let v = libc::iovec { iov_base: buf as *mut c_void, iov_len: n };
            // SAFETY: buf holds n readable bytes (contract).
            unsafe { super::udp::relay::send(fd, Some((t, dest)), &v, 1, std::ptr::null_mut(), 0, flags) }.unwrap_or(Detour::Fail(Errno(libc::ENETUNREACH)))
        }
        // SAFETY: forwarded contract.
        Plan::Answer(server) => match unsafe { answer(fd, server, data) } {
            Detour::Bypass(_) => direct(fd, buf, n, flags, addr, alen),
            d => d,
        },
        Plan::FastOpen(target) => {
            let known = super::fds::get(fd);
            super::fds::connecting(fd);
            // SAFETY: forwarded contract.
            match unsafe { tunnel(fd, addr, alen, target, true, known) } {
                Detour::Done(_) => raw_send(fd, buf, n, flags),
                Detour::Wait(w) => Detour::Wait(w),
                Detour::Fail(e) => Detour::Fail(e),
                _ => Detour::Bypass(Bypass::NotApplicable),
            }
        }
    }
}

/// # Safety
/// sendmsg(2)'s contract.
pub unsafe fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int, ctx: &mut Ctx) -> Detour<ssize_t> {
    // SAFETY: msg is the caller's valid msghdr (or null, which libc rejects with EFAULT).
    let Some(m) = (unsafe { msg.as_ref() }) else { return Detour::Bypass(Bypass::NotApplicable) };
    if m.msg_name.is_null() {
        if super::udp::marked(fd) {
            // SAFETY: the msghdr's buffers are readable (contract).
            if let Some(d) = unsafe { super::udp::relay::send(fd, None, m.msg_iov, m.msg_iovlen, m.msg_control, m.msg_controllen, flags) } {
                return d;
            }
        }
        if crate::dns::wire::marked(fd) {
            // SAFETY: the msghdr's buffers are readable (contract).
            if let Some(d) = unsafe { crate::dns::wire::send(fd, m.msg_iov, m.msg_iovlen, m.msg_control, m.msg_controllen, flags) } {
                return d;
            }
        }
        return pending::gate(fd, ctx, Gate::Send(flags));
    }
    // SAFETY: msg_name points to msg_namelen bytes (sendmsg's contract).
    match unsafe { plan(fd, flags, m.msg_name.cast(), m.msg_namelen, iov_of(m)) } {
        Plan::Libc => Detour::Bypass(Bypass::NotTailnet),
        Plan::Fail(e) => Detour::Fail(e),
        // SAFETY: the msghdr's buffers are readable (contract).
        Plan::Answer(server) => unsafe { answer(fd, server, iov_of(m)) },
        // SAFETY: the msghdr's buffers are readable (contract).
        Plan::Udp(t, dest) => unsafe { super::udp::relay::send(fd, Some((t, dest)), m.msg_iov, m.msg_iovlen, m.msg_control, m.msg_controllen, flags) }
            .unwrap_or(Detour::Fail(Errno(libc::ENETUNREACH))),
        // TCP Fast Open through sendmsg: rare enough to refuse rather than emulate (the
        // kernel's own answer for a socket that cannot do it is EOPNOTSUPP).
        Plan::FastOpen(_) => Detour::Fail(Errno(libc::EOPNOTSUPP)),
    }
}

/// sendmmsg(2): every destination is checked. When every message is the kernel's, the call is;
/// otherwise the messages are sent one by one (each `msg_len` set as the kernel sets it): a
/// DNS question for a tailnet name answered here, a message on a DNS socket of ours to its
/// server, the others by the kernel; the messages before the first refused one are sent (as
/// the kernel reports a partial batch), a refused first one fails the call.
///
/// # Safety
/// sendmmsg(2)'s contract.
pub unsafe fn sendmmsg(fd: c_int, msgs: *mut mmsghdr, vlen: c_uint, flags: c_int, ctx: &mut Ctx) -> Detour<c_int> {
    if msgs.is_null() || vlen == 0 {
        return Detour::Bypass(Bypass::NotApplicable);
    }
    let relayed = super::udp::marked(fd);
    let ours = crate::dns::wire::marked(fd) || relayed;
    let n = vlen.min(1024) as usize;
    let mut named = false;
    let mut plans = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: msgs holds vlen entries (contract).
        let m = unsafe { &(*msgs.add(i)).msg_hdr };
        if m.msg_name.is_null() {
            plans.push(None);
            continue;
        }
        named = true;
        // The call's flags apply to every message: MSG_FASTOPEN (a connect to that address)
        // and MSG_MORE are judged as for sendmsg.
        // SAFETY: msg_name points to msg_namelen bytes (contract).
        plans.push(Some(unsafe { plan(fd, flags, m.msg_name.cast(), m.msg_namelen, iov_of(m)) }));
    }
    if plans.iter().all(|p| matches!(p, Some(Plan::Libc) | None)) && !ours {
        if named {
            return Detour::Bypass(Bypass::NotTailnet);
        }
        return pending::gate(fd, ctx, Gate::Send(flags));
    }
    let mut sent = 0usize;
    for (i, p) in plans.into_iter().enumerate() {
        // SAFETY: msgs holds vlen entries (contract).
        let e = unsafe { &mut *msgs.add(i) };
        let m = &e.msg_hdr;
        let d: Detour<ssize_t> = match p {
            // SAFETY: the msghdr's buffers are readable (contract).
            None if relayed => match unsafe { super::udp::relay::send(fd, None, m.msg_iov, m.msg_iovlen, m.msg_control, m.msg_controllen, flags) } {
                Some(d) => d,
                None => kernel_sendmsg(fd, m, flags),
            },
            // SAFETY: the msghdr's buffers are readable (contract).
            None if ours => match unsafe { crate::dns::wire::send(fd, m.msg_iov, m.msg_iovlen, m.msg_control, m.msg_controllen, flags) } {
                Some(d) => d,
                None => kernel_sendmsg(fd, m, flags),
            },
            Some(Plan::Udp(t, dest)) => {
                // SAFETY: the msghdr's buffers are readable (contract).
                unsafe { super::udp::relay::send(fd, Some((t, dest)), m.msg_iov, m.msg_iovlen, m.msg_control, m.msg_controllen, flags) }
                    .unwrap_or(Detour::Fail(Errno(libc::ENETUNREACH)))
            }
            None | Some(Plan::Libc) => kernel_sendmsg(fd, m, flags),
            // SAFETY: the msghdr's buffers are readable (contract).
            Some(Plan::Answer(server)) => match unsafe { answer(fd, server, iov_of(m)) } {
                Detour::Bypass(_) => kernel_sendmsg(fd, m, flags),
                d => d,
            },
            Some(Plan::Fail(err)) => Detour::Fail(err),
            Some(Plan::FastOpen(_)) => Detour::Fail(Errno(libc::EOPNOTSUPP)),
        };
        match d {
            Detour::Done(k) => {
                e.msg_len = k as c_uint;
                sent += 1;
            }
            Detour::Fail(err) if sent == 0 => return Detour::Fail(err),
            _ => break,
        }
    }
    Detour::Done(sent as c_int)
}

/// One message of a batch, by the kernel (marked under the supervisor is not possible for
/// sendmsg: its filter looks at it, as at the program's own).
fn kernel_sendmsg(fd: c_int, m: &msghdr, flags: c_int) -> Detour<ssize_t> {
    match tsproxy_core::syscall!(SYS_sendmsg, fd, m as *const msghdr, flags) {
        Ok(k) => Detour::Done(k as ssize_t),
        Err(err) => Detour::Fail(Errno::of(&err)),
    }
}

/// Where a msghdr's bytes are.
fn iov_of(m: &msghdr) -> DatagramAt {
    DatagramAt::Iov(m.msg_iov as u64, m.msg_iovlen as u64)
}

/// Inside tsproxy (libc's work on our behalf, or a signal handler of the program's that runs
/// while this thread is in a hook): libc, except that a datagram to a tailnet destination, or a
/// DNS question for a tailnet name, is refused. Takes no lock (the outer frame may hold one).
///
/// # Safety
/// `addr` is null or points to `alen` readable bytes; `data` describes the buffers of this
/// very send (readable, as the kernel is about to read them).
pub unsafe fn sendto_nested(fd: c_int, addr: *const sockaddr, alen: socklen_t, data: DatagramAt) -> Detour<ssize_t> {
    // SAFETY: forwarded contract.
    match unsafe { sa::read(addr, alen) }.map(|d| (d, super::decide_nested(d))) {
        Some((_, Route::Proxy(_) | Route::Refuse(..))) => Detour::Fail(Errno(libc::ENETUNREACH)),
        // SAFETY: forwarded contract (`data` is this send's own buffers).
        Some((d, Route::Direct(_))) if d.port() == route::DNS_PORT && unsafe { dns_refused(fd, d, data) } => Detour::Fail(Errno(libc::ENETUNREACH)),
        _ => Detour::Bypass(Bypass::Reentered),
    }
}

/// As `sendto_nested`, for sendmsg.
///
/// # Safety
/// `msg` is null or a valid msghdr.
pub unsafe fn sendmsg_nested(fd: c_int, msg: *const msghdr) -> Detour<ssize_t> {
    // SAFETY: contract.
    match unsafe { msg.as_ref() } {
        // SAFETY: msg_name points to msg_namelen bytes (contract).
        Some(m) if !m.msg_name.is_null() => unsafe { sendto_nested(fd, m.msg_name.cast(), m.msg_namelen, iov_of(m)) },
        _ => Detour::Bypass(Bypass::Reentered),
    }
}

/// As `sendto_nested`, for sendmmsg: any message refused fails the whole call.
///
/// # Safety
/// `msgs` is null or holds `vlen` valid mmsghdrs.
pub unsafe fn sendmmsg_nested(fd: c_int, msgs: *const mmsghdr, vlen: c_uint) -> Detour<c_int> {
    if msgs.is_null() {
        return Detour::Bypass(Bypass::Reentered);
    }
    for i in 0..vlen.min(1024) as usize {
        // SAFETY: msgs holds vlen entries (contract).
        let m = unsafe { &(*msgs.add(i)).msg_hdr };
        // SAFETY: m is a valid msghdr (contract).
        if let Detour::Fail(e) = unsafe { sendmsg_nested(fd, m) } {
            return Detour::Fail(e);
        }
    }
    Detour::Bypass(Bypass::Reentered)
}

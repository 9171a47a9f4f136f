//! The datagrams themselves: sends get the §7 header in front, receives from the relay lose it.
//! A send is one system call: a small datagram without control data (up to `FLAT_MAX` with its
//! header) is copied behind the header into a stack buffer and sent with sendto (the kernel's
//! cheapest path, as for a plain send of the same bytes); a larger one, or one with control
//! data, is one sendmsg with the header as an extra iovec (the program's bytes not copied). A
//! socket connected through the relay sends without an address (the kernel's cached route).
use super::{ensure, with, Look};
use crate::boundary::{Ctx, Detour};
use crate::dns::wire::Got;
use libc::{c_int, c_void, iovec, msghdr, socklen_t, ssize_t};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use tsproxy_core::{sockaddr as sa, socks5, sys, syscall, Errno, Target};

pub use tsproxy_core::sys::local_addr;

/// Same endpoint (an IPv4 relay seen through a dual-stack socket as v4-mapped)?
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && tsproxy_core::cidr::unmap(a.ip()) == tsproxy_core::cidr::unmap(b.ip())
}

/// Sum of the iovecs' lengths.
///
/// # Safety
/// `iov` holds `n` readable iovecs.
unsafe fn total(iov: *const iovec, n: usize) -> usize {
    (0..n)
        // SAFETY: the caller's contract.
        .map(|i| unsafe { std::ptr::read_unaligned(iov.add(i)) }.iov_len)
        .fold(0usize, |a, b| a.saturating_add(b))
}

/// A datagram of the program's on `fd`: to `to` (target, the address the program gave), or,
/// without one, to the destination the socket is connected to through the relay. None: the
/// socket is not connected through the relay (the kernel answers the call).
///
/// # Safety
/// `iov` holds `n` readable iovecs; `control`/`clen` are the caller's control data (or
/// null/0).
pub unsafe fn send(
    fd: c_int,
    to: Option<(Target, SocketAddr)>,
    iov: *const iovec,
    n: usize,
    control: *mut c_void,
    clen: usize,
    flags: c_int,
) -> Option<Detour<ssize_t>> {
    if n > 1023 {
        return Some(Detour::Fail(Errno(libc::EMSGSIZE)));
    }
    // A datagram naming its destination brings its own header; a connected socket's comes
    // with the association's look (`route`), taken once per send.
    let mut hdr = [0u8; socks5::UDP_HEADER_MAX];
    let named = match &to {
        Some((t, _)) => match socks5::udp_header(t, &mut hdr) {
            Ok(h) => Some(h),
            Err(e) => {
                crate::log::log!(Error, "udp send fd={fd} {t}: {e:?}; refused");
                return Some(Detour::Fail(Errno(libc::EINVAL)));
            }
        },
        None => None,
    };
    // SAFETY: the caller's contract.
    let len = unsafe { total(iov, n) };
    if named.is_some_and(|h| len.saturating_add(h) > socks5::UDP_MAX) {
        // As a real socket answers a datagram larger than it can send (and before associating).
        return Some(Detour::Fail(Errno(libc::EMSGSIZE)));
    }
    let note = to.as_ref().map(|(t, d)| (t, *d));
    for attempt in 0..2 {
        let r = match super::route(fd, note, named.is_none()) {
            Look::Live(r) => r,
            Look::NoPeer => return None,
            Look::Stale => {
                // No association yet, or its control connection is gone: (re)associate, then
                // look again. A send without an address needs one already (connected through
                // the relay); none means the socket is not ours.
                let why = match &to {
                    Some((t, _)) => t.to_string(),
                    None => with(fd, |a| a.peer.as_ref().map(|p| p.target.to_string())).flatten()?,
                };
                if let Err(e) = ensure(fd, &format_args!("send {why}")) {
                    return Some(Detour::Fail(e));
                }
                match super::route(fd, note, named.is_none()) {
                    Look::Live(r) => r,
                    Look::NoPeer => return None,
                    Look::Stale => return Some(Detour::Fail(Errno(libc::ENETUNREACH))),
                }
            }
        };
        let hlen = match named {
            Some(h) => h,
            None => {
                hdr = r.hdr;
                r.hlen
            }
        };
        if len.saturating_add(hlen) > socks5::UDP_MAX {
            // As a real socket answers a datagram larger than it can send.
            return Some(Detour::Fail(Errno(libc::EMSGSIZE)));
        }
        let mut to_sa = r.to;
        let flags = flags & !libc::MSG_FASTOPEN;
        // SAFETY: the caller's contract (iov holds n readable iovecs).
        let flat_ok = clen == 0 && len.saturating_add(hlen) <= FLAT_MAX && n <= 8 && unsafe { readable(iov, n) };
        if flat_ok {
            // A small datagram without control data: header and payload copied into one buffer
            // and sent with sendto — cheaper for the kernel than importing a msghdr and two
            // iovecs (the same datagram on the wire).
            let mut flat = [std::mem::MaybeUninit::<u8>::uninit(); FLAT_MAX];
            let base = flat.as_mut_ptr().cast::<u8>();
            // SAFETY: hlen <= UDP_HEADER_MAX bytes of hdr into the start of flat (FLAT_MAX >=
            // len + hlen).
            unsafe { std::ptr::copy_nonoverlapping(hdr.as_ptr(), base, hlen) };
            // SAFETY: iov holds n readable iovecs (contract) of len bytes in all, which fit
            // after the header.
            unsafe { gather(iov, n, base.add(hlen)) };
            let (name, nl) = match to_sa.as_ref() {
                Some((sa, l)) => ((sa as *const libc::sockaddr_storage) as usize, *l as usize),
                None => (0, 0),
            };
            match syscall!(SYS_sendto, fd, base, len + hlen, flags, name, nl) {
                Ok(k) => return Some(Detour::Done((k as usize).saturating_sub(hlen) as ssize_t)),
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) && attempt == 0 => {
                    super::relay_gone(fd);
                    continue;
                }
                Err(e) => return Some(Detour::Fail(Errno::of(&e))),
            }
        }
        // SAFETY: the caller's contract (iov holds n readable iovecs); hdr outlives the call.
        let mut iovs = unsafe { HeadIovs::new(hdr.as_mut_ptr(), hlen, iov, n) };
        // SAFETY: all-zero is a valid msghdr.
        let mut m: msghdr = unsafe { std::mem::zeroed() };
        if let Some((sa, l)) = to_sa.as_mut() {
            m.msg_name = (sa as *mut libc::sockaddr_storage).cast();
            m.msg_namelen = *l;
        }
        m.msg_iov = iovs.as_mut_ptr();
        m.msg_iovlen = n + 1;
        m.msg_control = control;
        m.msg_controllen = clen;
        match syscall!(SYS_sendmsg, fd, &m as *const msghdr, flags) {
            Ok(k) => return Some(Detour::Done((k as usize).saturating_sub(hlen) as ssize_t)),
            // The relay is gone (its port answered "unreachable"): associate again, once.
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) && attempt == 0 => super::relay_gone(fd),
            Err(e) => return Some(Detour::Fail(Errno::of(&e))),
        }
    }
    Some(Detour::Fail(Errno(libc::ENETUNREACH)))
}

/// The SOCKS5 UDP header's iovec followed by the caller's `n`: on the stack up to 7 of the
/// caller's (the common case), else on the heap. Sends put the header in front of the payload,
/// receives take it off into its own buffer.
struct HeadIovs {
    small: [iovec; 8],
    big: Vec<iovec>,
}

impl HeadIovs {
    /// # Safety
    /// `iov` holds `n` readable iovecs; `head` stays valid for `hlen` bytes while the result
    /// is used.
    unsafe fn new(head: *mut u8, hlen: usize, iov: *const iovec, n: usize) -> HeadIovs {
        const NONE: iovec = iovec { iov_base: std::ptr::null_mut(), iov_len: 0 };
        let mut h = HeadIovs { small: [NONE; 8], big: Vec::new() };
        let all: &mut [iovec] = if n < 8 {
            &mut h.small[..n + 1]
        } else {
            h.big.resize(n + 1, NONE);
            &mut h.big
        };
        all[0] = iovec { iov_base: head.cast(), iov_len: hlen };
        for (i, slot) in all[1..].iter_mut().enumerate() {
            // SAFETY: the caller's contract: iov holds n readable iovecs.
            *slot = unsafe { std::ptr::read_unaligned(iov.add(i)) };
        }
        h
    }

    /// The array for a msghdr (header first); valid while `self` is neither moved nor dropped.
    fn as_mut_ptr(&mut self) -> *mut iovec {
        if self.big.is_empty() {
            self.small.as_mut_ptr()
        } else {
            self.big.as_mut_ptr()
        }
    }
}

/// Datagrams up to this size with their header (and no control data) are sent from one
/// buffer on the stack (an MTU's worth: DNS, QUIC, games, metrics).
const FLAT_MAX: usize = 1536;

/// Does every non-empty iovec have a buffer? (A null one is the kernel's EFAULT to give: such a
/// send goes the sendmsg way.)
///
/// # Safety
/// `iov` holds `n` readable iovecs.
unsafe fn readable(iov: *const iovec, n: usize) -> bool {
    // SAFETY: the caller's contract.
    (0..n).all(|i| unsafe { std::ptr::read_unaligned(iov.add(i)) }.iov_len == 0 || !unsafe { std::ptr::read_unaligned(iov.add(i)) }.iov_base.is_null())
}

/// Copy the bytes of `n` iovecs to `dst`, in order.
///
/// # Safety
/// `iov` holds `n` readable iovecs; `dst` has room for all their bytes.
unsafe fn gather(iov: *const iovec, n: usize, dst: *mut u8) {
    let mut at = 0;
    for i in 0..n {
        // SAFETY: the caller's contract.
        let v = unsafe { std::ptr::read_unaligned(iov.add(i)) };
        if v.iov_len > 0 && !v.iov_base.is_null() {
            // SAFETY: iov_base holds iov_len readable bytes; dst has room (contract).
            unsafe { std::ptr::copy_nonoverlapping(v.iov_base.cast::<u8>(), dst.add(at), v.iov_len) };
            at += v.iov_len;
        }
    }
}

/// Copy `src` into the caller's iovecs: how many bytes fit.
///
/// # Safety
/// `iov` holds `n` iovecs of writable memory.
unsafe fn scatter(src: &[u8], iov: *const iovec, n: usize) -> usize {
    let mut done = 0;
    for i in 0..n {
        if done == src.len() {
            break;
        }
        // SAFETY: the caller's contract.
        let v = unsafe { std::ptr::read_unaligned(iov.add(i)) };
        let k = v.iov_len.min(src.len() - done);
        if k > 0 && !v.iov_base.is_null() {
            // SAFETY: iov_base holds iov_len writable bytes (contract); k <= both lengths.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr().add(done), v.iov_base.cast::<u8>(), k) };
            done += k;
        }
    }
    done
}

/// Consume the datagram a MSG_PEEK looked at (it is being dropped).
fn drop_one(fd: c_int) {
    let mut b = [0u8; 1];
    let _ = syscall!(SYS_recvfrom, fd, b.as_mut_ptr(), 1usize, libc::MSG_DONTWAIT, 0usize, 0usize);
}

/// What a receive does with one datagram that arrived.
enum Seen {
    Give(Got),
    Drop,
}

/// A receive on `fd`, a socket of ours. None: not ours after all, or a call we do not
/// interpret (MSG_ERRQUEUE): the kernel answers. Waits for a blocking socket at the boundary.
///
/// # Safety
/// `iov` holds `n` writable iovecs; `control` has `clen` writable bytes (or is null).
pub unsafe fn recv(fd: c_int, iov: *const iovec, n: usize, control: *mut c_void, clen: usize, flags: c_int, ctx: &mut Ctx) -> Option<Detour<Got>> {
    if flags & libc::MSG_ERRQUEUE != 0 || n > 1023 {
        return None;
    }
    let (relay, peer) = with(fd, |a| (a.relay, a.peer.as_ref().filter(|p| matches!(p.target, Target::Ip(_))).map(|p| (p.hdr, p.hlen, p.addr))))?;
    if crate::net::rx::interrupted(ctx) {
        return Some(Detour::Fail(Errno(libc::EINTR)));
    }
    // Asked only when nothing is queued (an event loop's receive finds a datagram: no syscall).
    let blocking = || flags & libc::MSG_DONTWAIT == 0 && sys::fcntl_getfl(fd).is_ok_and(|f| f & libc::O_NONBLOCK == 0);
    let mut scratch: Vec<u8> = Vec::new();
    for _ in 0..1024 {
        let r = match peer {
            // SAFETY: forwarded contract.
            Some((hdr, hlen, addr)) => unsafe { recv_connected(fd, iov, n, control, clen, flags, &hdr[..hlen], addr) },
            // SAFETY: forwarded contract.
            None => unsafe { recv_any(fd, iov, n, control, clen, flags, relay, &mut scratch) },
        };
        match r {
            Ok(Seen::Give(g)) => return Some(Detour::Done(g)),
            Ok(Seen::Drop) => {
                if flags & libc::MSG_PEEK != 0 {
                    drop_one(fd);
                }
                continue;
            }
            Err(e) if e == libc::EAGAIN && blocking() => {
                return Some(crate::net::rx::wait_readable(fd, ctx));
            }
            Err(e) => {
                if e == libc::ECONNREFUSED {
                    super::relay_gone(fd);
                }
                return Some(Detour::Fail(Errno(e)));
            }
        }
    }
    Some(Detour::Fail(Errno(libc::EAGAIN)))
}

/// A socket connected through the relay to an IP destination: the kernel takes the relay's
/// datagrams only, and their header is the one we send (the relay names the target as it was
/// asked), so it is received into a buffer of exactly its length and the payload straight into
/// the caller's buffers.
///
/// # Safety
/// As `recv`.
#[allow(clippy::too_many_arguments)]
unsafe fn recv_connected(
    fd: c_int,
    iov: *const iovec,
    n: usize,
    control: *mut c_void,
    clen: usize,
    flags: c_int,
    want: &[u8],
    from: SocketAddr,
) -> Result<Seen, i32> {
    let mut hdr = [0u8; socks5::UDP_HEADER_MAX];
    // SAFETY: the caller's contract (iov holds n readable iovecs); hdr outlives the call.
    let mut iovs = unsafe { HeadIovs::new(hdr.as_mut_ptr(), want.len(), iov, n) };
    // SAFETY: all-zero is a valid msghdr.
    let mut m: msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = iovs.as_mut_ptr();
    m.msg_iovlen = n + 1;
    m.msg_control = control;
    m.msg_controllen = clen;
    let k = syscall!(SYS_recvmsg, fd, &mut m as *mut msghdr, flags | libc::MSG_DONTWAIT).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))? as usize;
    if k < want.len() || hdr[..want.len()] != *want {
        return Ok(Seen::Drop);
    }
    Ok(Seen::Give(Got { n: k - want.len(), flags: m.msg_flags, from, controllen: m.msg_controllen }))
}

/// Any other socket of ours: the datagram into a scratch buffer, then: from the relay, its
/// header judged and taken off; from anyone else (a socket that also talks to the internet),
/// given as it is — never as a tailnet peer's.
///
/// # Safety
/// As `recv`.
#[allow(clippy::too_many_arguments)]
unsafe fn recv_any(
    fd: c_int,
    iov: *const iovec,
    n: usize,
    control: *mut c_void,
    clen: usize,
    flags: c_int,
    relay: SocketAddr,
    scratch: &mut Vec<u8>,
) -> Result<Seen, i32> {
    const CAP: usize = 65536;
    if scratch.capacity() < CAP {
        scratch.reserve_exact(CAP);
    }
    let mut one = iovec { iov_base: scratch.as_mut_ptr().cast(), iov_len: CAP };
    // SAFETY: all-zero is a valid sockaddr_storage / msghdr.
    let mut src: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut m: msghdr = unsafe { std::mem::zeroed() };
    m.msg_name = (&mut src as *mut libc::sockaddr_storage).cast();
    m.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as socklen_t;
    m.msg_iov = &mut one;
    m.msg_iovlen = 1;
    m.msg_control = control;
    m.msg_controllen = clen;
    // MSG_TRUNC is ours to answer from the datagram's length; the scratch buffer holds any.
    let k = syscall!(SYS_recvmsg, fd, &mut m as *mut msghdr, (flags & !libc::MSG_TRUNC) | libc::MSG_DONTWAIT)
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))? as usize;
    let k = k.min(CAP);
    // SAFETY: the kernel wrote k bytes into the scratch buffer.
    let data = unsafe { std::slice::from_raw_parts(scratch.as_ptr(), k) };
    // SAFETY: the kernel wrote msg_namelen bytes of the sender's address.
    let from = unsafe { sa::read((&src as *const libc::sockaddr_storage).cast(), m.msg_namelen) };
    let (payload, from) = match from {
        Some(f) if same(f, relay) => {
            let Ok((who, h)) = socks5::parse_udp(data) else { return Ok(Seen::Drop) };
            let Some(who) = with(fd, |a| {
                match who {
                    socks5::UdpFrom::Ip(ip) => {
                        // A relay that answers a name with the address it resolved (dante): the
                        // placeholder, when that name is the only destination.
                        if a.ips == 0 && a.names.len() == 1 {
                            Some(a.names[0].2)
                        } else {
                            Some(ip)
                        }
                    }
                    socks5::UdpFrom::Name(nm, p) => a.names.iter().find(|(m, q, _)| m.as_bytes().eq_ignore_ascii_case(nm) && *q == p).map(|x| x.2),
                }
                // A socket connected through the relay takes its destination's datagrams only.
                .filter(|w| !a.peer.as_ref().is_some_and(|p| !same(p.addr, *w)))
            })
            .flatten() else {
                return Ok(Seen::Drop);
            };
            (&data[h..], who)
        }
        Some(f) => (data, f),
        None => (data, SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
    };
    // SAFETY: the caller's contract.
    let cap = unsafe { total(iov, n) };
    // SAFETY: the caller's contract.
    let got = unsafe { scatter(payload, iov, n) };
    let mut mf = m.msg_flags & !libc::MSG_TRUNC;
    if payload.len() > cap {
        mf |= libc::MSG_TRUNC;
    }
    let ret = if flags & libc::MSG_TRUNC != 0 { payload.len() } else { got };
    Ok(Seen::Give(Got { n: ret, flags: mf, from, controllen: m.msg_controllen }))
}

//! Who owns the proxy's end of a connection to a proxy on loopback: checked before tsproxy
//! writes anything on it (the SOCKS5 greeting, credentials, a CONNECT request).
//!
//! Ports 1080 and 3128 are unprivileged: while the real proxy is not listening (before
//! tailscaled starts, during a restart) any local user can listen there and would receive the
//! proxy password and every tailnet destination. So, for a proxy on a loopback address
//! (127.0.0.0/8, ::1, ::ffff:127.x), the kernel is asked (NETLINK_SOCK_DIAG, inet_diag, an exact
//! 4-tuple lookup) which uid owns the socket at the other end, and only root, this process's
//! real and effective uid and the uids of `TSPROXY_PROXY_OWNER` are accepted ([`Owners`]).
//!
//! The netlink codec ([`request`], [`parse`]) is pure; [`lookup`] and [`vet`] do the I/O with raw
//! system calls only (they run inside the preload library's hooks).
//!
//! A peer the kernel still holds as a request socket (`TCP_NEW_SYN_RECV`, shown as
//! `SYN_RECV`) or a `TIME_WAIT` one is reported with uid 0, which says nothing: then the
//! listening socket on the proxy's address and port is looked up instead (the one the request
//! belongs to; `SO_REUSEPORT` groups share one owner, the kernel enforces that).
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

/// `TSPROXY_PROXY_OWNER`: which owners of a loopback proxy's socket are trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owners {
    /// Root, the process's real and effective uid, and these uids (the default: none more).
    Uids(Vec<u32>),
    /// `any`: no check at all.
    Any,
}

impl Default for Owners {
    fn default() -> Self {
        Owners::Uids(Vec::new())
    }
}

impl Owners {
    /// Parse the key's value: `any`, or a comma-separated list of numeric uids. User names are
    /// not taken: resolving one needs NSS, which from inside the library's hooks would re-enter
    /// them (and may load modules, open sockets, talk to nscd or sssd); `id -u NAME` gives the
    /// number.
    pub fn parse(v: &str) -> Result<Owners, String> {
        let v = v.trim();
        if v.eq_ignore_ascii_case("any") {
            return Ok(Owners::Any);
        }
        let mut uids = Vec::new();
        for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match p.parse::<u32>() {
                Ok(u) if u != u32::MAX => uids.push(u),
                _ => return Err(format!("{p:?} is not a numeric uid (use `id -u NAME`); expected a comma-separated list of uids, or any")),
            }
        }
        Ok(Owners::Uids(uids))
    }

    /// May a proxy socket owned by `uid` hear us, for a process of real uid `ruid` and
    /// effective uid `euid`?
    pub fn accepts(&self, uid: u32, ruid: u32, euid: u32) -> bool {
        match self {
            Owners::Any => true,
            Owners::Uids(l) => uid == 0 || uid == ruid || uid == euid || l.contains(&uid),
        }
    }
}

/// Is the proxy at `addr` one whose owner is checked (a loopback address, IPv4-mapped too)?
pub fn checked(addr: &SocketAddr) -> bool {
    crate::cidr::unmap(addr.ip()).is_loopback()
}

const NLMSG_HDR: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
/// nlmsghdr + inet_diag_req_v2.
pub const REQ_LEN: usize = NLMSG_HDR + 56;
/// nlmsghdr + inet_diag_msg (up to idiag_inode).
const MSG_MIN: usize = NLMSG_HDR + 72;
/// TCP states as inet_diag reports them.
const TCP_SYN_RECV: u8 = 3;
const TCP_TIME_WAIT: u8 = 6;
const TCP_LISTEN: u8 = 10;
const TCP_NEW_SYN_RECV: u8 = 12;

/// What the kernel said about one socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    /// `idiag_state` (TCP_ESTABLISHED = 1, TCP_LISTEN = 10, ...).
    pub state: u8,
    /// `idiag_uid`.
    pub uid: u32,
}

impl Found {
    /// Does the uid reported say who owns the socket? Request sockets and TIME_WAIT ones are
    /// reported with uid 0 whoever listened.
    pub fn owner_known(&self) -> bool {
        !matches!(self.state, TCP_SYN_RECV | TCP_TIME_WAIT | TCP_NEW_SYN_RECV)
    }
}

fn put_addr(out: &mut [u8], ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => out[..4].copy_from_slice(&a.octets()),
        IpAddr::V6(a) => out[..16].copy_from_slice(&a.octets()),
    }
}

/// The SOCK_DIAG_BY_FAMILY request for the TCP socket whose own end is `local` and whose
/// peer is `remote` (same family; an unspecified `remote` with port 0 asks for the listener
/// on `local`). Sequence number `seq`.
pub fn request(local: SocketAddr, remote: SocketAddr, seq: u32) -> [u8; REQ_LEN] {
    let mut b = [0u8; REQ_LEN];
    b[0..4].copy_from_slice(&(REQ_LEN as u32).to_ne_bytes());
    b[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    b[8..12].copy_from_slice(&seq.to_ne_bytes());
    // pid 0: the kernel.
    let r = &mut b[NLMSG_HDR..];
    r[0] = if local.is_ipv4() { libc::AF_INET as u8 } else { libc::AF_INET6 as u8 };
    r[1] = libc::IPPROTO_TCP as u8;
    // ext 0, pad 0; states: all (an exact lookup ignores them).
    r[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    // inet_diag_sockid at 8: sport, dport (network order), src[16], dst[16], if, cookie[2].
    let id = &mut r[8..];
    id[0..2].copy_from_slice(&local.port().to_be_bytes());
    id[2..4].copy_from_slice(&remote.port().to_be_bytes());
    put_addr(&mut id[4..20], local.ip());
    put_addr(&mut id[20..36], remote.ip());
    // if 0; cookie INET_DIAG_NOCOOKIE (~0, ~0): no cookie check.
    id[40..48].copy_from_slice(&[0xff; 8]);
    b
}

/// Read the kernel's answer to [`request`] with sequence `seq`: `Ok(Some)` the socket,
/// `Ok(None)` no such socket (ENOENT), `Err(errno)` the lookup itself failed (EINVAL,
/// EOPNOTSUPP...) or the answer is not one.
pub fn parse(buf: &[u8], seq: u32) -> Result<Option<Found>, i32> {
    let mut at = 0;
    while buf.len() - at >= NLMSG_HDR {
        let m = &buf[at..];
        let len = u32::from_ne_bytes([m[0], m[1], m[2], m[3]]) as usize;
        let ty = u16::from_ne_bytes([m[4], m[5]]);
        let s = u32::from_ne_bytes([m[8], m[9], m[10], m[11]]);
        if len < NLMSG_HDR || len > m.len() {
            return Err(libc::EBADMSG);
        }
        if s == seq {
            match ty {
                NLMSG_ERROR if len >= NLMSG_HDR + 4 => {
                    let e = -i32::from_ne_bytes([m[16], m[17], m[18], m[19]]);
                    return match e {
                        libc::ENOENT => Ok(None),
                        0 => Err(libc::EBADMSG),
                        e => Err(e),
                    };
                }
                NLMSG_DONE => return Ok(None),
                SOCK_DIAG_BY_FAMILY if len >= MSG_MIN => {
                    let d = &m[NLMSG_HDR..];
                    return Ok(Some(Found { state: d[1], uid: u32::from_ne_bytes([d[64], d[65], d[66], d[67]]) }));
                }
                _ => return Err(libc::EBADMSG),
            }
        }
        // Align to 4 as NLMSG_ALIGN does.
        at += (len + 3) & !3;
    }
    Err(libc::EBADMSG)
}

static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// Ask the kernel about the TCP socket with own end `local` and peer `remote` (see
/// [`request`]). Raw system calls only: a fresh NETLINK_SOCK_DIAG socket, one request, one
/// answer (the kernel answers within the send, so the receive never waits), closed again.
pub fn lookup(local: SocketAddr, remote: SocketAddr) -> io::Result<Option<Found>> {
    let fd = crate::syscall!(SYS_socket, libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, libc::NETLINK_SOCK_DIAG)? as i32;
    let r = lookup_on(fd, local, remote);
    let _ = crate::syscall!(SYS_close, fd);
    r
}

fn lookup_on(fd: i32, local: SocketAddr, remote: SocketAddr) -> io::Result<Option<Found>> {
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let req = request(local, remote, seq);
    // SAFETY: all-zero is a valid sockaddr_nl (nl_pid 0: the kernel).
    let mut nl: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    nl.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    let n = crate::syscall!(SYS_sendto, fd, req.as_ptr(), req.len(), 0, &nl as *const libc::sockaddr_nl, std::mem::size_of::<libc::sockaddr_nl>())?;
    if n as usize != req.len() {
        return Err(io::Error::from_raw_os_error(libc::EIO));
    }
    let mut buf = [0u8; 512];
    loop {
        let n = match crate::sys::recv(fd, &mut buf, libc::MSG_DONTWAIT) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        return parse(&buf[..n], seq).map_err(io::Error::from_raw_os_error);
    }
}

/// How [`vet`] judged a connection to a proxy.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write: the proxy is not on loopback, the check is off (`any`), or its owner is accepted.
    Pass,
    /// The connection is not made yet (SYN_SENT): wait for POLLOUT and ask again.
    Pending,
    /// The connection failed (this errno): as a failed connect.
    ConnectFailed(i32),
    /// The proxy's socket belongs to this uid (None: no owner found), which is not accepted.
    Refused(Option<u32>),
    /// The kernel could not be asked (sock_diag unavailable: EPROTONOSUPPORT, EACCES, ENOENT
    /// without inet_diag...): this errno. Fail closed.
    Unavailable(i32),
}

/// Judge the connection on `fd` (a TCP socket connecting or connected to `proxy`) before
/// anything is written on it. `owners` is the configuration; the process's uids are read here.
pub fn vet(fd: i32, proxy: SocketAddr, owners: &Owners) -> Verdict {
    if *owners == Owners::Any || !checked(&proxy) {
        return Verdict::Pass;
    }
    // Our own end's state: SYN_SENT is not a connection yet; anything but an established
    // (or half-closed) one is a failed connect.
    let mut info = [0u8; 8];
    let mut len = info.len() as libc::socklen_t;
    if crate::syscall!(SYS_getsockopt, fd, libc::IPPROTO_TCP, libc::TCP_INFO, info.as_mut_ptr(), &mut len as *mut libc::socklen_t).is_err() || len < 1 {
        return Verdict::ConnectFailed(libc::ECONNREFUSED);
    }
    match info[0] {
        2 => return Verdict::Pending, // TCP_SYN_SENT
        1 | 8 => {}                   // TCP_ESTABLISHED, TCP_CLOSE_WAIT
        _ => {
            let e = crate::sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR).unwrap_or(0);
            return Verdict::ConnectFailed(if e != 0 { e } else { libc::ECONNREFUSED });
        }
    }
    let Some(local) = crate::sys::local_addr(fd) else { return Verdict::ConnectFailed(libc::ECONNREFUSED) };
    let unmap = |a: SocketAddr| SocketAddr::new(crate::cidr::unmap(a.ip()), a.port());
    let (far, near) = (unmap(proxy), unmap(local));
    if far.is_ipv4() != near.is_ipv4() {
        return Verdict::Refused(None);
    }
    let found = match lookup(far, near) {
        Ok(Some(f)) if f.owner_known() => Some(f),
        // A request socket (or none, or TIME_WAIT): the listener on the proxy's address.
        Ok(_) => {
            let any = SocketAddr::new(if far.is_ipv4() { IpAddr::from([0u8; 4]) } else { IpAddr::from([0u16; 8]) }, 0);
            match lookup(far, any) {
                Ok(f) => f.filter(|f| f.state == TCP_LISTEN),
                Err(e) => return Verdict::Unavailable(crate::sys::code(&e)),
            }
        }
        Err(e) => return Verdict::Unavailable(crate::sys::code(&e)),
    };
    let (ruid, euid) = uids();
    match found {
        Some(f) if owners.accepts(f.uid, ruid, euid) => Verdict::Pass,
        Some(f) => Verdict::Refused(Some(f.uid)),
        None => Verdict::Refused(None),
    }
}

/// The process's real and effective uid (raw system calls).
pub fn uids() -> (u32, u32) {
    let r = crate::syscall!(SYS_getuid).map(|u| u as u32).unwrap_or(u32::MAX);
    let e = crate::syscall!(SYS_geteuid).map(|u| u as u32).unwrap_or(u32::MAX);
    (r, e)
}

static REFUSED_LOGGED: AtomicBool = AtomicBool::new(false);
static UNAVAILABLE_LOGGED: AtomicBool = AtomicBool::new(false);

/// True the first time in this process for a refusal (`unavailable` false) or a failed
/// lookup (true): such a line is logged at error level once, later ones at info.
pub fn first_time(unavailable: bool) -> bool {
    let f = if unavailable { &UNAVAILABLE_LOGGED } else { &REFUSED_LOGGED };
    !f.swap(true, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn owners_parse_and_rule() {
        assert_eq!(Owners::parse("any"), Ok(Owners::Any));
        assert_eq!(Owners::parse(" ANY "), Ok(Owners::Any));
        assert_eq!(Owners::parse("65534, 1000,"), Ok(Owners::Uids(vec![65534, 1000])));
        assert_eq!(Owners::parse(""), Ok(Owners::Uids(vec![])));
        assert!(Owners::parse("tsproxy-px").is_err());
        assert!(Owners::parse("-1").is_err());
        assert!(Owners::parse("4294967295").is_err());
        let d = Owners::default();
        assert!(d.accepts(0, 1000, 1000), "root");
        assert!(d.accepts(1000, 1000, 1001) && d.accepts(1001, 1000, 1001), "real and effective uid");
        assert!(!d.accepts(65534, 1000, 1000), "another user");
        assert!(Owners::Uids(vec![65534]).accepts(65534, 1000, 1000));
        assert!(Owners::Any.accepts(4242, 0, 0));
    }

    #[test]
    fn which_proxies_are_checked() {
        for a in ["127.0.0.1:1080", "127.9.9.9:1", "[::1]:1080", "[::ffff:127.0.0.1]:3128"] {
            assert!(checked(&sa(a)), "{a}");
        }
        for a in ["10.0.0.1:1080", "[fd00::1]:1080", "[::ffff:10.0.0.1]:1080", "0.0.0.0:1080"] {
            assert!(!checked(&sa(a)), "{a}");
        }
    }

    #[test]
    fn request_bytes_v4() {
        let b = request(sa("127.0.0.1:1080"), sa("127.0.0.2:40000"), 7);
        assert_eq!(u32::from_ne_bytes(b[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes(b[4..6].try_into().unwrap()), 20);
        assert_eq!(u16::from_ne_bytes(b[6..8].try_into().unwrap()), 1);
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 7);
        assert_eq!(&b[16..20], &[libc::AF_INET as u8, libc::IPPROTO_TCP as u8, 0, 0]);
        assert_eq!(&b[24..28], &1080u16.to_be_bytes().iter().chain(&40000u16.to_be_bytes()).copied().collect::<Vec<_>>()[..]);
        assert_eq!(&b[28..32], &[127, 0, 0, 1]);
        assert_eq!(&b[44..48], &[127, 0, 0, 2]);
        assert_eq!(&b[60..64], &[0; 4], "if");
        assert_eq!(&b[64..72], &[0xff; 8], "no cookie");
    }

    #[test]
    fn request_bytes_v6() {
        let b = request(sa("[::1]:1080"), sa("[::1]:5"), 1);
        assert_eq!(b[16], libc::AF_INET6 as u8);
        assert_eq!(&b[28..44], &std::net::Ipv6Addr::LOCALHOST.octets());
        assert_eq!(&b[44..60], &std::net::Ipv6Addr::LOCALHOST.octets());
    }

    fn reply(ty: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&0u16.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.extend_from_slice(body);
        v
    }

    fn diag_msg(state: u8, uid: u32) -> Vec<u8> {
        let mut d = vec![0u8; 72];
        d[0] = libc::AF_INET as u8;
        d[1] = state;
        d[64..68].copy_from_slice(&uid.to_ne_bytes());
        d[68..72].copy_from_slice(&12345u32.to_ne_bytes());
        d
    }

    #[test]
    fn parse_answers() {
        assert_eq!(parse(&reply(20, 9, &diag_msg(1, 65534)), 9), Ok(Some(Found { state: 1, uid: 65534 })));
        // With the attributes the kernel may append.
        let mut m = diag_msg(10, 0);
        m.extend_from_slice(&[8, 0, 1, 0, 0, 0, 0, 0]);
        assert_eq!(parse(&reply(20, 9, &m), 9), Ok(Some(Found { state: 10, uid: 0 })));
        let err = |e: i32| reply(2, 9, &[(-e).to_ne_bytes().as_slice(), &[0u8; 16]].concat());
        assert_eq!(parse(&err(libc::ENOENT), 9), Ok(None));
        assert_eq!(parse(&err(libc::EOPNOTSUPP), 9), Err(libc::EOPNOTSUPP));
        assert_eq!(parse(&reply(3, 9, &[0; 4]), 9), Ok(None));
        // Another sequence number first (skipped), then ours.
        let two = [reply(20, 8, &diag_msg(1, 7)), reply(20, 9, &diag_msg(1, 8))].concat();
        assert_eq!(parse(&two, 9), Ok(Some(Found { state: 1, uid: 8 })));
    }

    #[test]
    fn parse_rejects_garbage() {
        for b in [&[][..], &[1, 2, 3], &[0u8; 16], &reply(20, 9, &[0u8; 10])[..]] {
            assert!(parse(b, 9).is_err(), "{b:?}");
        }
        // A length past the buffer.
        let mut r = reply(20, 9, &diag_msg(1, 0));
        r[0] = 200;
        assert!(parse(&r, 9).is_err());
        // Any byte string: never a panic.
        for n in 0..300usize {
            let b: Vec<u8> = (0..n).map(|i| (i * 31 + n) as u8).collect();
            let _ = parse(&b, 9);
        }
    }

    #[test]
    fn request_socket_owner_is_unknown() {
        assert!(!Found { state: TCP_NEW_SYN_RECV, uid: 0 }.owner_known());
        assert!(!Found { state: TCP_SYN_RECV, uid: 0 }.owner_known());
        assert!(!Found { state: TCP_TIME_WAIT, uid: 0 }.owner_known());
        assert!(Found { state: 1, uid: 0 }.owner_known());
    }

    /// The real kernel: a listener of ours on loopback, a connection to it, its owner is us.
    #[test]
    fn kernel_reports_our_own_listener() {
        use std::os::fd::AsRawFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        let c = std::net::TcpStream::connect(a).unwrap();
        let (_s, _) = l.accept().unwrap();
        let me = uids().1;
        match lookup(a, c.local_addr().unwrap()) {
            Ok(Some(f)) => assert_eq!((f.state, f.uid), (1, me)),
            Ok(None) => panic!("the accepted socket was not found"),
            Err(e) => {
                eprintln!("sock_diag unavailable here ({e}): skipped");
                return;
            }
        }
        let any = SocketAddr::new(IpAddr::from([0u8; 4]), 0);
        assert_eq!(lookup(a, any).unwrap(), Some(Found { state: TCP_LISTEN, uid: me }));
        assert_eq!(vet(c.as_raw_fd(), a, &Owners::default()), Verdict::Pass);
        // A rule that trusts nobody but root and this uid passes us; one for another uid
        // (if we are root, root is always trusted, so only check as non-root).
        if me != 0 {
            assert_eq!(vet(c.as_raw_fd(), a, &Owners::Uids(vec![])), Verdict::Pass);
        }
    }

    /// A peer still held as a request socket (TCP_DEFER_ACCEPT keeps it one until data comes)
    /// reads as uid 0; the verdict comes from the listener instead.
    #[test]
    fn request_socket_falls_back_to_the_listener() {
        use std::os::fd::AsRawFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let secs: libc::c_int = 5;
        // SAFETY: a valid int option on a live socket.
        let r = unsafe { libc::setsockopt(l.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_DEFER_ACCEPT, (&secs as *const libc::c_int).cast(), 4) };
        assert_eq!(r, 0);
        let a = l.local_addr().unwrap();
        let c = std::net::TcpStream::connect(a).unwrap();
        let f = match lookup(a, c.local_addr().unwrap()) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("sock_diag unavailable here ({e}): skipped");
                return;
            }
        };
        let f = f.expect("the request socket is found");
        assert!(!f.owner_known(), "{f:?}");
        assert_eq!(f.uid, 0, "request sockets read as uid 0");
        assert_eq!(vet(c.as_raw_fd(), a, &Owners::default()), Verdict::Pass, "the listener is ours");
    }

    /// What one check costs: `vet` on an established loopback connection, N times (run with
    /// `cargo test -p tsproxy-core --release --lib peer_cost -- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn peer_cost() {
        use std::os::fd::AsRawFd;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        let c = std::net::TcpStream::connect(a).unwrap();
        let (_s, _) = l.accept().unwrap();
        let n = 20_000;
        let mut each: Vec<u128> = (0..n)
            .map(|_| {
                let t = std::time::Instant::now();
                assert_eq!(vet(c.as_raw_fd(), a, &Owners::default()), Verdict::Pass);
                t.elapsed().as_nanos()
            })
            .collect();
        each.sort_unstable();
        eprintln!("vet: n={n} p50={}ns p90={}ns p99={}ns", each[n / 2], each[n * 9 / 10], each[n * 99 / 100]);
    }
}

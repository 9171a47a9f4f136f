//! The DNS responder: tailnet names get placeholders (from the same table the supervisor reads
//! at connect time); every other question is forwarded, unchanged, to the server the program
//! asked. One thread, no thread per query: forwards wait in a bounded set polled with the
//! responder socket.
//!
//! Who may use it. The socket is on 127.0.0.1, where any local user can reach it; it answers
//! only:
//! - datagrams from sockets the supervisor itself redirected (their local address is in
//!   `dns_routes`, recorded when a supervised process connected them to port 53, sent a
//!   tailnet question to port 53 without connecting — `notify::redirect_questions`, musl's
//!   resolver — or sent to this address itself), and only while the program still holds
//!   that socket (`DnsRoute::live`: once it is closed, any local user could bind the
//!   address); their questions that are not about tailnet names are carried to the server
//!   recorded with them, and
//! - datagrams that start with the per-tree key (`KEY_MAGIC` + the key in hex), which the
//!   launcher hands to the command in `TSPROXY_SUPERVISOR_DNS_KEY`: the preload library's
//!   name registration. The answer is a plain DNS message;
//! - datagrams from a socket held by a process of the tree (a descendant of the command: the
//!   sender's socket is found by its address in /proc/net/udp{,6}, then among the
//!   descendants' descriptors): the preload library's registration as it is sent today,
//!   without the key. At most `PEER_CHECKS_PER_SEC` such checks a second (each reads /proc),
//!   so a flood from outside costs little. A daemon that left the tree (reparented) needs the
//!   key.
//!
//! Everything else is dropped. A client (a redirected process, by thread group, or the key
//! holders together) can add at most `NAMES_PER_CLIENT` names to the placeholder table;
//! past that, new names get SERVFAIL, so no client can exhaust the table for the others.
use super::log;
use super::notify::{lock, DnsRoute, Sup};
use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use tsproxy_core::config::LogLevel;
use tsproxy_core::{cidr, dns, names, route, syscall};

pub const KEY_LEN: usize = 16;
/// A keyed datagram: KEY_MAGIC, the key as 32 lower-case hex digits, then the DNS query.
pub const KEY_MAGIC: &[u8; 4] = b"TSK1";
/// New names one client may add to the placeholder table (of `names::SLOTS`).
pub const NAMES_PER_CLIENT: usize = 2048;
/// Forwarded questions waiting for their server at once; more are dropped (the client retries).
const MAX_FORWARDS: usize = 256;
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
/// Sender checks through /proc at most this often (per second).
const PEER_CHECKS_PER_SEC: u32 = 50;

pub fn new_key() -> std::io::Result<[u8; KEY_LEN]> {
    let mut k = [0u8; KEY_LEN];
    let n = syscall!(SYS_getrandom, k.as_mut_ptr(), KEY_LEN, 0)?;
    if n as usize != KEY_LEN {
        return Err(std::io::Error::from_raw_os_error(libc::EIO));
    }
    Ok(k)
}

pub fn key_hex(k: &[u8; KEY_LEN]) -> String {
    k.iter().map(|b| format!("{b:02x}")).collect()
}

/// The DNS message of a datagram carrying the key, None when it does not (compared in
/// constant time).
pub fn strip_key<'a>(pkt: &'a [u8], key_hex: &[u8]) -> Option<&'a [u8]> {
    let head = KEY_MAGIC.len() + key_hex.len();
    if pkt.len() < head || &pkt[..KEY_MAGIC.len()] != KEY_MAGIC {
        return None;
    }
    let diff = pkt[KEY_MAGIC.len()..head].iter().zip(key_hex).fold(0u8, |d, (a, b)| d | (a ^ b));
    (diff == 0).then_some(&pkt[head..])
}

/// Who is asking, for the per-client bound.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Client {
    Process(i32),
    KeyHolder,
}

/// The per-client bound on new names.
#[derive(Default)]
pub struct Quota {
    /// Names this responder put in the table (answered before: free for everyone).
    known: HashSet<String>,
    added: HashMap<Client, usize>,
}

impl Quota {
    /// May `client` have `name`? Counts it against the client when it is new.
    fn admit(&mut self, client: Client, name: &str) -> bool {
        if self.known.contains(name) {
            return true;
        }
        let n = self.added.entry(client).or_insert(0);
        if *n >= NAMES_PER_CLIENT {
            return false;
        }
        *n += 1;
        self.known.insert(name.to_string());
        true
    }
}

struct Forward {
    sock: UdpSocket,
    client: SocketAddr,
    /// The client's route: the answer goes to `client` only while its socket is still the
    /// program's (`DnsRoute::live`), not to whoever bound that address since.
    route: DnsRoute,
    deadline: Instant,
}

pub(super) fn serve(sup: &Sup, sock: UdpSocket, key: [u8; KEY_LEN]) {
    let key_hex = key_hex(&key).into_bytes();
    if sock.set_nonblocking(true).is_err() {
        return;
    }
    let mut quota = Quota::default();
    let mut checks = (Instant::now(), 0u32);
    let mut fwds: Vec<Forward> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let now = Instant::now();
        fwds.retain(|f| f.deadline > now);
        let wait = fwds.iter().map(|f| f.deadline.saturating_duration_since(now)).min().map_or(-1, |d| d.as_millis() as i32 + 1);
        let mut pfds: Vec<libc::pollfd> = std::iter::once(sock.as_raw_fd())
            .chain(fwds.iter().map(|f| f.sock.as_raw_fd()))
            .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
            .collect();
        // SAFETY: pfds is a valid array of pfds.len() pollfd structs.
        if unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, wait) } <= 0 {
            continue;
        }
        // Answers from servers first (indices shift once forwards are removed).
        for i in (1..pfds.len()).rev() {
            if pfds[i].revents == 0 {
                continue;
            }
            let f = fwds.swap_remove(i - 1);
            if let Ok(m) = f.sock.recv(&mut buf) {
                if f.route.live() {
                    let _ = sock.send_to(&buf[..m], f.client);
                }
            }
        }
        if pfds[0].revents & libc::POLLIN == 0 {
            continue;
        }
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let pkt = buf[..n].to_vec();
            // A panic drops this datagram, never the responder.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(sup, &sock, &key_hex, &mut quota, &mut checks, &pkt, from)));
            if let Ok(Some(f)) = r {
                if fwds.len() < MAX_FORWARDS {
                    fwds.push(f);
                }
            }
        }
    }
}

/// Answer one datagram, or return the forward to wait for.
fn handle(sup: &Sup, sock: &UdpSocket, key_hex: &[u8], quota: &mut Quota, checks: &mut (Instant, u32), pkt: &[u8], from: SocketAddr) -> Option<Forward> {
    let from = SocketAddr::new(cidr::unmap(from.ip()), from.port());
    let mut route = lock(&sup.dns_routes).get(&from).copied();
    if let Some(r) = route.filter(|r| !r.live()) {
        // The program closed the socket this route was made for: whoever sends from its
        // address now is not the program (another local user can bind it). The route goes,
        // and the datagram is judged as from anyone else.
        let mut routes = lock(&sup.dns_routes);
        if routes.get(&from) == Some(&r) {
            routes.remove(&from);
        }
        drop(routes);
        log(&sup.cfg, LogLevel::Debug, format_args!("dns: {from} is no longer the socket of process {} that was redirected; route dropped", r.tgid));
        route = None;
    }
    let (query, client) = match (route, strip_key(pkt, key_hex)) {
        (_, Some(q)) => (q, Client::KeyHolder),
        (Some(r), None) => (pkt, Client::Process(r.tgid)),
        (None, None) => {
            if checks.0.elapsed() >= Duration::from_secs(1) {
                *checks = (Instant::now(), 0);
            }
            checks.1 += 1;
            match (checks.1 <= PEER_CHECKS_PER_SEC).then(|| sender_in_tree(sup.root, from)).flatten() {
                Some(tgid) => (pkt, Client::Process(tgid)),
                None => {
                    log(&sup.cfg, LogLevel::Debug, format_args!("dns: dropped a datagram from {from}: not from the supervised tree"));
                    return None;
                }
            }
        }
    };
    match decide(sup, quota, client, query) {
        Reply::Answer(a) => {
            let _ = sock.send_to(&a, from);
            None
        }
        Reply::Drop => None,
        Reply::Forward => forward(route?, query, from),
    }
}

/// What the responder does with one question.
enum Reply {
    /// Answer it with this.
    Answer(Vec<u8>),
    /// Carry it to the server the client asked.
    Forward,
    /// Nothing.
    Drop,
}

/// The one rule for a question from `client`, over UDP or TCP: a tailnet name gets its
/// placeholder (or SERVFAIL past the client's bound), any other question about a tailnet name
/// SERVFAIL, an unreadable question section FORMERR — none of them ever forwarded.
fn decide(sup: &Sup, quota: &mut Quota, client: Client, query: &[u8]) -> Reply {
    if let Some(q) = dns::parse_query(query) {
        if sup.cfg.is_tailnet_name(&q.name, |n| sup.local_names.contains(n)) {
            let interned = if quota.admit(client, &q.name) { Some(names::try_intern(&q.name)) } else { None };
            let mut answer = if let Some(Ok(s)) = interned {
                let addr = if q.qtype == dns::TYPE_AAAA { std::net::IpAddr::V6(names::v6(s)) } else { std::net::IpAddr::V4(names::v4(s)) };
                log(&sup.cfg, LogLevel::Debug, format_args!("dns {} type {} -> tailnet name, {addr}", q.name, q.qtype));
                dns::answer(query, &q, Some(addr))
            } else if let Some(Err(e)) = interned {
                // No placeholder (table full, not a host name): SERVFAIL, never the real server.
                log(&sup.cfg, LogLevel::Info, format_args!("dns {}: {e}; SERVFAIL", q.name));
                let mut a = dns::answer(query, &q, None);
                a[3] = (a[3] & 0xf0) | 2; // RCODE SERVFAIL
                a
            } else {
                log(&sup.cfg, LogLevel::Info, format_args!("dns {}: {client:?} already added {NAMES_PER_CLIENT} names; SERVFAIL", q.name));
                let mut a = dns::answer(query, &q, None);
                a[3] = (a[3] & 0xf0) | 2; // RCODE SERVFAIL
                a
            };
            answer.truncate(4096);
            return Reply::Answer(answer);
        }
    }
    // Any other question for a tailnet name (in a second question, compressed, under a tailnet
    // domain but not a host name: `route::tailnet_question`, the rule the sends to port 53 are
    // refused by) is never forwarded: SERVFAIL.
    if let Some(name) = route::tailnet_question(&sup.cfg, query, |n| sup.local_names.contains(n)) {
        log(&sup.cfg, LogLevel::Info, format_args!("dns: a question for tailnet name {name:?} that is not a plain query: SERVFAIL, not forwarded"));
        return dns::error_response(query, 2).map_or(Reply::Drop, Reply::Answer);
    }
    // A question section that cannot be read whole (a label over 63 octets, an obsolete label
    // type, a pointer loop, cut short) is not a query any server answers but with FORMERR, and
    // the rule above cannot judge the names in it (one may end in `.ts.net`): answered FORMERR
    // here, never forwarded.
    let mut qs = dns::questions(query);
    qs.by_ref().for_each(drop);
    if !qs.complete() {
        log(&sup.cfg, LogLevel::Debug, format_args!("dns: a question section that cannot be read; FORMERR, not forwarded"));
        return dns::error_response(query, 1).map_or(Reply::Drop, Reply::Answer);
    }
    Reply::Forward
}

/// Forward a question to the route's server from a socket of its own; its answer goes back to
/// `client`.
fn forward(route: DnsRoute, query: &[u8], client: SocketAddr) -> Option<Forward> {
    let server = route.server;
    let bind: SocketAddr = if server.is_ipv4() { (std::net::Ipv4Addr::UNSPECIFIED, 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let up = UdpSocket::bind(bind).ok()?;
    up.send_to(query, server).ok()?;
    Some(Forward { sock: up, client, route, deadline: Instant::now() + FORWARD_TIMEOUT })
}

/// Connections served at once by the TCP responder; more are closed (the client retries).
const MAX_TCP: usize = 32;
/// How long a TCP connection may sit idle, and a server may take to answer.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// The DNS-over-TCP responder: a supervised process's TCP connect to port 53 was redirected
/// here (`notify::dns_redirect_tcp`); each connection is served by a short-lived thread (at
/// most `MAX_TCP` at once), questions decided by the same rule as over UDP, the others carried
/// over one TCP connection of ours to the server the process asked. A connection from anyone
/// else (not in `dns_tcp_routes`) is closed unanswered.
pub(super) fn serve_tcp(sup: std::sync::Arc<Sup>, listener: std::net::TcpListener) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static LIVE: AtomicUsize = AtomicUsize::new(0);
    for conn in listener.incoming() {
        let Ok(c) = conn else { continue };
        // Anyone on the machine can connect here: a connection that is not a redirected
        // socket's (its route is recorded before the program's connect) is closed at once,
        // before it could take one of the `MAX_TCP` places.
        let redirected = c.peer_addr().is_ok_and(|p| lock(&sup.dns_tcp_routes).contains_key(&SocketAddr::new(cidr::unmap(p.ip()), p.port())));
        if !redirected {
            log(&sup.cfg, LogLevel::Debug, format_args!("dns-tcp: closed a connection from {:?}: not a redirected socket", c.peer_addr()));
            continue;
        }
        if LIVE.load(Ordering::Acquire) >= MAX_TCP {
            continue; // dropped: closed
        }
        LIVE.fetch_add(1, Ordering::AcqRel);
        let s2 = sup.clone();
        let spawned = std::thread::Builder::new().name("tsproxy-dns-tcp1".into()).spawn(move || {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tcp_conn(&s2, c)));
            LIVE.fetch_sub(1, Ordering::AcqRel);
        });
        if spawned.is_err() {
            LIVE.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// One redirected TCP connection: length-framed questions in, answers out.
fn tcp_conn(sup: &Sup, mut c: std::net::TcpStream) {
    use std::io::{Read, Write};
    let _ = c.set_read_timeout(Some(TCP_IDLE));
    let _ = c.set_write_timeout(Some(TCP_IDLE));
    let Ok(peer) = c.peer_addr() else { return };
    let peer = SocketAddr::new(cidr::unmap(peer.ip()), peer.port());
    // Recorded before the program's connect (`notify::dns_redirect_tcp`).
    let route = lock(&sup.dns_tcp_routes).get(&peer).copied();
    // A route whose socket the program has closed is not this connection's: another local
    // user may have bound the address since (`DnsRoute::live`).
    let Some(route) = route.filter(DnsRoute::live) else {
        log(&sup.cfg, LogLevel::Debug, format_args!("dns-tcp: closed a connection from {peer}: not a redirected socket"));
        return;
    };
    let mut up: Option<std::net::TcpStream> = None;
    let read_frame = |s: &mut std::net::TcpStream| -> Option<Vec<u8>> {
        let mut l = [0u8; 2];
        s.read_exact(&mut l).ok()?;
        let mut m = vec![0u8; u16::from_be_bytes(l) as usize];
        s.read_exact(&mut m).ok()?;
        Some(m)
    };
    let frame = |m: &[u8]| -> Vec<u8> { [&(m.len().min(u16::MAX as usize) as u16).to_be_bytes()[..], &m[..m.len().min(u16::MAX as usize)]].concat() };
    while let Some(q) = read_frame(&mut c) {
        let reply = decide(sup, &mut lock(&sup.tcp_quota), Client::Process(route.tgid), &q);
        let out = match reply {
            Reply::Answer(a) => a,
            Reply::Drop => return,
            Reply::Forward => {
                if up.is_none() {
                    up = std::net::TcpStream::connect_timeout(&route.server, FORWARD_TIMEOUT).ok();
                    if let Some(u) = &up {
                        let _ = u.set_read_timeout(Some(TCP_IDLE));
                        let _ = u.set_write_timeout(Some(TCP_IDLE));
                    }
                }
                let Some(u) = up.as_mut() else { return };
                if u.write_all(&frame(&q)).is_err() {
                    return;
                }
                let Some(a) = read_frame(u) else { return };
                a
            }
        };
        if c.write_all(&frame(&out)).is_err() {
            return;
        }
    }
}

/// The process of the tree (a descendant of `root`, or root) holding the UDP socket that sent
/// from `from`, if any.
fn sender_in_tree(root: i32, from: SocketAddr) -> Option<i32> {
    let inodes: Vec<u64> = ["/proc/net/udp", "/proc/net/udp6"].iter().flat_map(|f| udp_inodes(&std::fs::read_to_string(f).unwrap_or_default(), from)).collect();
    if inodes.is_empty() {
        return None;
    }
    let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    descendants(root).into_iter().find(|pid| {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
        dir.flatten().any(|e| std::fs::read_link(e.path()).is_ok_and(|l| targets.iter().any(|t| l.as_os_str() == t.as_str())))
    })
}

/// Inodes of the sockets in a /proc/net/udp{,6} table that can send from `from`: bound to its
/// address (or to the wildcard) and its port.
pub(super) fn udp_inodes(table: &str, from: SocketAddr) -> Vec<u64> {
    let mut out = Vec::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(inode)) = (f.get(1), f.get(9)) else { continue };
        let Some((addr_hex, port_hex)) = local.split_once(':') else { continue };
        let Ok(port) = u16::from_str_radix(port_hex, 16) else { continue };
        // Each 32-bit word is printed as a host-order number (little-endian here).
        let words: Option<Vec<u8>> = (0..addr_hex.len() / 8)
            .map(|i| u32::from_str_radix(&addr_hex[i * 8..i * 8 + 8], 16).ok().map(|w| w.to_le_bytes()))
            .collect::<Option<Vec<_>>>()
            .map(|v| v.concat());
        let ip: std::net::IpAddr = match words.as_deref() {
            Some(&[a, b, c, d]) => std::net::Ipv4Addr::new(a, b, c, d).into(),
            Some(b) if b.len() == 16 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(b);
                std::net::Ipv6Addr::from(o).into()
            }
            _ => continue,
        };
        let ip = cidr::unmap(ip);
        if port == from.port() && (ip == from.ip() || ip.is_unspecified()) {
            if let Ok(i) = inode.parse() {
                out.push(i);
            }
        }
    }
    out
}

/// `root` and every process below it, from the parent pids in /proc/PID/stat.
fn descendants(root: i32) -> Vec<i32> {
    let mut kids: HashMap<i32, Vec<i32>> = HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(ppid) = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().nth(1)?.parse::<i32>().ok()) else { continue };
        kids.entry(ppid).or_default().push(pid);
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() && out.len() < 1 << 16 {
        if let Some(k) = kids.get(&out[i]) {
            out.extend(k);
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_table_lookup() {
        let t4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                  1: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 111 2 0 0\n\
                  2: 00000000:1F91 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 222 2 0 0\n\
                  3: 0101A8C0:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 333 2 0 0\n";
        assert_eq!(udp_inodes(t4, "127.0.0.1:8080".parse().unwrap()), vec![111]);
        assert_eq!(udp_inodes(t4, "127.0.0.1:8081".parse().unwrap()), vec![222]);
        assert_eq!(udp_inodes(t4, "127.0.0.1:9".parse().unwrap()), Vec::<u64>::new());
        let t6 =
            "hdr\n 1: 0000000000000000FFFF00000100007F:1F90 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 444 2 0 0\n\
                  2: 00000000000000000000000000000000:1F92 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000 0 0 555 2 0 0\n";
        assert_eq!(udp_inodes(t6, "127.0.0.1:8080".parse().unwrap()), vec![444]);
        assert_eq!(udp_inodes(t6, "127.0.0.1:8082".parse().unwrap()), vec![555]);
        // This process's own socket is found, and this process is in its own tree.
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(sender_in_tree(std::process::id() as i32, u.local_addr().unwrap()), Some(std::process::id() as i32));
        assert_eq!(sender_in_tree(1, "127.0.0.1:1".parse().unwrap()), None);
    }

    #[test]
    fn key_framing() {
        let k = [0xabu8; KEY_LEN];
        let hex = key_hex(&k);
        assert_eq!(hex.len(), 32);
        let mut pkt = KEY_MAGIC.to_vec();
        pkt.extend_from_slice(hex.as_bytes());
        pkt.extend_from_slice(b"QUERY");
        assert_eq!(strip_key(&pkt, hex.as_bytes()), Some(&b"QUERY"[..]));
        let mut bad = pkt.clone();
        bad[10] ^= 1;
        assert_eq!(strip_key(&bad, hex.as_bytes()), None);
        assert_eq!(strip_key(b"QUERY", hex.as_bytes()), None);
        assert_eq!(strip_key(&pkt[..20], hex.as_bytes()), None);
        assert_ne!(new_key().unwrap(), new_key().unwrap());
    }

    #[test]
    fn quota_bounds_each_client() {
        let mut q = Quota::default();
        let a = Client::Process(1);
        for i in 0..NAMES_PER_CLIENT {
            assert!(q.admit(a, &format!("n{i}")));
        }
        assert!(!q.admit(a, "one-more"));
        // Names already in the table stay answerable, for everyone.
        assert!(q.admit(a, "n5"));
        assert!(q.admit(Client::Process(2), "n5"));
        assert!(q.admit(Client::Process(2), "one-more"));
        assert!(q.admit(Client::KeyHolder, "other"));
    }
}

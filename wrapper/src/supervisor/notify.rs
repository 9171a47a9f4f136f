//! The notification loop, the verdicts, and the worker pool that dials through the proxy.
//!
//! The loop answers at once everything that needs no waiting: connects that are not ours
//! (CONTINUE), refusals, datagrams to tailnet destinations (ENETUNREACH), DNS redirects: a
//! connect to port 53 redirected to our responder, and a DNS question for a tailnet name sent
//! to port 53 on an unconnected datagram socket sent to the responder instead, its destination
//! rewritten in the program's memory (`redirect_questions`: the one place the supervisor
//! writes into a program, and why). Only
//! a tailnet TCP connect, which waits on the proxy, goes to a worker: a bounded pool
//! (`WORKERS` threads, started on demand, and a queue of `QUEUE`). When the queue is full the
//! connect fails closed with EAGAIN and one log line, instead of a thread per connect; a
//! thread that cannot be started (process limit) is logged, and with no worker at all the
//! dial runs in the loop. Every handler runs under `catch_unwind`: a panic answers the
//! notification fail-closed (ECONNREFUSED / ENETUNREACH) and the supervisor carries on.
//!
//! Signals. With SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux >= 5.19, set in mod.rs) a
//! received notification can only be interrupted by a fatal signal, so a program's held
//! connect() never returns early and no program byte can reach the socket before the proxy's
//! handshake is over. On 5.8–5.18 a signal can end the wait: without SA_RESTART connect()
//! returns EINTR while the worker is mid-handshake (a write then would go into the handshake;
//! nothing here can stop that), with SA_RESTART the kernel issues the connect again — a second
//! notification for a socket a worker is dialing on, which `inflight` answers with EALREADY
//! instead of a second handshake on the same socket.
use super::selfproxy::SelfProxy;
use super::{dns, log, resolve_host};
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use tsproxy_core::config::{Config, LogLevel};
use tsproxy_core::route::{self, Route};
use tsproxy_core::sys::DatagramAt;
use tsproxy_core::tunnel::{self, Opts, Resolved};
use tsproxy_core::{cidr, hosts, sockaddr, sys, syscall, Errno, Target};

/// Dialing threads at most.
pub const WORKERS: usize = 12;
/// Dials waiting for a worker at most; one more fails with EAGAIN.
pub const QUEUE: usize = 64;
/// The kernel's cap on sendmmsg's vlen (UIO_MAXIOV).
const UIO_MAXIOV: usize = 1024;
/// Bytes of a sockaddr we read: the kernel accepts at most sizeof(sockaddr_storage).
const ADDR_MAX: usize = 128;

/// The answer to a notification.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    Return(i64),
    Fail(Errno),
}

/// Lock, ignoring poisoning: every map here stays consistent across a panic (single inserts
/// and removes), and a poisoned lock must not take the supervisor down.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A DNS redirect: the server the program asked, the process (thread group) it asked from,
/// and the socket it asked on (the program's descriptor number and the socket's inode).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct DnsRoute {
    pub server: SocketAddr,
    pub tgid: i32,
    pub fd: i32,
    pub ino: u64,
}

impl DnsRoute {
    /// Does the program still hold the socket this route was made for? A route is found by
    /// the address a datagram (or a TCP connection) comes from, and routes outlive their
    /// sockets (they are kept until 4096 of them pile up). Once the program has closed its
    /// socket, that loopback address is free: any local user can bind it and would be taken
    /// for the program — answered, forwarded, counted against the program's quota, its names
    /// written to the user's registry (as uid 65534 against a root tree: 2047 names interned
    /// and the program's next lookup SERVFAIL). So the route holds only while the socket is
    /// still the program's: its descriptor (one readlink), else any descriptor of the thread
    /// group (a program that moved it with dup2).
    pub fn live(&self) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let want = format!("socket:[{}]", self.ino);
        std::fs::read_link(format!("/proc/{}/fd/{}", self.tgid, self.fd)).is_ok_and(|l| l.as_os_str().as_bytes() == want.as_bytes())
            || super::udp::socket_inodes(self.tgid).contains(&self.ino)
    }
}

pub(super) struct Sup {
    pub cfg: Config,
    listener: i32,
    ups: Vec<Resolved>,
    pub local_names: HashSet<String>,
    dns: SocketAddr,
    /// DNS redirects: the program's socket (its local address) -> where and who.
    pub dns_routes: Mutex<HashMap<SocketAddr, DnsRoute>>,
    /// The TCP responder (DNS over TCP), if it could be made.
    dns_tcp: Option<SocketAddr>,
    /// Its redirects, as `dns_routes` (a TCP and a UDP socket may share a local address).
    pub dns_tcp_routes: Mutex<HashMap<SocketAddr, DnsRoute>>,
    /// The TCP responder's bound on new names per client.
    pub(super) tcp_quota: Mutex<dns::Quota>,
    /// The command's pid: the root of the supervised tree.
    pub root: i32,
    /// Sockets (inode) a worker is dialing on.
    inflight: Mutex<HashSet<u64>>,
    /// Processes (tgid) already told of in the log as unreadable (`denied`).
    unreadable: Mutex<HashSet<i32>>,
    /// Which supervised processes are a configured proxy themselves.
    selfproxy: SelfProxy,
}

/// A dial for a worker. `sock` is our duplicate of the program's socket.
struct Job {
    id: u64,
    sock: OwnedFd,
    ino: u64,
    dest: SocketAddr,
    target: Target,
    family: i32,
    /// The thread group holding the socket.
    tgid: i32,
    /// A datagram socket: relayed through UDP ASSOCIATE (`udp.rs`).
    udp: bool,
}

enum Step {
    Answer(Verdict),
    Dial(Job),
}

pub fn run(cfg: Config, listener: i32, responder: UdpSocket, key: [u8; dns::KEY_LEN], root: i32) {
    let ups: Vec<Resolved> =
        cfg.proxies.iter().map(|up| Resolved { up: up.clone(), addrs: resolve_host(&up.host, up.port), owners: cfg.proxy_owner.clone() }).collect();
    let selfproxy = SelfProxy::new(ups.iter().flat_map(|u| u.addrs.iter().copied()).collect());
    let Ok(dns_addr) = responder.local_addr() else { return };
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").ok();
    let sup = Arc::new(Sup {
        dns_tcp: tcp.as_ref().and_then(|l| l.local_addr().ok()),
        dns_tcp_routes: Mutex::new(HashMap::new()),
        tcp_quota: Mutex::new(dns::Quota::default()),
        ups,
        local_names: hosts::local_names(),
        dns: dns_addr,
        dns_routes: Mutex::new(HashMap::new()),
        inflight: Mutex::new(HashSet::new()),
        unreadable: Mutex::new(HashSet::new()),
        root,
        cfg,
        listener,
        selfproxy,
    });
    {
        let s2 = sup.clone();
        let spawned = std::thread::Builder::new().name("tsproxy-dns".into()).spawn(move || dns::serve(&s2, responder, key));
        if let Err(e) = spawned {
            // Redirected sockets then get no answer (and time out); nothing leaks.
            log(&sup.cfg, LogLevel::Error, format_args!("cannot start the DNS responder: {e}"));
        }
    }
    if let Some(l) = tcp {
        let s2 = sup.clone();
        if let Err(e) = std::thread::Builder::new().name("tsproxy-dns-tcp".into()).spawn(move || dns::serve_tcp(s2, l)) {
            // Redirected TCP sockets then time out; nothing leaks.
            log(&sup.cfg, LogLevel::Error, format_args!("cannot start the DNS-over-TCP responder: {e}"));
        }
    }
    let pool = Pool::new(sup.clone());
    loop {
        match sys::poll1(listener, libc::POLLIN, -1) {
            Ok(ev) if ev & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 && ev & libc::POLLIN == 0 => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        // SAFETY: all-zero is the required initial state of a seccomp_notif.
        let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        if syscall!(SYS_ioctl, listener, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut n as *mut libc::seccomp_notif).is_err() {
            continue; // the target died meanwhile (ENOENT), or a signal
        }
        match catch_unwind(AssertUnwindSafe(|| sup.triage(&n))) {
            Ok(Step::Answer(v)) => sup.respond(n.id, v),
            Ok(Step::Dial(job)) => pool.submit(job),
            Err(_) => sup.respond(n.id, Verdict::Fail(fail_closed(n.data.nr))),
        }
    }
}

/// What a notification gets when handling it went wrong: never CONTINUE.
fn fail_closed(nr: i32) -> Errno {
    if nr as i64 == libc::SYS_connect {
        Errno(libc::ECONNREFUSED)
    } else {
        Errno(libc::ENETUNREACH)
    }
}

struct Pool {
    sup: Arc<Sup>,
    tx: SyncSender<Job>,
    rx: Arc<Mutex<Receiver<Job>>>,
    workers: AtomicUsize,
    idle: Arc<AtomicUsize>,
}

impl Pool {
    fn new(sup: Arc<Sup>) -> Pool {
        let (tx, rx) = sync_channel(QUEUE);
        Pool { sup, tx, rx: Arc::new(Mutex::new(rx)), workers: AtomicUsize::new(0), idle: Arc::new(AtomicUsize::new(0)) }
    }

    fn submit(&self, job: Job) {
        let workers = self.workers.load(Ordering::Relaxed);
        if self.idle.load(Ordering::Acquire) == 0 && workers < WORKERS {
            let (sup, rx, idle) = (self.sup.clone(), self.rx.clone(), self.idle.clone());
            match std::thread::Builder::new().name("tsproxy-dial".into()).stack_size(256 << 10).spawn(move || worker(&sup, &rx, &idle)) {
                Ok(_) => {
                    self.workers.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => log(&self.sup.cfg, LogLevel::Error, format_args!("cannot start a dial thread ({e}); {workers} running")),
            }
        }
        if self.workers.load(Ordering::Relaxed) == 0 {
            // No thread at all: dial here (the loop waits, but nothing fails or leaks).
            let id = job.id;
            let v = catch_unwind(AssertUnwindSafe(|| self.sup.dial(job))).unwrap_or(Verdict::Fail(Errno(libc::ECONNREFUSED)));
            self.sup.respond(id, v);
            return;
        }
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) | Err(TrySendError::Disconnected(job)) => {
                log(&self.sup.cfg, LogLevel::Error, format_args!("connect {} {}: {QUEUE} dials already waiting; failing it with EAGAIN", job.dest, job.target));
                self.sup.finish(job.ino);
                self.sup.respond(job.id, Verdict::Fail(Errno(libc::EAGAIN)));
            }
        }
    }
}

fn worker(sup: &Sup, rx: &Mutex<Receiver<Job>>, idle: &AtomicUsize) {
    loop {
        idle.fetch_add(1, Ordering::Release);
        let job = lock(rx).recv();
        idle.fetch_sub(1, Ordering::Release);
        let Ok(job) = job else { return };
        let id = job.id;
        let v = catch_unwind(AssertUnwindSafe(|| sup.dial(job))).unwrap_or(Verdict::Fail(Errno(libc::ECONNREFUSED)));
        sup.respond(id, v);
    }
}

/// Why the target's memory could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unread {
    /// A bad address: the kernel cannot read it either, and fails the call itself (let it).
    Fault,
    /// We may not look (no ptrace rights over the target: it is non-dumpable, or Yama's
    /// ptrace_scope admits only its ancestors; or the target is gone). Whatever the address
    /// is, the call must not go on unjudged: fail closed (`Sup::denied`).
    Denied,
}

/// Read `buf.len()` bytes of the target's memory at `addr`.
fn read_mem(pid: i32, addr: u64, buf: &mut [u8]) -> Result<(), Unread> {
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
    match syscall!(SYS_process_vm_readv, pid, &local as *const libc::iovec, 1, &remote as *const libc::iovec, 1, 0) {
        Ok(n) if n as usize == buf.len() => Ok(()),
        // A short read: the rest is unmapped, which the kernel's own copy meets too.
        Ok(_) => Err(Unread::Fault),
        Err(e) if e.raw_os_error() == Some(libc::EFAULT) => Err(Unread::Fault),
        Err(_) => Err(Unread::Denied),
    }
}

/// The thread group of a thread (the notification names the calling thread; pidfd_open wants
/// a process).
fn tgid_of(tid: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Tgid:")).and_then(|v| v.trim().parse().ok())
}

/// The program's socket, as a descriptor of ours (pidfd_getfd), with its domain, type and
/// inode, and the thread group it came from.
struct Sock {
    fd: OwnedFd,
    /// The program's descriptor number for it.
    pfd: i32,
    domain: i32,
    ty: i32,
    ino: u64,
    tgid: i32,
}

/// Why a program's socket could not be taken: the errno of the step that failed (ESRCH when
/// the thread is gone).
fn take(tid: i32, fd: i32) -> Result<Sock, Errno> {
    let tgid = tgid_of(tid).ok_or(Errno(libc::ESRCH))?;
    let pidfd = syscall!(SYS_pidfd_open, tgid, 0).map_err(|e| Errno::of(&e))? as i32;
    let r = syscall!(SYS_pidfd_getfd, pidfd, fd, 0);
    let _ = syscall!(SYS_close, pidfd);
    // SAFETY: pidfd_getfd returned a new descriptor that nothing else owns.
    let ours = unsafe { OwnedFd::from_raw_fd(r.map_err(|e| Errno::of(&e))? as i32) };
    let domain = sys::getsockopt_int(ours.as_raw_fd(), libc::SOL_SOCKET, libc::SO_DOMAIN).map_err(|e| Errno::of(&e))?;
    let ty = sys::getsockopt_int(ours.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TYPE).map_err(|e| Errno::of(&e))?;
    // SAFETY: all-zero is a valid stat buffer; fstat only writes into it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    syscall!(SYS_fstat, ours.as_raw_fd(), &mut st as *mut libc::stat).map_err(|e| Errno::of(&e))?;
    Ok(Sock { fd: ours, pfd: fd, domain, ty, ino: st.st_ino, tgid })
}

/// The answer to a connect whose socket could not be taken, when it must not go on: the
/// kernel's own errno where the descriptor is not a socket of the program's (EBADF, ENOTSOCK:
/// the call fails there too), else refused.
fn untaken(e: Errno) -> Verdict {
    match e.raw() {
        libc::EBADF | libc::ENOTSOCK => Verdict::Fail(e),
        _ => Verdict::Fail(Errno(libc::ECONNREFUSED)),
    }
}

impl Sup {
    /// The upstreams, resolved.
    pub(super) fn upstreams(&self) -> &[Resolved] {
        &self.ups
    }

    pub(super) fn respond(&self, id: u64, v: Verdict) {
        let (val, error, flags) = match v {
            Verdict::Continue => (0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
            Verdict::Return(v) => (v, 0, 0),
            Verdict::Fail(e) => (0, -e.raw(), 0),
        };
        let resp = libc::seccomp_notif_resp { id, val, error, flags };
        let _ = syscall!(SYS_ioctl, self.listener, libc::SECCOMP_IOCTL_NOTIF_SEND, &resp as *const libc::seccomp_notif_resp);
    }

    /// Is the notification still live? Checked after reading the target's memory or taking its
    /// descriptor and before acting on them: then the pid was not reused under us.
    fn valid(&self, id: u64) -> bool {
        syscall!(SYS_ioctl, self.listener, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &id as *const u64).is_ok()
    }

    fn finish(&self, ino: u64) {
        lock(&self.inflight).remove(&ino);
    }

    /// A call whose address we may not read (`Unread::Denied`): refused with EPERM, what a
    /// local firewall rule gives, tailnet destination or not — we cannot tell, and a tailnet
    /// packet must never leave unjudged. One log line per process says why.
    fn denied(&self, n: &libc::seccomp_notif) -> Verdict {
        if self.valid(n.id) {
            let tgid = tgid_of(n.pid as i32).unwrap_or(n.pid as i32);
            let first = {
                let mut seen = lock(&self.unreadable);
                if seen.len() >= 1024 {
                    seen.clear();
                }
                seen.insert(tgid)
            };
            if first {
                log(
                    &self.cfg,
                    LogLevel::Error,
                    format_args!(
                        "pid {tgid}: the supervisor may not read this process (no ptrace rights over it: it made itself non-dumpable, or Yama's ptrace_scope admits only ancestors); its connects and addressed sends are refused (EPERM)"
                    ),
                );
            }
        }
        Verdict::Fail(Errno(libc::EPERM))
    }

    /// The one routing policy for `dest`, asked by thread `tid`. In a process that is itself a
    /// configured proxy, what would be tunnelled is not (`selfproxy`: never to itself).
    fn decide(&self, tid: i32, dest: SocketAddr) -> Route {
        let r = route::decide(&self.cfg, dest);
        if matches!(r, Route::Proxy(_)) && tgid_of(tid).is_some_and(|tgid| self.selfproxy.is_proxy(&self.cfg, tgid)) {
            return route::in_proxy(r);
        }
        r
    }

    fn triage(&self, n: &libc::seccomp_notif) -> Step {
        let a = n.data.args;
        let tid = n.pid as i32;
        match n.data.nr as i64 {
            libc::SYS_connect => self.on_connect(n),
            libc::SYS_sendto => Step::Answer(self.on_send(n, &[Msg { name: (a[4], a[5] as u32), data: DatagramAt::Buf(a[1], a[2]) }], a[3] as i32)),
            libc::SYS_sendmsg => match read_msghdr(tid, a[1]) {
                Ok(m) => Step::Answer(self.on_send(n, &[m], a[2] as i32)),
                Err(Unread::Fault) => Step::Answer(Verdict::Continue), // the kernel's EFAULT
                Err(Unread::Denied) => Step::Answer(self.denied(n)),
            },
            libc::SYS_sendmmsg => {
                let vlen = (a[2] as u32 as usize).min(UIO_MAXIOV);
                let size = std::mem::size_of::<libc::mmsghdr>() as u64;
                // The kernel stops at the first message it cannot read: so do we.
                let mut msgs: Vec<Msg> = Vec::new();
                for i in 0..vlen as u64 {
                    match read_msghdr(tid, a[1].wrapping_add(i * size)) {
                        Ok(m) => msgs.push(m),
                        Err(Unread::Fault) => break,
                        Err(Unread::Denied) => return Step::Answer(self.denied(n)),
                    }
                }
                Step::Answer(self.on_send(n, &msgs, a[3] as i32))
            }
            _ => Step::Answer(Verdict::Continue),
        }
    }

    fn on_connect(&self, n: &libc::seccomp_notif) -> Step {
        let a = n.data.args;
        let (fd, ptr, len) = (a[0] as i32, a[1], a[2] as u32);
        let mut raw = [0u8; ADDR_MAX];
        let len = (len as usize).min(ADDR_MAX);
        if ptr == 0 || len == 0 {
            return Step::Answer(Verdict::Continue); // the kernel reports the bad address itself
        }
        match read_mem(n.pid as i32, ptr, &mut raw[..len]) {
            Ok(()) => {}
            Err(Unread::Fault) => return Step::Answer(Verdict::Continue), // likewise
            Err(Unread::Denied) => return Step::Answer(self.denied(n)),
        }
        // SAFETY: raw holds len initialized bytes.
        let Some(dest) = (unsafe { sockaddr::read(raw.as_ptr().cast(), len as libc::socklen_t) }) else { return Step::Answer(Verdict::Continue) };
        let target = match self.decide(n.pid as i32, dest) {
            Route::Direct(_) if dest.port() == 53 => return Step::Answer(self.dns_redirect(n, fd, dest)),
            Route::Direct(_) => return Step::Answer(Verdict::Continue),
            Route::Refuse(e, why) => {
                log(&self.cfg, LogLevel::Info, format_args!("connect {dest}: {why} (supervisor)"));
                return Step::Answer(Verdict::Fail(e));
            }
            Route::Proxy(t) => t,
        };
        // Fail closed from here on: a tailnet destination is never let through.
        let s = match take(n.pid as i32, fd) {
            Ok(s) => s,
            Err(e) => return Step::Answer(untaken(e)),
        };
        if !self.valid(n.id) {
            // Nobody is waiting for this answer any more.
            return Step::Answer(Verdict::Fail(Errno(libc::ECONNREFUSED)));
        }
        let udp = s.ty & 0xf == libc::SOCK_DGRAM;
        if s.ty & 0xf != libc::SOCK_STREAM && !udp {
            log(&self.cfg, LogLevel::Info, format_args!("{target}: only TCP and UDP are proxied; refused"));
            return Step::Answer(Verdict::Fail(Errno(libc::ENETUNREACH)));
        }
        if !lock(&self.inflight).insert(s.ino) {
            return Step::Answer(Verdict::Fail(Errno(libc::EALREADY)));
        }
        if !udp && sys::is_connected(s.fd.as_raw_fd()) {
            self.finish(s.ino);
            return Step::Answer(Verdict::Fail(Errno(libc::EISCONN)));
        }
        Step::Dial(Job { id: n.id, ino: s.ino, family: s.domain, sock: s.fd, dest, target, tgid: s.tgid, udp })
    }

    fn dial(&self, job: Job) -> Verdict {
        struct Done<'a>(&'a Sup, u64);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.finish(self.1);
            }
        }
        let _done = Done(self, job.ino);
        if job.udp {
            return match super::udp::start(self, job.sock, job.ino, job.tgid, job.family, job.target) {
                Ok(()) => Verdict::Return(0),
                Err(e) => Verdict::Fail(e),
            };
        }
        let t0 = Instant::now();
        let opts = Opts { deadline: t0 + self.cfg.timeout, read_cap: None, pipeline: self.cfg.pipeline };
        let cfg = &self.cfg;
        let (dest, target) = (job.dest, &job.target);
        match tunnel::establish(job.sock.as_raw_fd(), job.family, &self.ups, target, &opts, &mut |l, a| log(cfg, l, a)) {
            Ok(via) => {
                log(cfg, LogLevel::Debug, format_args!("connect {dest} {target} -> proxy {via} -> ok {}us (supervisor)", t0.elapsed().as_micros()));
                Verdict::Return(0)
            }
            Err(e) => {
                log(cfg, LogLevel::Info, format_args!("connect {dest} {target} -> {e} (supervisor)"));
                Verdict::Fail(e)
            }
        }
    }

    /// A connect to port 53 on a datagram socket: connect it to our responder instead and
    /// remember the server it asked for (and who asked: the responder answers only those).
    fn dns_redirect(&self, n: &libc::seccomp_notif, fd: i32, dest: SocketAddr) -> Verdict {
        // Not taken: refused, not let through unredirected (the questions it would then send
        // on it, connected, would reach the server unread).
        let s = match take(n.pid as i32, fd) {
            Ok(s) => s,
            Err(e) => return untaken(e),
        };
        if !self.valid(n.id) {
            return Verdict::Continue;
        }
        if s.ty & 0xf == libc::SOCK_STREAM {
            return self.dns_redirect_tcp(&s, dest);
        }
        if s.ty & 0xf != libc::SOCK_DGRAM {
            return Verdict::Continue;
        }
        let Some((sa, len)) = sockaddr::encode(self.dns, s.domain) else { return Verdict::Continue };
        if let Err(e) = sys::connect_raw(s.fd.as_raw_fd(), (&sa as *const libc::sockaddr_storage).cast(), len) {
            // Our responder is out of this socket's reach (bound to a device, IPv6-only): it
            // fails as it did here, rather than reach the server with questions nobody read.
            return Verdict::Fail(Errno::of(&e));
        }
        if let Some(me) = local_addr(s.fd.as_raw_fd()) {
            let mut routes = lock(&self.dns_routes);
            if routes.len() >= 4096 {
                routes.clear(); // old sockets; a live one re-registers on its next connect
            }
            routes.insert(me, DnsRoute { server: dest, tgid: s.tgid, fd: s.pfd, ino: s.ino });
        }
        Verdict::Return(0)
    }

    /// A connect to port 53 on a stream socket (DNS over TCP: Go and musl after a truncated
    /// answer): to our TCP responder instead, which answers tailnet questions and carries the
    /// others to the server asked. Without a responder, refused: the server is never reached
    /// with a question we could not look at.
    ///
    /// The route is recorded before the connect, so the responder knows the connection the
    /// moment it accepts it and closes every other one at once, without a thread: a socket
    /// with no local address is first bound to the loopback address (port 0), as the
    /// connect's own autobind would. (Recorded after the connect, the responder had to wait
    /// for it, one thread per connection for up to 100 ms, at most 32 at once: another local
    /// user connecting in a loop kept all 32 busy and the program's question went unanswered.)
    fn dns_redirect_tcp(&self, s: &Sock, dest: SocketAddr) -> Verdict {
        let Some(tcp) = self.dns_tcp else { return Verdict::Fail(Errno(libc::ECONNREFUSED)) };
        let Some((sa, len)) = sockaddr::encode(tcp, s.domain) else { return Verdict::Fail(Errno(libc::ECONNREFUSED)) };
        let fd = s.fd.as_raw_fd();
        if local_addr(fd).map_or(true, |a| a.port() == 0) {
            let Some((la, ll)) = sockaddr::encode(SocketAddr::new(tcp.ip(), 0), s.domain) else { return Verdict::Fail(Errno(libc::ECONNREFUSED)) };
            // An error here (bound meanwhile by another thread: EINVAL) shows in the re-read.
            let _ = syscall!(SYS_bind, fd, &la as *const libc::sockaddr_storage, ll);
        }
        // A socket bound to the wildcard address connects to the responder from loopback.
        let Some(me) = local_addr(fd).filter(|a| a.port() != 0) else { return Verdict::Fail(Errno(libc::ECONNREFUSED)) };
        let key = SocketAddr::new(if me.ip().is_unspecified() { tcp.ip() } else { me.ip() }, me.port());
        {
            let mut routes = lock(&self.dns_tcp_routes);
            if routes.len() >= 4096 {
                routes.clear(); // old connections; a new one registers on its connect
            }
            routes.insert(key, DnsRoute { server: dest, tgid: s.tgid, fd: s.pfd, ino: s.ino });
        }
        match sys::connect_raw(fd, (&sa as *const libc::sockaddr_storage).cast(), len) {
            Ok(()) => Verdict::Return(0),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Verdict::Fail(Errno(libc::EINPROGRESS)),
            Err(e) => Verdict::Fail(Errno::of(&e)),
        }
    }

    /// sendto/sendmsg/sendmmsg of these messages.
    fn on_send(&self, n: &libc::seccomp_notif, msgs: &[Msg], flags: i32) -> Verdict {
        let fd = n.data.args[0] as i32;
        let mut sock: Option<Option<Sock>> = None;
        let take_once = |sock: &mut Option<Option<Sock>>| -> bool {
            if sock.is_none() {
                *sock = Some(take(n.pid as i32, fd).ok().filter(|_| self.valid(n.id)));
            }
            matches!(sock, Some(Some(_)))
        };
        // Tailnet DNS questions on this datagram socket, to be sent to our responder instead
        // (`redirect_questions`), and whether a message goes to the responder's address.
        let mut questions: Vec<Question> = Vec::new();
        let mut to_responder = false;
        for m in msgs {
            let (ptr, len) = m.name;
            let len = (len as usize).min(ADDR_MAX);
            let mut raw = [0u8; ADDR_MAX];
            if ptr == 0 || len == 0 {
                continue; // no address
            }
            match read_mem(n.pid as i32, ptr, &mut raw[..len]) {
                Ok(()) => {}
                Err(Unread::Fault) => continue, // one the kernel cannot read either
                Err(Unread::Denied) => return self.denied(n),
            }
            let family = u16::from_ne_bytes([raw[0], raw[1]]) as i32;
            let dest = if family == libc::AF_UNSPEC && len >= 2 {
                // Family 0 means something only on some sockets (see sockaddr::read_send).
                if !take_once(&mut sock) {
                    return Verdict::Fail(Errno(libc::ENETUNREACH));
                }
                let Some(Some(s)) = &sock else { return Verdict::Fail(Errno(libc::ENETUNREACH)) };
                // SAFETY: raw holds len initialized bytes.
                unsafe { sockaddr::read_send(raw.as_ptr().cast(), len as libc::socklen_t, s.domain, s.ty) }
            } else {
                // SAFETY: raw holds len initialized bytes.
                unsafe { sockaddr::read(raw.as_ptr().cast(), len as libc::socklen_t) }
            };
            let Some(dest) = dest else { continue };
            if SocketAddr::new(cidr::unmap(dest.ip()), dest.port()) == self.dns {
                to_responder = true;
                continue;
            }
            let why = match self.decide(n.pid as i32, dest) {
                Route::Direct(_) if dest.port() == route::DNS_PORT => {
                    // A DNS question to any server, sent without connect() (musl's resolver, dig,
                    // c-ares, libuv): it must not carry a tailnet name (`route::tailnet_question`).
                    if flags & libc::MSG_FASTOPEN != 0 {
                        // TCP Fast Open to port 53: a connect the responder redirect never sees,
                        // whose data (framed DNS) nobody would read. Answered as a kernel with
                        // client TFO off does: the client connects instead, and that connect is
                        // redirected like any other.
                        if !take_once(&mut sock) {
                            return Verdict::Fail(Errno(libc::ENETUNREACH));
                        }
                        if let Some(Some(s)) = &sock {
                            if s.ty & 0xf == libc::SOCK_STREAM {
                                log(
                                    &self.cfg,
                                    LogLevel::Info,
                                    format_args!("TCP Fast Open to {dest}: refused (EOPNOTSUPP), DNS over TCP goes through connect"),
                                );
                                return Verdict::Fail(Errno(libc::EOPNOTSUPP));
                            }
                        }
                    }
                    let Some(payload) = sys::read_datagram(n.pid as i32, m.data) else { continue };
                    // A server reads one datagram as one message: what is not one whole DNS
                    // message here (MSG_MORE, a corked socket's piece, a segmented (GSO) send,
                    // bytes after the message) may become part of a question we never see
                    // whole. Refused on datagram sockets; a stream socket ignores the address.
                    if !route::whole_dns_datagram(&payload, flags) {
                        if !take_once(&mut sock) {
                            return Verdict::Fail(Errno(libc::ENETUNREACH));
                        }
                        let Some(Some(s)) = &sock else { return Verdict::Fail(Errno(libc::ENETUNREACH)) };
                        if s.ty & 0xf != libc::SOCK_DGRAM {
                            continue;
                        }
                        log(
                            &self.cfg,
                            LogLevel::Info,
                            format_args!(
                                "a datagram to {dest} that is not one whole DNS message (MSG_MORE, corked, segmented or trailing bytes): refused (EPERM)"
                            ),
                        );
                        return Verdict::Fail(Errno(libc::EPERM));
                    }
                    let Some(name) = route::tailnet_question(&self.cfg, &payload, |q| self.local_names.contains(q)) else { continue };
                    if !take_once(&mut sock) {
                        return Verdict::Fail(Errno(libc::ENETUNREACH));
                    }
                    let Some(Some(s)) = &sock else { return Verdict::Fail(Errno(libc::ENETUNREACH)) };
                    if s.ty & 0xf == libc::SOCK_STREAM {
                        continue; // DNS over TCP is not inspected (README, Limitations)
                    }
                    if s.ty & 0xf == libc::SOCK_DGRAM && sys::getsockopt_int(s.fd.as_raw_fd(), libc::SOL_UDP, libc::UDP_CORK).map_or(true, |c| c != 0) {
                        // Corked: the kernel appends this to the datagram it holds, to the
                        // address of that datagram's first piece, whatever address this send
                        // names: no redirect can take it to the responder.
                        log(&self.cfg, LogLevel::Info, format_args!("dns query for tailnet name {name:?} on a corked socket: refused (EPERM)"));
                        return Verdict::Fail(Errno(libc::EPERM));
                    }
                    if s.ty & 0xf == libc::SOCK_DGRAM && (family == libc::AF_INET || family == libc::AF_INET6) {
                        questions.push(Question { at: ptr, len, family, server: dest, name });
                        continue;
                    }
                    log(
                        &self.cfg,
                        LogLevel::Info,
                        format_args!("dns query for tailnet name {name:?} to {dest}: refused, it would reach that server (ENETUNREACH)"),
                    );
                    return Verdict::Fail(Errno(libc::ENETUNREACH));
                }
                Route::Direct(_) => continue,
                Route::Proxy(t) => t.to_string(),
                Route::Refuse(_, why) => format!("{dest} ({why})"),
            };
            if !take_once(&mut sock) {
                return Verdict::Fail(Errno(libc::ENETUNREACH));
            }
            let Some(Some(s)) = &sock else { return Verdict::Fail(Errno(libc::ENETUNREACH)) };
            if s.ty & 0xf == libc::SOCK_STREAM {
                if flags & libc::MSG_FASTOPEN != 0 {
                    // A TCP Fast Open connect: answer as a kernel with client TFO disabled does.
                    log(&self.cfg, LogLevel::Info, format_args!("{why}: TCP Fast Open to a tailnet destination refused (EOPNOTSUPP)"));
                    return Verdict::Fail(Errno(libc::EOPNOTSUPP));
                }
                continue; // a stream socket ignores the address
            }
            log(&self.cfg, LogLevel::Info, format_args!("{why}: only TCP is proxied; refusing a datagram to a tailnet destination"));
            return Verdict::Fail(Errno(libc::ENETUNREACH));
        }
        if !questions.is_empty() {
            // Taken above (a question is only recorded once its socket is).
            let Some(Some(s)) = &sock else { return Verdict::Fail(Errno(libc::ENETUNREACH)) };
            return self.redirect_questions(n, s, &questions);
        }
        if to_responder {
            // A datagram socket of the tree sending to the responder's address itself (a
            // program whose destination an earlier `redirect_questions` rewrote, using it from
            // another socket): registered, so its public questions are carried to a server.
            // Nothing here can leak (the responder never forwards a tailnet question), so
            // failing to register lets the send go on: the responder then drops it.
            if take_once(&mut sock) {
                if let Some(Some(s)) = &sock {
                    if s.ty & 0xf == libc::SOCK_DGRAM {
                        self.register_dns_sender(s, None);
                    }
                }
            }
        }
        Verdict::Continue
    }

    /// Tailnet DNS questions sent on an unconnected datagram socket (a static musl program's
    /// `getaddrinfo` under the supervisor: musl sends each question with `sendto` to every
    /// nameserver of resolv.conf, from one socket it bound to port 0). They must not reach the
    /// server, and refusing them (ENETUNREACH) makes the lookup fail (EAI_AGAIN). They go to
    /// our responder instead, which answers them with the placeholders:
    ///
    /// 1. the socket gets a local address if it has none (bound to the wildcard address, port
    ///    0, of its family: what the kernel's autobind does at this very send), and that
    ///    address is registered in `dns_routes` with the server asked and the thread group, as
    ///    `dns_redirect` does for a connect to port 53; the responder then answers its tailnet
    ///    questions and carries its other questions to that server;
    /// 2. the destination sockaddr is rewritten in the PROGRAM'S MEMORY to the responder's
    ///    address, in the program's own form (AF_INET: 127.0.0.1:port, sin_zero zeroed;
    ///    AF_INET6: ::ffff:127.0.0.1:port, flowinfo and scope_id 0), and the send CONTINUEs:
    ///    the kernel copies the address in only after our answer, so the question goes to the
    ///    responder and never to the server.
    ///
    /// Why the program's memory. musl accepts a reply only when recvfrom's source address is
    /// byte for byte (memcmp over the sockaddr length) the address it sent to. We cannot send
    /// from the server's address (that needs privileges and would answer for the server on
    /// the network), and rewriting the source of every recvfrom of static programs would put
    /// every UDP receive of theirs through the supervisor. Rewritten where musl keeps it (its
    /// `ns[]` entry), the address it sent to IS the responder's, and the responder's reply
    /// passes musl's check. This is a deliberate, documented exception (README, the
    /// supervisor): the supervisor writes into a program's memory only here — a tailnet DNS
    /// question on an unconnected send under the supervisor, which would otherwise fail — and
    /// only the destination sockaddr of that very send. The program sees its address variable
    /// changed: later sends to it (a retry, the AAAA question, a public question, another
    /// socket) reach the responder, which answers tailnet questions and forwards the others
    /// (`on_send` registers a socket that sends there unregistered).
    ///
    /// Any step that fails: ENETUNREACH, as before — the question is never sent to the server.
    fn redirect_questions(&self, n: &libc::seccomp_notif, s: &Sock, questions: &[Question]) -> Verdict {
        let refuse = |why: &str| {
            let q = &questions[0];
            log(&self.cfg, LogLevel::Info, format_args!("dns query for tailnet name {:?} to {}: refused, {why} (ENETUNREACH)", q.name, q.server));
            Verdict::Fail(Errno(libc::ENETUNREACH))
        };
        if !self.register_dns_sender(s, Some(questions[0].server)) {
            return refuse("the socket could not be registered with the responder");
        }
        let mut writes: Vec<(u64, Vec<u8>)> = Vec::with_capacity(questions.len());
        for q in questions {
            let Some(bytes) = responder_sockaddr(self.dns, q.family, q.len) else { return refuse("no responder address of that form") };
            writes.push((q.at, bytes));
        }
        if let Err(e) = self.write_target(n, &writes) {
            return refuse(&format!("its destination could not be rewritten ({e})"));
        }
        for q in questions {
            log(
                &self.cfg,
                LogLevel::Debug,
                format_args!("dns query for tailnet name {:?} to {}: sent to the responder {} instead (supervisor)", q.name, q.server, self.dns),
            );
        }
        Verdict::Continue
    }

    /// Write each (address, bytes) into the memory of the notifying thread's process through
    /// /proc/<tid>/mem (a pwrite: it also writes where the program's mapping is read-only, as
    /// a debugger does — where the kernel allows that, see `proc_mem.force_override`). The
    /// notification is checked live after the file is opened and before the first write: the
    /// file holds the process's memory, so a pid reused meanwhile is never written to. Only
    /// `redirect_questions` writes (see there why).
    fn write_target(&self, n: &libc::seccomp_notif, writes: &[(u64, Vec<u8>)]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let mem = std::fs::OpenOptions::new().write(true).open(format!("/proc/{}/mem", n.pid))?;
        if !self.valid(n.id) {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        for (at, bytes) in writes {
            mem.write_all_at(bytes, *at)?;
        }
        Ok(())
    }

    /// Register datagram socket `s` with the responder: its local address (made, as the
    /// kernel's autobind would, when it has none) -> the server its public questions go to
    /// (`server`, else the one already recorded, else the first nameserver of the process's
    /// resolv.conf) and its thread group. False when it has or gets no local address.
    fn register_dns_sender(&self, s: &Sock, server: Option<SocketAddr>) -> bool {
        let fd = s.fd.as_raw_fd();
        let mut me = local_addr(fd);
        if me.map_or(true, |a| a.port() == 0) {
            let any: SocketAddr =
                if s.domain == libc::AF_INET6 { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() } else { (std::net::Ipv4Addr::UNSPECIFIED, 0).into() };
            let Some((sa, len)) = sockaddr::encode(any, s.domain) else { return false };
            // An error here (bound meanwhile by another thread: EINVAL) shows in the re-read.
            let _ = syscall!(SYS_bind, fd, &sa as *const libc::sockaddr_storage, len);
            me = local_addr(fd);
        }
        let Some(me) = me.filter(|a| a.port() != 0) else { return false };
        // A datagram to 127.0.0.1 from a socket bound to the wildcard address comes from
        // 127.0.0.1: the address the responder sees (`dns::handle` looks routes up by it).
        let key = SocketAddr::new(if me.ip().is_unspecified() { self.dns.ip() } else { me.ip() }, me.port());
        let server = match server {
            Some(sv) => sv,
            None if lock(&self.dns_routes).get(&key).is_some_and(|r| r.tgid == s.tgid && r.ino == s.ino) => return true,
            None => first_nameserver(s.tgid), // read with no lock held
        };
        let mut routes = lock(&self.dns_routes);
        if routes.len() >= 4096 {
            routes.clear(); // old sockets; a live one re-registers on its next send
        }
        routes.insert(key, DnsRoute { server, tgid: s.tgid, fd: s.pfd, ino: s.ino });
        true
    }
}

/// A tailnet DNS question in one message of a send (`redirect_questions`).
struct Question {
    /// Where its destination sockaddr is in the target, and its length (<= ADDR_MAX).
    at: u64,
    len: usize,
    /// The sockaddr's family field (AF_INET or AF_INET6).
    family: i32,
    server: SocketAddr,
    name: String,
}

/// The octets written over a destination sockaddr of family `family` and length `len` (as
/// the program passed it) so that it names the responder `dns`: AF_INET, 127.0.0.1:port with
/// sin_zero zeroed (16 octets: all the kernel reads); AF_INET6, ::ffff:127.0.0.1:port with
/// flowinfo and scope_id 0 (28 octets, or 24 when the program passed 24: RFC 2133's form,
/// without scope_id). None for a length the kernel would refuse anyway (EINVAL), or another
/// family.
fn responder_sockaddr(dns: SocketAddr, family: i32, len: usize) -> Option<Vec<u8>> {
    let (sa, salen) = sockaddr::encode(dns, family)?;
    let min = if family == libc::AF_INET { salen as usize } else { 24 };
    if len < min {
        return None;
    }
    let n = len.min(salen as usize);
    // SAFETY: sa is a sockaddr_storage (128 octets, all initialized: encode starts from zeros),
    // and n <= salen <= 128.
    let bytes = unsafe { std::slice::from_raw_parts(std::ptr::addr_of!(sa).cast::<u8>(), n) };
    Some(bytes.to_vec())
}

/// The first nameserver of the resolv.conf process `tgid` sees (through its root), port 53;
/// without one, 127.0.0.1:53 (the default of musl and glibc).
fn first_nameserver(tgid: i32) -> SocketAddr {
    first_nameserver_in(&std::fs::read_to_string(format!("/proc/{tgid}/root/etc/resolv.conf")).unwrap_or_default())
}

fn first_nameserver_in(text: &str) -> SocketAddr {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some("nameserver")).then(|| f.next()).flatten()
        })
        .find_map(|a| a.parse::<std::net::IpAddr>().ok())
        .map_or(SocketAddr::from(([127, 0, 0, 1], route::DNS_PORT)), |ip| SocketAddr::new(ip, route::DNS_PORT))
}

/// One message of a send, as addresses in the target's memory.
#[derive(Clone, Copy)]
struct Msg {
    /// (msg_name, msg_namelen); (0, 0) without a destination.
    name: (u64, u32),
    data: DatagramAt,
}

/// The msghdr at `addr` in the target (a fault: the kernel stops there too).
fn read_msghdr(tid: i32, addr: u64) -> Result<Msg, Unread> {
    let mut raw = [0u8; std::mem::size_of::<libc::msghdr>()];
    read_mem(tid, addr, &mut raw)?;
    // SAFETY: raw is a fully initialized msghdr-sized buffer; every bit pattern is a valid
    // msghdr (pointers are only compared and passed back as numbers, never dereferenced here).
    let m: libc::msghdr = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) };
    let (p, l) = (m.msg_name as u64, m.msg_namelen);
    let name = if p != 0 && l != 0 { (p, l) } else { (0, 0) };
    Ok(Msg { name, data: DatagramAt::Iov(m.msg_iov as u64, m.msg_iovlen as u64) })
}

pub(super) fn local_addr(fd: i32) -> Option<SocketAddr> {
    let a = sys::local_addr(fd)?;
    Some(SocketAddr::new(cidr::unmap(a.ip()), a.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_responders_address_in_the_programs_form() {
        let dns: SocketAddr = "127.0.0.1:4242".parse().unwrap();
        let port = 4242u16.to_be_bytes();
        let mut v4 = (libc::AF_INET as u16).to_ne_bytes().to_vec();
        v4.extend_from_slice(&port);
        v4.extend_from_slice(&[127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(responder_sockaddr(dns, libc::AF_INET, 16), Some(v4.clone()));
        // A longer length (sockaddr_storage): the 16 octets the kernel reads.
        assert_eq!(responder_sockaddr(dns, libc::AF_INET, 128), Some(v4));
        assert_eq!(responder_sockaddr(dns, libc::AF_INET, 15), None);
        let mut v6 = (libc::AF_INET6 as u16).to_ne_bytes().to_vec();
        v6.extend_from_slice(&port);
        v6.extend_from_slice(&[0; 4]); // flowinfo
        v6.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1]);
        v6.extend_from_slice(&[0; 4]); // scope_id
        assert_eq!(responder_sockaddr(dns, libc::AF_INET6, 28), Some(v6.clone()));
        assert_eq!(responder_sockaddr(dns, libc::AF_INET6, 24), Some(v6[..24].to_vec()));
        assert_eq!(responder_sockaddr(dns, libc::AF_INET6, 23), None);
        assert_eq!(responder_sockaddr(dns, libc::AF_UNIX, 110), None);
    }

    #[test]
    fn unreadable_memory_is_a_fault_only_where_the_kernel_faults_too() {
        let me = std::process::id() as i32;
        let word = 0x5eed_u64;
        let mut buf = [0u8; 8];
        assert_eq!(read_mem(me, std::ptr::addr_of!(word) as u64, &mut buf), Ok(()));
        assert_eq!(u64::from_ne_bytes(buf), 0x5eed);
        // An unmapped page: the kernel's own copy fails there too (Continue).
        assert_eq!(read_mem(me, 0x1000, &mut buf), Err(Unread::Fault));
        // No such process (pid_max is at most 2^22): we may not look, so fail closed.
        assert_eq!(read_mem(i32::MAX, 0x1000, &mut buf), Err(Unread::Denied));
    }

    #[test]
    fn a_socket_that_cannot_be_taken_fails_as_the_kernel_would_or_is_refused() {
        assert_eq!(untaken(Errno(libc::EBADF)), Verdict::Fail(Errno(libc::EBADF)));
        assert_eq!(untaken(Errno(libc::ENOTSOCK)), Verdict::Fail(Errno(libc::ENOTSOCK)));
        for e in [libc::EPERM, libc::ESRCH, libc::EMFILE] {
            assert_eq!(untaken(Errno(e)), Verdict::Fail(Errno(libc::ECONNREFUSED)));
        }
    }

    #[test]
    fn first_nameserver_of_a_resolv_conf() {
        let t = "# comment\nsearch example.com\nnameserver  fd00::53\nnameserver 10.0.0.1\n";
        assert_eq!(first_nameserver_in(t), "[fd00::53]:53".parse().unwrap());
        assert_eq!(first_nameserver_in("nameserver bogus\nnameserver 10.0.0.1\n"), "10.0.0.1:53".parse().unwrap());
        assert_eq!(first_nameserver_in("options ndots:1\n"), "127.0.0.1:53".parse().unwrap());
    }
}

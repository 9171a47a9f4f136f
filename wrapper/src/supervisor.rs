//! The seccomp user-notify supervisor, for programs the preload library cannot reach: static
//! binaries (Go with CGO_ENABLED=0, musl-static), raw syscalls.
//!
//! Shape: the launcher forks the supervisor (double fork, so it is nobody's child: a shell's
//! bare `wait` never waits for it; own session, so terminal signals do not reach it), then
//! installs a seccomp filter on itself — `connect`, and `sendto` with an address, return
//! SECCOMP_RET_USER_NOTIF; everything else runs at full speed in the kernel — hands the listener
//! to the supervisor, and execs the command (same pid: exit status and signals are the
//! command's). The supervisor lives until every process of the tree is gone (the listener
//! reports POLLHUP), so daemons started in the tree stay supervised.
//!
//! On a notification it reads the address from the target's memory, checks the notification is
//! still valid, and decides with the library's own rules (tsproxy-core):
//! - not ours: SECCOMP_USER_NOTIF_FLAG_CONTINUE (the kernel carries on as if nothing happened);
//! - a tailnet TCP destination: it takes the socket (pidfd_getfd), runs the same handshake the
//!   library runs (`tunnel::establish`), and answers 0 or the mapped errno;
//! - a UDP or TCP socket connecting to port 53: the socket is connected to the supervisor's DNS
//!   responder instead, which answers tailnet names with the library's placeholders and forwards
//!   every other question, unchanged, to the server the program asked;
//! - a datagram to a tailnet destination: ENETUNREACH (never a direct packet).
//!
//! A process that also loads libtsproxy.so is handled by the library first: it never issues a
//! connect to a tailnet address (it connects to the proxy, which the supervisor lets through).
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tsproxy_core::config::{Config, IpClass, LogLevel};
use tsproxy_core::tunnel::{self, Opts, Resolved};
use tsproxy_core::{cidr, dns, names, sockaddr, sys, syscall, Target};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Auto,
    On,
    Off,
}

pub fn parse_mode(v: &str) -> Option<Mode> {
    match v {
        "auto" => Some(Mode::Auto),
        "on" => Some(Mode::On),
        "off" => Some(Mode::Off),
        _ => None,
    }
}

/// Can this kernel do it? seccomp user notification (5.0), CONTINUE (5.5), pidfd_getfd (5.6).
pub fn supported() -> Result<(), String> {
    let mut sizes = [0u16; 3];
    if syscall!(SYS_seccomp, 3 /* SECCOMP_GET_NOTIF_SIZES */, 0, sizes.as_mut_ptr()).is_err() {
        return Err("seccomp user notification is not available (Linux >= 5.6 needed)".into());
    }
    match syscall!(SYS_pidfd_getfd, -1, -1, 0) {
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => Err("pidfd_getfd is not available (Linux >= 5.6 needed)".into()),
        _ => Ok(()),
    }
}

fn log(cfg: &Config, level: LogLevel, msg: std::fmt::Arguments<'_>) {
    if level <= cfg.log {
        sys::write_all_fd(2, format!("tsproxy[supervisor] {msg}\n").as_bytes());
    }
}

/// The BPF program: notify on connect, and on sendto with a destination address; allow the rest,
/// and allow calls marked by libtsproxy.so (`sys::SECCOMP_MARK` in the upper half of the
/// socklen_t argument): the library has already decided about those, and a process that loads
/// it pays nothing extra for its pass-through connects. (Jump offsets count from the next
/// instruction: ALLOW is index 13, NOTIFY index 14.)
fn filter() -> Vec<libc::sock_filter> {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const ALLOW: u32 = 0x7fff_0000;
    const NOTIFY: u32 = 0x7fc0_0000;
    let mark = (sys::SECCOMP_MARK >> 32) as u32;
    let s = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    vec![
        s(LD_W_ABS, 0, 0, 4),                         // 0: arch
        s(JEQ_K, 0, 11, AUDIT_ARCH_X86_64),           // 1: other ABIs: allow
        s(LD_W_ABS, 0, 0, 0),                         // 2: nr
        s(JEQ_K, 0, 2, libc::SYS_connect as u32),     // 3: connect?
        s(LD_W_ABS, 0, 0, 36),                        // 4: args[2] high
        s(JEQ_K, 7, 8, mark),                         // 5: marked: allow, else notify
        s(JEQ_K, 0, 6, libc::SYS_sendto as u32),      // 6: not sendto: allow
        s(LD_W_ABS, 0, 0, 60),                        // 7: args[5] high
        s(JEQ_K, 4, 0, mark),                         // 8: marked: allow
        s(LD_W_ABS, 0, 0, 48),                        // 9: args[4] low
        s(JEQ_K, 0, 3, 0),                            // 10: addr != NULL: notify
        s(LD_W_ABS, 0, 0, 52),                        // 11: args[4] high
        s(JEQ_K, 0, 1, 0),                            // 12: addr != NULL: notify
        s(RET_K, 0, 0, ALLOW),                        // 13
        s(RET_K, 0, 0, NOTIFY),                       // 14
    ]
}

/// Fork the supervisor, install the filter on this process, hand over the listener. On Ok the
/// caller execs the command.
pub fn install(cfg: &Config) -> Result<(), String> {
    if !cfg!(target_arch = "x86_64") {
        return Err("the supervisor's filter is written for x86_64 only".into());
    }
    supported()?;
    // The DNS responder's socket is made here so its address can be handed to the command's
    // environment (TSPROXY_SUPERVISOR_DNS): the preload library in a supervised process
    // registers the tailnet names it resolves with it, so placeholders mean the same name on
    // both sides (Go dials with raw syscalls even when it resolved through glibc).
    let responder = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("DNS responder: {e}"))?;
    let dns_addr = responder.local_addr().map_err(|e| format!("DNS responder: {e}"))?;
    let mut sv = [0i32; 2];
    syscall!(SYS_socketpair, libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr()).map_err(|e| format!("socketpair: {e}"))?;
    // SAFETY: fork in a single-threaded launcher; the child only calls async-signal-safe code
    // until it forks again, and the grandchild then runs as a fresh single-threaded process.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: as above.
        let s2 = unsafe { libc::fork() };
        if s2 != 0 {
            // Tell the launcher who the supervisor is, then leave without atexit handlers.
            let _ = sys::send(sv[1], &s2.to_ne_bytes());
            // SAFETY: leaving the intermediate child.
            unsafe { libc::_exit(0) };
        }
        let _ = syscall!(SYS_close, sv[0]);
        supervise(sv[1], cfg.clone(), responder);
    }
    drop(responder);
    let _ = syscall!(SYS_close, sv[1]);
    let mut st = 0;
    // SAFETY: reaping the intermediate child we just forked.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    let mut buf = [0u8; 4];
    let spid = match sys::recv(sv[0], &mut buf, 0) {
        Ok(4) => i32::from_ne_bytes(buf),
        _ => {
            let _ = syscall!(SYS_close, sv[0]);
            return Err("the supervisor did not start".into());
        }
    };
    let r = install_filter_and_send(sv[0], spid);
    let _ = syscall!(SYS_close, sv[0]);
    if r.is_ok() {
        std::env::set_var("TSPROXY_SUPERVISOR_DNS", dns_addr.to_string());
    }
    r
}

fn install_filter_and_send(sock: i32, spid: i32) -> Result<(), String> {
    let prog_v = filter();
    let prog = libc::sock_fprog { len: prog_v.len() as u16, filter: prog_v.as_ptr() as *mut libc::sock_filter };
    syscall!(SYS_prctl, libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0).map_err(|e| format!("no_new_privs: {e}"))?;
    let listener = syscall!(SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, libc::SECCOMP_FILTER_FLAG_NEW_LISTENER, &prog as *const libc::sock_fprog)
        .map_err(|e| format!("seccomp: {e}"))? as i32;
    let sent = send_fd(sock, listener);
    let _ = syscall!(SYS_close, listener);
    sent.map_err(|e| format!("handing the listener over: {e}"))?;
    // Let the supervisor take our fds even where Yama restricts ptrace to ancestors. No need to
    // wait for it: notifications queue on the listener until it reads them.
    let _ = syscall!(SYS_prctl, libc::PR_SET_PTRACER, spid, 0, 0, 0);
    Ok(())
}

/// A one-byte message with room for one SCM_RIGHTS descriptor. The pointers in the msghdr
/// point into `byte` and `cbuf`, which the caller keeps alive across the syscall.
fn fd_msg(byte: &mut [u8; 1], iov: &mut libc::iovec, cbuf: &mut Vec<u8>) -> libc::msghdr {
    *iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) } as usize;
    cbuf.resize(space, 0);
    // SAFETY: all-zero msghdr is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    msg
}

fn send_fd(sock: i32, fd: i32) -> io::Result<()> {
    let (mut byte, mut iov, mut cbuf) = ([0u8; 1], libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }, Vec::new());
    let msg = fd_msg(&mut byte, &mut iov, &mut cbuf);
    // SAFETY: msg_control has room for one cmsg carrying an int (CMSG_SPACE above).
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), fd);
    }
    syscall!(SYS_sendmsg, sock, &msg as *const libc::msghdr, 0).map(|_| ())
}

fn recv_fd(sock: i32) -> io::Result<i32> {
    let (mut byte, mut iov, mut cbuf) = ([0u8; 1], libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }, Vec::new());
    let mut msg = fd_msg(&mut byte, &mut iov, &mut cbuf);
    syscall!(SYS_recvmsg, sock, &mut msg as *mut libc::msghdr, libc::MSG_CMSG_CLOEXEC)?;
    // SAFETY: the kernel filled msg_control; CMSG_FIRSTHDR checks the length.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_type != libc::SCM_RIGHTS {
            return Err(io::Error::from_raw_os_error(libc::EPROTO));
        }
        Ok(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>()))
    }
}

struct Sup {
    cfg: Config,
    listener: i32,
    ups: Vec<Resolved>,
    local_names: std::collections::HashSet<String>,
    dns: SocketAddr,
    /// DNS redirects: the program's socket (its local address) -> the server it asked for.
    dns_routes: Mutex<HashMap<SocketAddr, SocketAddr>>,
}

/// The supervisor process: never returns.
fn supervise(sock: i32, cfg: Config, responder: UdpSocket) -> ! {
    // SAFETY: setsid has no preconditions.
    unsafe { libc::setsid() };
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto stdin/stdout: the supervisor must not hold the program's pipes.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
    let listener = match recv_fd(sock) {
        Ok(fd) => fd,
        // SAFETY: exiting the supervisor process.
        Err(_) => unsafe { libc::_exit(0) },
    };
    let _ = syscall!(SYS_close, sock);
    let ups = cfg.proxies.iter().map(|up| Resolved { up: up.clone(), addrs: resolve_host(&up.host, up.port) }).collect();
    let sup = Arc::new(Sup {
        ups,
        local_names: local_names(),
        dns: responder.local_addr().expect("responder address"),
        dns_routes: Mutex::new(HashMap::new()),
        cfg,
        listener,
    });
    {
        let sup = sup.clone();
        std::thread::spawn(move || dns_loop(&sup, responder));
    }
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
        // Most connects are not ours: answer those here, at once. Only dials and DNS redirects
        // (which wait on a proxy or do I/O) get a thread of their own.
        if sup.not_ours(&n) {
            sup.respond(n.id, Verdict::Continue);
            continue;
        }
        let sup = sup.clone();
        std::thread::spawn(move || sup.handle(&n));
    }
    // SAFETY: exiting the supervisor process.
    unsafe { libc::_exit(0) }
}

/// The answer to a notification.
enum Verdict {
    Continue,
    Return(i64),
    Fail(i32),
}

impl Sup {
    fn respond(&self, id: u64, v: Verdict) {
        let (val, error, flags) = match v {
            Verdict::Continue => (0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32),
            Verdict::Return(v) => (v, 0, 0),
            Verdict::Fail(e) => (0, -e, 0),
        };
        let resp = libc::seccomp_notif_resp { id, val, error, flags };
        let _ = syscall!(SYS_ioctl, self.listener, libc::SECCOMP_IOCTL_NOTIF_SEND, &resp as *const libc::seccomp_notif_resp);
    }

    fn valid(&self, id: u64) -> bool {
        syscall!(SYS_ioctl, self.listener, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &id as *const u64).is_ok()
    }

    fn handle(&self, n: &libc::seccomp_notif) {
        let v = self.decide(n);
        self.respond(n.id, v);
    }

    /// Cheap check: is this clearly a connect/sendto the supervisor lets through?
    fn not_ours(&self, n: &libc::seccomp_notif) -> bool {
        let a = n.data.args;
        let is_connect = n.data.nr as i64 == libc::SYS_connect;
        let (ptr, len) = if is_connect { (a[1], a[2]) } else { (a[4], a[5]) };
        let mut raw = [0u8; 28];
        let len = (len as usize).min(raw.len());
        if ptr == 0 || len == 0 || read_mem(n.pid as i32, ptr, &mut raw[..len]).is_err() {
            return true;
        }
        // SAFETY: raw holds len initialized bytes.
        let Some(dest) = (unsafe { sockaddr::read(raw.as_ptr().cast(), len as libc::socklen_t) }) else { return true };
        let direct = matches!(self.cfg.classify_ip(cidr::unmap(dest.ip())), IpClass::Direct | IpClass::NoProxy);
        direct && !(is_connect && dest.port() == 53)
    }

    fn decide(&self, n: &libc::seccomp_notif) -> Verdict {
        let a = n.data.args;
        let (fd, addr_ptr, len) = if n.data.nr as i64 == libc::SYS_connect { (a[0] as i32, a[1], a[2]) } else { (a[0] as i32, a[4], a[5]) };
        let mut raw = [0u8; 128];
        let len = (len as usize).min(raw.len());
        if addr_ptr == 0 || len == 0 || read_mem(n.pid as i32, addr_ptr, &mut raw[..len]).is_err() {
            return Verdict::Continue; // the kernel will report the bad address itself
        }
        // Everything read from the target is acted on only if the notification is still live
        // (the pid cannot have been reused under us).
        if !self.valid(n.id) {
            return Verdict::Continue;
        }
        // SAFETY: raw holds len initialized bytes.
        let Some(dest) = (unsafe { sockaddr::read(raw.as_ptr().cast(), len as libc::socklen_t) }) else { return Verdict::Continue };
        let ip = cidr::unmap(dest.ip());
        let target = match self.cfg.classify_ip(ip) {
            IpClass::Tailnet => Some(Target::Ip(SocketAddr::new(ip, dest.port()))),
            IpClass::Placeholder => match names::slot_of(&ip).and_then(names::name) {
                Some(name) => Some(Target::Name(name.to_string(), dest.port())),
                None => return Verdict::Fail(libc::ECONNREFUSED),
            },
            IpClass::Direct | IpClass::NoProxy => None,
        };
        let is_connect = n.data.nr as i64 == libc::SYS_connect;
        if target.is_none() && !(is_connect && dest.port() == 53) {
            return Verdict::Continue;
        }
        let Some(local) = take_fd(n.pid as i32, fd) else {
            // Fail closed: never let a tailnet destination through unhandled.
            return if target.is_some() { Verdict::Fail(libc::ECONNREFUSED) } else { Verdict::Continue };
        };
        let v = self.act(local, dest, target, is_connect, raw[0] as i32 | (raw[1] as i32) << 8);
        let _ = syscall!(SYS_close, local);
        v
    }

    fn act(&self, fd: i32, dest: SocketAddr, target: Option<Target>, is_connect: bool, family: i32) -> Verdict {
        let ty = sys::getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TYPE).unwrap_or(0);
        let Some(target) = target else {
            // Port 53: hand the socket to our responder, remembering the server it asked for.
            let Some((sa, len)) = sockaddr::encode(self.dns, family) else { return Verdict::Continue };
            if ty != libc::SOCK_DGRAM || sys::connect_raw(fd, (&sa as *const libc::sockaddr_storage).cast(), len).is_err() {
                return Verdict::Continue;
            }
            if let Some(me) = local_addr(fd) {
                let mut routes = self.dns_routes.lock().unwrap();
                if routes.len() >= 4096 {
                    routes.clear(); // old sockets; a live one re-registers on its next connect
                }
                routes.insert(me, dest);
            }
            return Verdict::Return(0);
        };
        if !is_connect || ty != libc::SOCK_STREAM {
            log(&self.cfg, LogLevel::Info, format_args!("{target}: only TCP is proxied; refusing a datagram socket to a tailnet destination"));
            return Verdict::Fail(libc::ENETUNREACH);
        }
        if sys::is_connected(fd) {
            return Verdict::Fail(libc::EISCONN);
        }
        let t0 = Instant::now();
        let opts = Opts { deadline: t0 + self.cfg.timeout, read_cap: None, pipeline: self.cfg.pipeline };
        let cfg = &self.cfg;
        let r = tunnel::establish(fd, family, &self.ups, &target, &opts, &mut |l, a| log(cfg, l, a));
        match r {
            Ok(via) => {
                log(cfg, LogLevel::Debug, format_args!("connect {dest} {target} -> proxy {via} -> ok {}us (supervisor)", t0.elapsed().as_micros()));
                Verdict::Return(0)
            }
            Err(e) => {
                log(cfg, LogLevel::Info, format_args!("connect {dest} {target} -> {e} (supervisor)"));
                Verdict::Fail(e.raw())
            }
        }
    }
}

fn read_mem(pid: i32, addr: u64, buf: &mut [u8]) -> io::Result<()> {
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: buf.len() };
    let n = syscall!(SYS_process_vm_readv, pid, &local as *const libc::iovec, 1, &remote as *const libc::iovec, 1, 0)?;
    if n as usize != buf.len() {
        return Err(io::Error::from_raw_os_error(libc::EFAULT));
    }
    Ok(())
}

/// Our own descriptor for the target's socket. The notification names the calling *thread*;
/// pidfd_open wants its thread group (process).
fn take_fd(tid: i32, fd: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let pid: i32 = status.lines().find_map(|l| l.strip_prefix("Tgid:")).and_then(|v| v.trim().parse().ok())?;
    let pidfd = syscall!(SYS_pidfd_open, pid, 0).ok()? as i32;
    let r = syscall!(SYS_pidfd_getfd, pidfd, fd, 0).ok().map(|f| f as i32);
    let _ = syscall!(SYS_close, pidfd);
    r
}

fn local_addr(fd: i32) -> Option<SocketAddr> {
    // SAFETY: all-zero sockaddr_storage is valid.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    syscall!(SYS_getsockname, fd, &mut st as *mut libc::sockaddr_storage, &mut len as *mut libc::socklen_t).ok()?;
    // SAFETY: the kernel wrote len bytes.
    let a = unsafe { sockaddr::read(std::ptr::addr_of!(st).cast(), len) }?;
    Some(SocketAddr::new(cidr::unmap(a.ip()), a.port()))
}

fn resolve_host(host: &str, port: u16) -> Vec<SocketAddr> {
    use std::net::ToSocketAddrs;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return vec![SocketAddr::new(ip, port)];
    }
    if host == "localhost" {
        return vec![SocketAddr::from(([127, 0, 0, 1], port)), SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port))];
    }
    (host, port).to_socket_addrs().map(|a| a.collect()).unwrap_or_default()
}

fn local_names() -> std::collections::HashSet<String> {
    let mut set = std::collections::HashSet::new();
    if let Ok(t) = std::fs::read_to_string("/etc/hosts") {
        for line in t.lines() {
            let line = line.split('#').next().unwrap_or("");
            set.extend(line.split_whitespace().skip(1).map(tsproxy_core::config::normalize_name));
        }
    }
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = tsproxy_core::config::normalize_name(h.trim());
        if let Some((first, _)) = h.split_once('.') {
            set.insert(first.to_string());
        }
        set.insert(h);
    }
    set
}

/// The DNS responder: tailnet names get placeholders (from the same table the supervisor reads
/// at connect time); everything else is forwarded, unchanged, to the server the program asked.
fn dns_loop(sup: &Arc<Sup>, sock: UdpSocket) {
    let sock = Arc::new(sock);
    let mut buf = [0u8; 4096];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
        let query = buf[..n].to_vec();
        if let Some(q) = dns::parse_query(&query) {
            if sup.cfg.is_tailnet_name(&q.name, |n| sup.local_names.contains(n)) {
                let addr = names::intern(&q.name).map(|s| if q.qtype == dns::TYPE_AAAA { IpAddr::V6(names::v6(s)) } else { IpAddr::V4(names::v4(s)) });
                log(&sup.cfg, LogLevel::Debug, format_args!("dns {} type {} -> tailnet name, {addr:?}", q.name, q.qtype));
                let _ = sock.send_to(&dns::answer(&query, &q, addr), from);
                continue;
            }
        }
        let Some(server) = sup.dns_routes.lock().unwrap().get(&SocketAddr::new(cidr::unmap(from.ip()), from.port())).copied() else { continue };
        let sock = sock.clone();
        std::thread::spawn(move || {
            let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0".parse().unwrap() } else { "[::]:0".parse().unwrap() };
            let Ok(up) = UdpSocket::bind(bind) else { return };
            let _ = up.set_read_timeout(Some(Duration::from_secs(5)));
            if up.send_to(&query, server).is_err() {
                return;
            }
            let mut r = [0u8; 4096];
            if let Ok((m, _)) = up.recv_from(&mut r) {
                let _ = sock.send_to(&r[..m], from);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walk the program for a syscall, a sendto address argument and a socklen argument.
    fn run_len(nr: i64, arch: u32, addr: u64, len: u64) -> u32 {
        let prog = filter();
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&(nr as u32).to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        data[48..56].copy_from_slice(&addr.to_le_bytes());
        let len_at = if nr == libc::SYS_connect { 32 } else { 56 };
        data[len_at..len_at + 8].copy_from_slice(&len.to_le_bytes());
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = &prog[pc];
            match i.code {
                0x20 => acc = u32::from_le_bytes(data[i.k as usize..i.k as usize + 4].try_into().unwrap()),
                0x15 => {
                    pc += 1 + if acc == i.k { i.jt } else { i.jf } as usize;
                    continue;
                }
                0x06 => return i.k,
                c => panic!("opcode {c}"),
            }
            pc += 1;
        }
    }

    fn run(nr: i64, arch: u32, addr: u64) -> u32 {
        run_len(nr, arch, addr, 16)
    }

    #[test]
    fn filter_notifies_exactly_connect_and_addressed_sendto() {
        const X86_64: u32 = 0xc000_003e;
        const ALLOW: u32 = 0x7fff_0000;
        const NOTIFY: u32 = 0x7fc0_0000;
        assert_eq!(run(libc::SYS_connect, X86_64, 0), NOTIFY);
        assert_eq!(run(libc::SYS_sendto, X86_64, 0x7fff_0000_1000), NOTIFY);
        assert_eq!(run(libc::SYS_sendto, X86_64, 0x1000), NOTIFY);
        assert_eq!(run(libc::SYS_sendto, X86_64, 0), ALLOW);
        for nr in [libc::SYS_sendmsg, libc::SYS_read, libc::SYS_write, libc::SYS_socket, libc::SYS_recvfrom] {
            assert_eq!(run(nr, X86_64, 1), ALLOW, "nr {nr}");
        }
        assert_eq!(run(libc::SYS_connect, 0x4000_0003, 0), ALLOW);
        // Marked by the library: allowed without a notification.
        assert_eq!(run_len(libc::SYS_connect, X86_64, 0x1000, 16 | sys::SECCOMP_MARK), ALLOW);
        assert_eq!(run_len(libc::SYS_sendto, X86_64, 0x1000, 16 | sys::SECCOMP_MARK), ALLOW);
        assert_eq!(run_len(libc::SYS_connect, X86_64, 0x1000, 16 | 1 << 33), NOTIFY);
    }
}

//! Hardening regressions (no-root tier): one `#[test]` per known defect, each failing on the
//! build that has the defect. Every child runs under a time bound (killed after N seconds: a
//! hang is a failure, never a hung suite). Network: 127.0.0.1 / ::1 only.
mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- bounded runs

use common::child::{bounded as run, Run};

/// How a program gets the library.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// LD_PRELOAD=libtsproxy.so
    Preload,
    /// tsproxy --supervisor=off
    LauncherOff,
    /// tsproxy (supervisor auto)
    Launcher,
}

/// `prog` under the library, with `proxy` as the upstream.
fn under(via: Via, proxy: &str, prog: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = match via {
        Via::Preload => {
            let mut c = preloaded(prog);
            c.env("TSPROXY_PROXY", proxy);
            c
        }
        Via::LauncherOff | Via::Launcher => {
            let mut c = Command::new(launcher());
            c.env_remove("LD_PRELOAD").args(["--proxy", proxy]);
            if matches!(via, Via::LauncherOff) {
                c.arg("--supervisor=off");
            }
            c.arg("--").arg(prog);
            c
        }
    };
    for k in TSPROXY_ENV {
        if k != "TSPROXY_PROXY" || !matches!(via, Via::Preload) {
            c.env_remove(k);
        }
    }
    c
}

/// Fail with one line per failed run and the full output of the first.
fn verdict(what: &str, total: usize, failures: &[(String, String)]) {
    if let Some((_, first)) = failures.first() {
        let lines: Vec<&str> = failures.iter().map(|(l, _)| l.as_str()).collect();
        panic!("{} of {total} {what} failed:\n{}\n--- first failure in full:\n{first}", failures.len(), lines.join("\n"));
    }
}

fn socks_url() -> String {
    net().socks.url()
}

/// A SOCKS5 "proxy" that accepts connections and never answers (read and hold).
fn silent_proxy() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            thread::spawn(move || {
                let mut s = s;
                let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                let mut b = [0u8; 512];
                while matches!(s.read(&mut b), Ok(n) if n > 0) {}
            });
        }
    });
    a
}

// ---------------------------------------------------------------- 1. epoll tokens

/// Defect 1: a thread blocked in an epoll wait it entered while nothing was pending woke up
/// with the library's token (0x74737078_000000NN) as data. Fixed: the program only ever sees
/// its own data (0x1122334455667788), EPOLLOUT once the tunnel is up, and a request/reply
/// works — under every wait flavour, registration order, set moves, nested sets, and with
/// another thread blocked in poll/select on other fds; bare LD_PRELOAD and the launcher.
#[test]
fn epoll_tokens_never_reach_the_program() {
    let h = harness("h_epolltoken");
    let mut failures = Vec::new();
    for via in [Via::Preload, Via::LauncherOff, Via::Launcher] {
        for mode in ["wait", "pwait", "pwait2", "before", "move", "nested", "poll", "select"] {
            for round in 0..3 {
                let mut c = under(via, &socks_url(), &h);
                c.args([mode, "100.64.0.2", "80"]);
                let r = run(c, 15);
                let k = r.kv();
                let mut why = Vec::new();
                if !r.ok() {
                    why.push("exit".to_string());
                }
                if let Some(d) = k.get("bad_data") {
                    why.push(format!("bad_data={d}"));
                }
                let we = k.get("w_events").and_then(|v| u32::from_str_radix(v.trim_start_matches("0x"), 16).ok()).unwrap_or(0);
                if mode == "poll" || mode == "select" {
                    // W's wait on its pipe: one fd ready, only POLLIN.
                    if k.get("w_ret").map(String::as_str) != Some("1") || we != libc::POLLIN as u32 {
                        why.push(format!("w_ret={:?} w_events={we:#x}", k.get("w_ret")));
                    }
                    let ce = k.get("c_events").and_then(|v| u32::from_str_radix(v.trim_start_matches("0x"), 16).ok()).unwrap_or(0);
                    if ce & libc::EPOLLOUT as u32 == 0 {
                        why.push(format!("c_events={ce:#x}"));
                    }
                } else if we & libc::EPOLLOUT as u32 == 0 {
                    why.push(format!("w_events={we:#x} (no EPOLLOUT)"));
                }
                if mode == "move" && k.get("other_events").map(String::as_str) != Some("0") {
                    why.push(format!("set A not silent after DEL: {:?}", k.get("other_events")));
                }
                if k.get("reply").map(String::as_str) != Some("HTTP/1.0 200 OK") {
                    why.push(format!("reply={:?}", k.get("reply")));
                }
                if !why.is_empty() {
                    failures.push((format!("{via:?} {mode} #{round}: {}", why.join(", ")), r.text()));
                }
            }
        }
    }
    verdict("runs", 72, &failures);
}

// ---------------------------------------------------------------- 2. tokio

/// tests/programs/tokio-client built once (release, its own Cargo.lock).
fn tokio_client() -> PathBuf {
    static P: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/programs/tokio-client/Cargo.toml");
        let dir = target_dir().join("programs");
        let mut c = Command::new(env!("CARGO"));
        c.args(["build", "-q", "--release", "--locked", "--manifest-path"]).arg(&manifest).arg("--target-dir").arg(&dir);
        let r = run(c, 900);
        assert!(r.ok(), "building tokio-client failed:\n{}", r.text());
        dir.join("release/tokio-client")
    })
    .clone()
}

/// Defect 2: a multi-thread tokio runtime making 20 concurrent connects (to a tailnet address
/// and to a tailnet name resolved with lookup_host), 100 runs: no crash, every reply right.
#[test]
fn tokio_multi_thread_runtime() {
    let bin = tokio_client();
    let mut failures = Vec::new();
    let t0 = Instant::now();
    for i in 0..100 {
        let mut c = under(Via::Preload, &socks_url(), &bin);
        c.args(["100.64.0.2:80", "peer-1:80", "20"]);
        let r = run(c, 20);
        if !r.ok() || !r.stdout.contains("ok=20 fail=0") {
            let sig = r.signal().map(|s| format!(" signal {s}")).unwrap_or_default();
            failures.push((format!("run {i}: code {:?}{sig} timed_out={}", r.code(), r.timed_out), r.text()));
        }
    }
    eprintln!("tokio: 100 runs in {:.1} s", t0.elapsed().as_secs_f64());
    verdict("tokio runs", 100, &failures);
}

// ---------------------------------------------------------------- 3. gRPC

/// A python with grpcio: the system one if it has it, else a venv under the target dir
/// (created with pip). None (skip) when that fails, unless TSPROXY_REQUIRE_GRPC=1.
fn grpc_python() -> Option<PathBuf> {
    let has = |py: &Path| Command::new(py).args(["-c", "import grpc"]).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if has(Path::new("python3")) {
        return Some("python3".into());
    }
    let venv = target_dir().join("grpc-venv");
    let py = venv.join("bin/python");
    if !has(&py) {
        let mut c = Command::new("python3");
        c.args(["-m", "venv"]).arg(&venv);
        let r = run(c, 120);
        let mut why = (!r.ok()).then(|| r.text());
        if why.is_none() {
            let mut c = Command::new(&py);
            c.args(["-m", "pip", "install", "-q", "grpcio"]);
            let r = run(c, 600);
            why = (!r.ok()).then(|| r.text());
        }
        if let Some(why) = why.filter(|_| !has(&py)) {
            if std::env::var("TSPROXY_REQUIRE_GRPC").as_deref() == Ok("1") {
                panic!("grpcio is required (TSPROXY_REQUIRE_GRPC=1) and could not be installed:\n{why}");
            }
            eprintln!("gRPC test skipped: grpcio not installed and pip install failed:\n{why}");
            return None;
        }
    }
    Some(py)
}

/// Kills the child (by its id) when dropped.
struct KillOnDrop(std::process::Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const GRPC_SERVER: &str = r#"
import grpc, sys
from concurrent import futures
def echo(req, ctx):
    return b"pong:" + req
h = grpc.method_handlers_generic_handler("t.T", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})
s = grpc.server(futures.ThreadPoolExecutor(16))
s.add_generic_rpc_handlers((h,))
port = s.add_insecure_port("127.0.0.1:0")
s.start()
print(port, flush=True)
s.wait_for_termination(300)
"#;

const GRPC_CLIENT: &str = r#"
import grpc, sys, threading
errs, ok, lock = [], [0], threading.Lock()
def worker(target, i):
    try:
        with grpc.insecure_channel(target) as ch:
            call = ch.unary_unary("/t.T/Echo")
            for j in range(5):
                req = b"ping-%d-%d" % (i, j)
                r = call(req, timeout=10)
                if r != b"pong:" + req:
                    raise Exception("bad reply %r" % r)
                with lock:
                    ok[0] += 1
    except Exception as e:
        errs.append("%s: %r" % (target, e))
ts = [threading.Thread(target=worker, args=(sys.argv[1 + i % 2], i)) for i in range(6)]
for t in ts: t.start()
for t in ts: t.join()
print("ok=%d" % ok[0])
for e in errs: print("err=" + e.replace("\n", " "))
sys.exit(1 if errs else 0)
"#;

/// Defect 3: python grpcio (C-core event engine, native resolver) calling a server through
/// tunnels to a tailnet address and a tailnet name from 6 threads; 100 runs, 0 crashes.
#[test]
fn grpc_python_client() {
    let Some(py) = grpc_python() else { return };
    let mut server = Command::new(&py);
    server.args(["-c", GRPC_SERVER]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit()).env_remove("LD_PRELOAD");
    let mut server = KillOnDrop(server.spawn().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(server.0.stdout.take().unwrap()), &mut line).unwrap();
    let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("grpc server port: {line:?}"));
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    let socks = Socks::start(None, std::sync::Arc::new(move |_: &Dest| Dial::To(to)));
    let mut failures = Vec::new();
    let t0 = Instant::now();
    for i in 0..100 {
        let mut c = under(Via::Preload, &socks.url(), &py);
        c.args(["-c", GRPC_CLIENT, &format!("100.64.0.2:{port}"), &format!("peer-1:{port}")]).env("GRPC_DNS_RESOLVER", "native");
        let r = run(c, 20);
        if !r.ok() || !r.stdout.contains("ok=30") {
            let sig = r.signal().map(|s| format!(" signal {s}")).unwrap_or_default();
            failures.push((format!("run {i}: code {:?}{sig} timed_out={}", r.code(), r.timed_out), r.text()));
        }
    }
    eprintln!("grpc: 100 runs in {:.1} s", t0.elapsed().as_secs_f64());
    verdict("gRPC runs", 100, &failures);
}

// ---------------------------------------------------------------- 4. getpeername overflow

/// Defect 4: getpeername of a tunnelled AF_INET6 socket into a 16-byte buffer wrote the whole
/// 28-byte sockaddr_in6 (12 bytes past the buffer). Fixed: truncated like the kernel, canary
/// intact, full length (28) reported; recvfrom/recvmsg with a short msg_name likewise.
#[test]
fn getpeername_short_buffer_overflow() {
    let mut c = under(Via::Preload, &socks_url(), harness("h_peername"));
    c.args(["fd7a:115c:a1e0::2", "80"]);
    let r = run(c, 10);
    let k = r.kv();
    let ctx = r.text();
    assert_eq!(k.get("connect").map(String::as_str), Some("ok"), "{ctx}");
    assert_eq!(k.get("peer_canary").map(String::as_str), Some("ok"), "getpeername wrote past the caller's buffer: {ctx}");
    assert_eq!(k.get("peer_len").map(String::as_str), Some("28"), "{ctx}");
    assert_eq!(k.get("peer_prefix").map(String::as_str), Some("ok"), "the truncated address is the tailnet one: {ctx}");
    for call in ["recvfrom", "recvmsg"] {
        assert_eq!(k.get(&format!("{call}_canary")).map(String::as_str), Some("ok"), "{call} wrote past msg_name: {ctx}");
        let len = k.get(&format!("{call}_len")).map(String::as_str);
        assert!(matches!(len, Some("0") | Some("28")), "{call}: length as the kernel reports it: {ctx}");
    }
    assert!(r.ok(), "{ctx}");
}

// ---------------------------------------------------------------- 5. select >= 1024

/// Defect 5: select() with the pending socket at fd >= 1024 (on a heap fd_set big enough)
/// spun at 100% CPU forever. Fixed: it reports the socket writable when the tunnel is up.
#[test]
fn select_with_fd_above_1024() {
    let mut c = under(Via::Preload, &socks_url(), harness("h_select1024"));
    c.args(["slow", "80"]);
    let r = run(c, 12);
    let k = r.kv();
    let ctx = r.text();
    if let Some(why) = k.get("skip") {
        eprintln!("select_with_fd_above_1024 skipped: {why}");
        return;
    }
    assert!(!r.timed_out, "select() hung: {ctx}");
    assert!(k.get("fd").and_then(|v| v.parse::<i32>().ok()).is_some_and(|fd| fd >= 1024), "{ctx}");
    assert_eq!(k.get("connect").map(String::as_str), Some("EINPROGRESS"), "{ctx}");
    assert_eq!(k.get("select").map(String::as_str), Some("1"), "{ctx}");
    assert_eq!(k.get("writable").map(String::as_str), Some("1"), "{ctx}");
    assert_eq!(k.get("soerr").map(String::as_str), Some("0"), "{ctx}");
    assert!(k.get("cpu_ms").and_then(|v| v.parse::<f64>().ok()).is_some_and(|ms| ms < 500.0), "busy waiting: {ctx}");
    assert_eq!(k.get("reply").map(String::as_str), Some("HTTP/1.0 200 OK"), "{ctx}");
    assert!(r.ok(), "{ctx}");
}

// ---------------------------------------------------------------- 6. pthread_cancel

/// Defect 6: pthread_cancel of a thread blocked inside a hooked call (a pass-through connect
/// that never completes, poll on a pending handshake, a blocking tailnet connect) aborted the
/// process ("FATAL: exception not rethrown"). Fixed: the thread is cancelled cleanly,
/// pthread_join gives PTHREAD_CANCELED, the process exits 0.
#[test]
fn pthread_cancel_inside_hooks() {
    let silent = format!("socks5://{}", silent_proxy());
    let mut failures = Vec::new();
    for via in [Via::Preload, Via::LauncherOff, Via::Launcher] {
        for mode in ["loopback", "poll", "blocking"] {
            if matches!(via, Via::Launcher) && mode == "loopback" {
                // Under the supervisor the library's pass-through connect is a raw syscall and,
                // as documented in README.md, not a cancellation point.
                continue;
            }
            let mut c = under(via, &silent, harness("h_cancel"));
            c.arg(mode);
            if mode != "loopback" {
                c.args(["100.64.0.2", "80"]);
            }
            let r = run(c, 10);
            let k = r.kv();
            let mut why = Vec::new();
            if !r.ok() {
                why.push(format!("code {:?} signal {:?} timed_out={}", r.code(), r.signal(), r.timed_out));
            }
            if k.get("blocked").map(String::as_str) != Some("1") {
                why.push(format!("blocked={:?}", k.get("blocked")));
            }
            if k.get("joined").map(String::as_str) != Some("canceled") {
                why.push(format!("joined={:?}", k.get("joined")));
            }
            if mode == "loopback" && k.get("queue_full").map(String::as_str) != Some("1") {
                why.push("setup: could not fill the accept queue".into());
            }
            if !why.is_empty() {
                failures.push((format!("{via:?} {mode}: {}", why.join(", ")), r.text()));
            }
        }
    }
    verdict("cancellations", 8, &failures);
}

// ---------------------------------------------------------------- 7. connect timeout

/// Defect 7: a nonblocking connect whose proxy accepts and never answers never timed out.
/// Fixed: with TSPROXY_CONNECT_TIMEOUT=3 it fails with ETIMEDOUT in about 3 s (python asyncio
/// open_connection without wait_for; curl without -m).
#[test]
fn nonblocking_connect_times_out() {
    let silent = format!("socks5://{}", silent_proxy());
    let py = r#"
import asyncio, time
async def main():
    t = time.monotonic()
    try:
        await asyncio.open_connection("100.64.0.2", 80)
        print("result=connected")
    except OSError as e:
        print("result=errno%s" % e.errno)
    print("secs=%.2f" % (time.monotonic() - t))
asyncio.run(main())
"#;
    let mut failures = Vec::new();
    let mut c = under(Via::Preload, &silent, "python3");
    c.args(["-c", py]).env("TSPROXY_CONNECT_TIMEOUT", "3");
    let r = run(c, 12);
    let k = r.kv();
    let secs: f64 = k.get("secs").and_then(|v| v.parse().ok()).unwrap_or(f64::INFINITY);
    if r.timed_out || k.get("result") != Some(&format!("errno{}", libc::ETIMEDOUT)) || !(2.5..=5.5).contains(&secs) {
        failures.push((format!("asyncio open_connection: result={:?} secs={secs} killed={}", k.get("result"), r.timed_out), r.text()));
    }
    let mut c = under(Via::Preload, &silent, "curl");
    c.args(["-sS", "http://100.64.0.2/"]).env("TSPROXY_CONNECT_TIMEOUT", "3");
    let r = run(c, 12);
    // curl maps a connect() ETIMEDOUT to exit 28 (CURLE_OPERATION_TIMEDOUT; its message may
    // still read "Couldn't connect to server"), or to 7 with "timed out" in the message.
    let timed_out_exit = r.code() == Some(28) || (r.code() == Some(7) && r.stderr.to_lowercase().contains("timed out"));
    if r.timed_out || r.secs > 5.5 || !timed_out_exit {
        failures.push((format!("curl without -m: code={:?} secs={:.1} killed={}", r.code(), r.secs, r.timed_out), r.text()));
    }
    verdict("clients", 2, &failures);
}

// ---------------------------------------------------------------- 8. fork while pending

/// Defect 8: a child forked while a nonblocking handshake is pending (slow 1 s dial) that
/// exits after 2 s without touching the socket (or closes its copy) broke the parent's
/// connect (ECONNREFUSED). Fixed: the parent connects and gets its reply, every time. C
/// (epoll set filled before or after the fork; bare LD_PRELOAD and the launcher) and python
/// (os.fork, select.epoll); the runs go in parallel (each mostly sleeps). The C "poll" child
/// waits on the inherited socket itself: it must see it writable when the parent's tunnel is
/// up (the end is shared with the child), not before and not never.
#[test]
fn fork_while_handshake_pending() {
    let py = r#"
import os, select, socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setblocking(False)
print("connect=%s" % s.connect_ex(socket.getaddrinfo("slow", 80, socket.AF_INET)[0][4]), flush=True)
pid = os.fork()
if pid == 0:
    if sys.argv[1] == "close":
        s.close()
    time.sleep(2)
    os._exit(0)
ep = select.epoll()
ep.register(s.fileno(), select.EPOLLOUT)
print("events=%r" % ep.poll(8))
print("soerr=%d" % s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
s.setblocking(True)
s.settimeout(5)
try:
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    print("reply=" + s.recv(100).decode().split("\r\n")[0])
except OSError as e:
    print("reply=error %s" % e)
print("child=%d" % os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"#;
    let h = harness("h_fork");
    let mut cases: Vec<(String, Command)> = Vec::new();
    for via in [Via::Preload, Via::Launcher] {
        for child in ["sleep", "close", "poll"] {
            for when in ["after", "before"] {
                for round in 0..3 {
                    let mut c = under(via, &socks_url(), &h);
                    c.args([child, when, "slow", "80"]);
                    cases.push((format!("{via:?} C child={child} epoll-{when}-fork #{round}"), c));
                }
            }
            for round in 0..3 {
                let mut c = under(via, &socks_url(), "python3");
                c.args(["-c", py, child]);
                cases.push((format!("{via:?} python child={child} #{round}"), c));
            }
        }
    }
    // A dial slower than the child's life (3 s): the child exits, and SIGCHLD arrives, while
    // the parent's handshake is still pending.
    let http = net().http;
    let slow3 = Socks::start(None, std::sync::Arc::new(move |_: &Dest| Dial::Slow(Duration::from_secs(3), http)));
    for child in ["sleep", "close"] {
        for sigchld in [false, true] {
            for round in 0..3 {
                let mut c = under(Via::Preload, &slow3.url(), &h);
                c.args([child, "after", "100.64.0.2", "80"]);
                if sigchld {
                    c.env("H_SIGCHLD", "1");
                }
                cases.push((format!("Preload C 3s-dial child={child} sigchld-handler={sigchld} #{round}"), c));
            }
        }
    }
    let total = cases.len();
    let results: Vec<(String, Run)> = thread::scope(|sc| {
        let hs: Vec<_> = cases.into_iter().map(|(name, c)| sc.spawn(move || (name, run(c, 15)))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut failures = Vec::new();
    for (name, r) in results {
        let k = r.kv();
        let get = |key: &str| k.get(key).map(String::as_str).unwrap_or("-").to_string();
        if !r.ok() || get("soerr") != "0" || get("reply") != "HTTP/1.0 200 OK" || get("child") != "0" {
            failures.push((format!("{name}: soerr={} reply={:?} child={} code={:?}", get("soerr"), get("reply"), get("child"), r.code()), r.text()));
        }
    }
    verdict("runs", total, &failures);
}

/// A vfork child runs in its parent's memory (with a descriptor table of its own) until it
/// execs. CPython's subprocess (vfork since 3.10) closes, dup2s and close_ranges descriptors
/// there; the library did the bookkeeping of those calls in the parent's tables, so a handshake
/// pending in the parent was cancelled by the child: the parent's epoll never saw the socket
/// connect (events=0) and the proxy's SOCKS5 reply was left in the stream for the program to
/// read. Fixed: in a vfork child close/dup*/close_range go to libc untouched.
#[test]
fn vfork_child_while_handshake_pending() {
    let py = r#"
import select, socket, subprocess, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setblocking(False)
ep = select.epoll()
ep.register(s.fileno(), select.EPOLLOUT)
print("connect=%s" % s.connect_ex(socket.getaddrinfo("slow", 80, socket.AF_INET)[0][4]), flush=True)
# close_fds (close_range in the vfork child), and dup2 for stdin/stdout.
print("child=%d" % subprocess.run(["true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL).returncode, flush=True)
print("events=%r" % ep.poll(8))
print("soerr=%d" % s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
s.setblocking(True)
s.settimeout(5)
try:
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    print("reply=" + s.recv(100).decode("latin-1").split("\r\n")[0])
except OSError as e:
    print("reply=error %s" % e)
"#;
    let h = harness("h_fork");
    let mut cases: Vec<(String, Command)> = Vec::new();
    for via in [Via::Preload, Via::Launcher] {
        for child in ["vfork-close", "vfork-close_range", "vfork-dup2"] {
            for when in ["after", "before"] {
                let mut c = under(via, &socks_url(), &h);
                c.args([child, when, "slow", "80"]);
                cases.push((format!("{via:?} C child={child} epoll-{when}-vfork"), c));
            }
        }
        let mut c = under(via, &socks_url(), "python3");
        c.args(["-c", py]);
        cases.push((format!("{via:?} python subprocess.run"), c));
    }
    let total = cases.len();
    let results: Vec<(String, Run)> = thread::scope(|sc| {
        let hs: Vec<_> = cases.into_iter().map(|(name, c)| sc.spawn(move || (name, run(c, 15)))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut failures = Vec::new();
    for (name, r) in results {
        let k = r.kv();
        let get = |key: &str| k.get(key).map(String::as_str).unwrap_or("-").to_string();
        let events_ok = get("events") == "0x4" || get("events").ends_with(", 4)]");
        if !r.ok() || !events_ok || get("soerr") != "0" || get("reply") != "HTTP/1.0 200 OK" || get("child") != "0" {
            failures.push((
                format!("{name}: events={} soerr={} reply={:?} child={} code={:?}", get("events"), get("soerr"), get("reply"), get("child"), r.code()),
                r.text(),
            ));
        }
    }
    verdict("runs", total, &failures);
}

/// The pid tsproxy takes for its own was cached by the first code that needed it: in a vfork
/// child that was the first to use tsproxy, that was the child's pid, in the parent's memory.
/// The parent then could not find its own epoll registrations (kcmp with a dead pid), so a
/// socket added before a tailnet connect was reported writable at once, while the tunnel was
/// still being made. Fixed: the pid is cached at load and in every fork child, never by a
/// vfork child.
#[test]
fn a_vfork_child_never_leaves_its_pid_as_the_parents() {
    let h = harness("h_vforkpid");
    let mut failures = Vec::new();
    for via in [Via::Preload, Via::Launcher] {
        let mut c = under(via, &socks_url(), &h);
        c.args(["slow", "80"]);
        let r = run(c, 15);
        let k = r.kv();
        let ms = k.get("wait_ms").and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        if !r.ok() || k.get("events").map(String::as_str) != Some("0x4") || ms < 700.0 {
            failures.push((format!("{via:?}: events={:?} after {ms} ms (the dial takes ~1 s)", k.get("events")), r.text()));
        }
    }
    verdict("runs", 2, &failures);
}

/// epoll_ctl on a socket still handshaking is answered by the library from the registrations
/// it keeps aside. It read the caller's event through the raw pointer (a bad one crashed the
/// program with SIGSEGV where the kernel answers EFAULT) and accepted what the kernel refuses
/// with EINVAL: a MOD of an EPOLLEXCLUSIVE registration (answered 0), EPOLLEXCLUSIVE in a MOD.
/// The expected answers are the kernel's for a socket in SYN_SENT (checked by hand with a
/// connect that is never answered, in a private network namespace).
#[test]
fn epoll_ctl_on_a_pending_socket_answers_as_the_kernel() {
    let h = harness("h_epollctl");
    let want = [
        ("add_excl", "0"),
        ("connect", "EINPROGRESS"),
        ("mod_of_excl", "EINVAL"),
        ("add_bad_ptr", "EFAULT"),
        ("mod_bad_ptr", "EFAULT"),
        ("add_excl_oneshot", "EINVAL"),
        ("add", "0"),
        ("mod_to_excl", "EINVAL"),
        ("mod", "0"),
        ("events", "0x4 data=2"),
        ("done", "1"),
    ];
    let mut failures = Vec::new();
    let mut total = 0;
    for via in [Via::Preload, Via::Launcher] {
        total += 1;
        let mut c = under(via, &socks_url(), &h);
        c.args(["slow", "80"]);
        let r = run(c, 15);
        let k = r.kv();
        let wrong: Vec<String> = want
            .iter()
            .filter(|(key, v)| k.get(*key).map(String::as_str) != Some(*v))
            .map(|(key, v)| format!("{key}={} (want {v})", k.get(*key).map(String::as_str).unwrap_or("-")))
            .collect();
        if !r.ok() || !wrong.is_empty() {
            failures.push((format!("{via:?}: {} code={:?}", wrong.join(" "), r.code()), r.text()));
        }
    }
    verdict("runs", total, &failures);
}

/// A blocking receive or send on a socket still handshaking waited for the tunnel whatever
/// asked it not to: MSG_DONTWAIT, SO_RCVTIMEO/SO_SNDTIMEO (recv returned the peer's bytes after
/// the ~1 s dial, send sent after it) and a signal handler without SA_RESTART (no EINTR). The
/// kernel ends those waits on a socket in SYN_SENT with EAGAIN at once, EAGAIN at the timeout
/// and EINTR (checked by hand with a SYN that is never answered, in a private netns).
#[test]
fn blocking_io_on_a_pending_socket_keeps_the_kernels_timeouts_and_signals() {
    let h = harness("h_pendwait");
    let mut failures = Vec::new();
    let mut total = 0;
    for via in [Via::Preload, Via::Launcher] {
        total += 1;
        let mut c = under(via, &socks_url(), &h);
        c.args(["slow", "80"]);
        let r = run(c, 20);
        let k = r.kv();
        let get = |key: &str| k.get(key).map(String::as_str).unwrap_or("-").to_string();
        let ms = |key: &str| get(key).parse::<f64>().unwrap_or(f64::MAX);
        let mut wrong = Vec::new();
        for (key, want, lo, hi) in
            [("dontwait", "EAGAIN", 0.0, 100.0), ("rcvtimeo", "EAGAIN", 250.0, 700.0), ("sndtimeo", "EAGAIN", 250.0, 700.0), ("eintr", "EINTR", 250.0, 700.0)]
        {
            let t = ms(&format!("{key}_ms"));
            if get(key) != want || t < lo || t > hi {
                wrong.push(format!("{key}={} after {t} ms (want {want} in {lo}..{hi})", get(key)));
            }
        }
        if get("reply") != "HTTP/1.0 200 OK" {
            wrong.push(format!("reply={:?}", get("reply")));
        }
        if !r.ok() || !wrong.is_empty() {
            failures.push((format!("{via:?}: {} code={:?}", wrong.join("; "), r.code()), r.text()));
        }
    }
    verdict("runs", total, &failures);
}

// ---------------------------------------------------------------- 9. sendfile/splice/sendmmsg

/// Defect 9: sendfile/splice/sendmmsg on a socket still handshaking were accepted and their
/// bytes went into the SOCKS handshake. Fixed: EAGAIN while pending (as in SYN_SENT); once the
/// tunnel is up the same call delivers the request intact.
#[test]
fn zero_copy_sends_while_pending() {
    let mut failures = Vec::new();
    for op in ["sendfile", "splice", "sendmmsg"] {
        let mut c = under(Via::Preload, &socks_url(), harness("h_pendio"));
        c.args([op, "slow", "80"]);
        let r = run(c, 15);
        let k = r.kv();
        let get = |key: &str| k.get(key).map(String::as_str).unwrap_or("-").to_string();
        let sent = if op == "sendmmsg" { "2" } else { "18" };
        if !r.ok() || get("pending") != "EAGAIN" || get("soerr") != "0" || get("sent") != sent || get("reply") != "HTTP/1.0 200 OK" {
            failures.push((format!("{op}: pending={} soerr={} sent={} reply={:?}", get("pending"), get("soerr"), get("sent"), get("reply")), r.text()));
        }
    }
    verdict("calls", 3, &failures);
}

// ---------------------------------------------------------------- 10. stale per-fd state

/// Defect 10: a handshaking socket closed where the close hook cannot see it
/// (fclose(fdopen(s)), syscall(SYS_close)) left per-fd state behind: the next socket with that
/// fd number could not connect (EISCONN), or got the stale handshake's errno (ENETUNREACH) on a
/// plain loopback connect. Fixed: the new socket connects normally.
#[test]
fn stale_state_after_hidden_close() {
    let peer = net().http.port().to_string();
    let mut failures = Vec::new();
    for closer in ["fclose", "syscall"] {
        for name in ["hang", "netunreach"] {
            for nb in ["0", "1"] {
                let mut c = under(Via::Preload, &socks_url(), harness("h_stale"));
                c.args([closer, name, "7", &peer, nb]);
                let r = run(c, 10);
                let k = r.kv();
                let get = |key: &str| k.get(key).map(String::as_str).unwrap_or("-").to_string();
                if !r.ok() || get("same_fd") != "1" || get("connect2") != "0" || get("soerr") != "0" || get("reply") != "HTTP/1.0 200 OK" {
                    failures.push((
                        format!(
                            "{closer} {name} nonblocking={nb}: same_fd={} connect2={} soerr={} reply={:?}",
                            get("same_fd"),
                            get("connect2"),
                            get("soerr"),
                            get("reply")
                        ),
                        r.text(),
                    ));
                }
            }
        }
    }
    verdict("runs", 8, &failures);
}

// ---------------------------------------------------------------- 11. logging

fn scratch(name: &str) -> PathBuf {
    let d = target_dir().join("hardening-tmp");
    std::fs::create_dir_all(&d).unwrap();
    let p = d.join(format!("{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// Defect 11: (a) with stderr closed and fd 2 reused for a data file, log lines went into the
/// file; (b) an unopenable TSPROXY_LOG_FILE made every log vanish silently (fixed: one line on
/// stderr says so); (c) a >255-byte *.ts.net name was logged as "name table full" (fixed: not
/// that, no crash, never sent to the proxy).
#[test]
fn logging_fd2_reuse_bad_log_file_long_name() {
    let dead = format!("socks5://{}", closed_port());
    let mut failures = Vec::new();
    // (a) fd 2 reused for a data file.
    let data = scratch("fd2.dat");
    let mut c = under(Via::Preload, &dead, harness("h_log"));
    c.arg("fd2").arg(&data).args(["100.64.0.2", "80"]);
    let r = run(c, 10);
    let k = r.kv();
    let body = std::fs::read_to_string(&data).unwrap_or_default();
    let _ = std::fs::remove_file(&data);
    if !r.ok() || k.get("fd").map(String::as_str) != Some("2") || k.get("connect").map(String::as_str) != Some("ECONNREFUSED") || body != "DATA\nEND\n" {
        failures.push((format!("(a) fd 2 reused: fd={:?} connect={:?} file={body:?}", k.get("fd"), k.get("connect")), r.text()));
    }
    // (b) an unopenable log file.
    let mut c = under(Via::Preload, &dead, harness("h_log"));
    c.args(["plain", "100.64.0.2", "80"]).env("TSPROXY_LOG_FILE", "/nonexistent/dir/x.log");
    let r = run(c, 10);
    let said = r.stderr.lines().filter(|l| l.contains("/nonexistent/dir/x.log")).count();
    if !r.ok() || r.kv().get("connect").map(String::as_str) != Some("ECONNREFUSED") || said != 1 {
        failures.push((format!("(b) TSPROXY_LOG_FILE unopenable: {said} stderr lines name it (want 1)"), r.text()));
    }
    // (c) a name longer than 255 bytes.
    let mut c = under(Via::Preload, &socks_url(), harness("h_log"));
    c.arg("longname").env("TSPROXY_LOG", "debug");
    let r = run(c, 10);
    let leaked: Vec<Dest> = net().socks.seen().into_iter().filter(|d| matches!(d, Dest::Name(n, _) if n.contains("longlabel-"))).collect();
    let connect = r.kv().get("connect").cloned();
    if !r.ok() || r.stderr.contains("name table full") || connect.as_deref() == Some("ok") || !leaked.is_empty() {
        failures.push((
            format!("(c) >255-byte name: \"name table full\" logged={} connect={connect:?} reached proxy={leaked:?}", r.stderr.contains("name table full")),
            r.text(),
        ));
    }
    verdict("logging checks", 3, &failures);
}

// ---------------------------------------------------------------- 12. IPV6_V6ONLY

/// A SOCKS5 proxy on [::1] that fails every handshake: `close_after_greeting` closes after
/// reading the greeting, else it answers the request with REP 0x05 (connection refused).
fn failing_v6_proxy(close_after_greeting: bool) -> Option<SocketAddr> {
    let l = TcpListener::bind("[::1]:0").ok()?;
    let a = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            thread::spawn(move || {
                let mut s = s;
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut g = [0u8; 3];
                if s.read_exact(&mut g).is_err() || close_after_greeting {
                    return;
                }
                let _ = s.write_all(&[5, 0]);
                let mut b = [0u8; 512];
                let _ = s.read(&mut b);
                let _ = s.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
                let _ = s.read(&mut b);
            });
        }
    });
    Some(a)
}

/// Defect 12: an IPV6_V6ONLY socket whose handshake fails through a proxy on [::1] reported
/// ECONNRESET from SO_ERROR (the "refused for real" reconnect cannot use an IPv4 address on a
/// v6-only socket). Fixed: ECONNREFUSED.
#[test]
fn v6only_socket_failed_handshake_is_refused() {
    let mut failures = Vec::new();
    for close in [true, false] {
        let Some(p) = failing_v6_proxy(close) else {
            eprintln!("v6only test skipped: cannot bind [::1]");
            return;
        };
        let mut c = under(Via::Preload, &format!("socks5://{p}"), harness("h_v6only"));
        c.args(["fd7a:115c:a1e0::2", "80"]);
        let r = run(c, 10);
        let k = r.kv();
        let get = |key: &str| k.get(key).map(String::as_str).unwrap_or("-").to_string();
        let refused = get("soerr") == "ECONNREFUSED" || (get("connect") == "ECONNREFUSED" && !k.contains_key("soerr"));
        if !r.ok() || !refused {
            let what = if close { "close after greeting" } else { "REP 0x05" };
            failures.push((format!("{what}: connect={} soerr={}", get("connect"), get("soerr")), r.text()));
        }
    }
    verdict("handshakes", 2, &failures);
}

// ---------------------------------------------------------------- 13. forced panic

/// The cdylib built with the `test-panic` feature; None while the feature does not exist.
fn panic_lib() -> Option<PathBuf> {
    let dir = target_dir().join("panic-build");
    let mut c = Command::new(env!("CARGO"));
    c.args(["build", "-p", "tsproxy-preload", "--features", "test-panic", "--target-dir"]).arg(&dir).current_dir(env!("CARGO_MANIFEST_DIR"));
    let r = run(c, 900);
    if !r.ok() {
        let missing = ["does not have that feature", "does not have the feature", "does not contain this feature"];
        if missing.iter().any(|m| r.stderr.contains(m)) && r.stderr.contains("test-panic") {
            eprintln!("forced_panic_fails_closed skipped: the library has no `test-panic` feature yet");
            return None;
        }
        panic!("building with --features test-panic failed:\n{}", r.text());
    }
    Some(dir.join("debug/libtsproxy.so"))
}

/// Defect 13: a panic inside the library while a table lock is held (forced by the
/// `test-panic` feature and TSPROXY_TEST_PANIC=1, during a nonblocking tailnet connect) must
/// fail closed — connect returns -1 ECONNREFUSED — without hanging, and afterwards a loopback
/// connect and a write to stderr still work.
#[test]
fn forced_panic_fails_closed() {
    let Some(lib) = panic_lib() else { return };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let lo = listener.local_addr().unwrap().port().to_string();
    let mut c = Command::new(harness("h_panic"));
    for k in TSPROXY_ENV {
        c.env_remove(k);
    }
    c.args(["100.64.0.2", "80", &lo]).env("LD_PRELOAD", &lib).env("TSPROXY_PROXY", socks_url()).env("TSPROXY_TEST_PANIC", "1");
    let r = run(c, 10);
    let k = r.kv();
    let ctx = r.text();
    assert!(!r.timed_out, "hung after the panic: {ctx}");
    assert_eq!(k.get("connect").map(String::as_str), Some("ECONNREFUSED"), "fail closed: {ctx}");
    assert_eq!(k.get("loopback").map(String::as_str), Some("ok"), "{ctx}");
    assert_eq!(k.get("stderr_write").map(String::as_str), Some("13"), "{ctx}");
    assert!(r.stderr.contains("stderr-alive"), "{ctx}");
    assert!(r.ok(), "{ctx}");
    drop(listener);
}

// ---------------------------------------------------------------- close_range
/// A program's close_range(3, ~0U) (daemons at start, children before exec) cleared tsproxy's
/// marks on its own descriptors before looking for them, and so closed the driver's epoll set
/// and wake-up eventfds under the library. Fixed: the range is closed around them, as intended,
/// and a nonblocking connect afterwards works. Also through `syscall(SYS_close_range)`, which
/// the `syscall` export now hands to the same hook.
#[test]
fn close_range_spares_tsproxys_descriptors() {
    for how in [&["slow", "80"][..], &["slow", "80", "syscall"][..]] {
        let mut c = under(Via::Preload, &socks_url(), harness("h_closerange"));
        c.args(how);
        let r = run(c, 20);
        let k = r.kv();
        let ctx = format!("{how:?}: {}", r.text());
        assert!(!r.timed_out, "hung: {ctx}");
        assert_eq!(k.get("first").map(String::as_str), Some("ok"), "{ctx}");
        assert_eq!(k.get("closed").map(String::as_str), Some("ok"), "{ctx}");
        assert_eq!(k.get("second").map(String::as_str), Some("ok"), "{ctx}");
        assert_eq!(k.get("second_reply").map(String::as_str), Some("HTTP/1.0 200 OK"), "{ctx}");
        assert!(r.ok(), "{ctx}");
    }
}

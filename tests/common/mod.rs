//! Shared test parts: paths of the built artifacts, c-harness compilation, and small real
//! servers on 127.0.0.1 (a recording SOCKS5 proxy, an HTTP CONNECT proxy, peers).
#![allow(dead_code)]

/// Children under a time bound.
pub mod child;
/// A Debian rootfs (mmdebstrap, cached) and `make deb`, for the package tests.
pub mod debian;
/// The root tier's namespaces with per-uid leak and DNS meters, for the adversarial tests.
pub mod world;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

/// target/<profile>/ (the test binary lives in target/<profile>/deps/).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// `cargo test` builds only the rlib of the library for the tests, not the cdylib the tests
/// preload: build the .so and the launcher (fast when fresh), once per test process.
fn ensure_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        // The launcher as shipped: static (scripts/build.sh says why it is a second step).
        let release = target_dir().file_name().is_some_and(|n| n == "release");
        for args in [
            &["build", "-q", "-p", "tsproxy-preload"][..],
            &["rustc", "-q", "-p", "tsproxy-launcher", "--bin", "tsproxy", "--", "-C", "target-feature=+crt-static"][..],
        ] {
            let mut c = Command::new(env!("CARGO"));
            let (head, tail) = args.split_at(args.iter().position(|a| *a == "--").unwrap_or(args.len()));
            c.args(head).current_dir(env!("CARGO_MANIFEST_DIR"));
            if release {
                c.arg("--release");
            }
            c.args(tail);
            let st = c.status().expect("cargo");
            assert!(st.success(), "building libtsproxy.so and tsproxy failed: cargo {args:?}");
        }
    });
}

pub fn lib() -> PathBuf {
    ensure_built();
    let p = target_dir().join("libtsproxy.so");
    assert!(p.is_file(), "{} missing: run `cargo test --workspace` or `make test`", p.display());
    p
}

pub fn launcher() -> PathBuf {
    ensure_built();
    let p = target_dir().join("tsproxy");
    assert!(p.is_file(), "{} missing: run `cargo test --workspace` or `make test`", p.display());
    p
}

/// Compile c-harness/NAME.c once per test process into target/<profile>/c-harness/.
pub fn harness(name: &str) -> PathBuf {
    harness_with(name, &[])
}

/// As [`harness`], with extra compiler/linker arguments (`-lresolv`...).
pub fn harness_with(name: &str, extra: &[&str]) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("c-harness").join(format!("{name}.c"));
    let dir = target_dir().join("c-harness");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(name);
    let fresh = out.metadata().and_then(|o| Ok(o.modified()? >= src.metadata()?.modified()?)).unwrap_or(false);
    if !fresh {
        let tmp = dir.join(format!(".{name}.{}", std::process::id()));
        let st = Command::new("cc").args(["-O2", "-Wall", "-o"]).arg(&tmp).arg(&src).args(extra).status().expect("cc");
        assert!(st.success(), "compiling {name}.c failed");
        std::fs::rename(&tmp, &out).unwrap();
    }
    out
}

/// Parse key=value lines.
pub fn kv(out: &Output) -> HashMap<String, String> {
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect()
}

pub fn text(out: &Output) -> String {
    format!("status={:?}\n--- stdout\n{}--- stderr\n{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Every variable that configures tsproxy (or the proxy it uses): removed from a child's
/// environment so the tests' own settings are the only ones.
pub const TSPROXY_ENV: [&str; 19] = [
    "TSPROXY_PROXY",
    "TSPROXY_PROXYCHAINS_CONF",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "TSPROXY_ROUTES",
    "TSPROXY_DOMAINS",
    "TSPROXY_SHORT_NAMES",
    "TSPROXY_LOG",
    "TSPROXY_LOG_FILE",
    "TSPROXY_CONNECT_TIMEOUT",
    "TSPROXY_SOCKS_PIPELINE",
    "TSPROXY_PROXY_OWNER",
    "TSPROXY_SUPERVISOR",
    "http_proxy",
    "https_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
];

/// A command with LD_PRELOAD=libtsproxy.so and a clean tsproxy environment.
pub fn preloaded(prog: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(prog);
    for k in TSPROXY_ENV {
        c.env_remove(k);
    }
    c.env("LD_PRELOAD", lib());
    c
}

// ---------------------------------------------------------------- peers

/// A peer that speaks first: on accept it writes `HELLO <tag>\r\n`, echoes one line as
/// `ECHO <line>\r\n` if it arrives within 300 ms, and closes. Speaking first proves the
/// handshake reads exactly.
pub fn banner_peer(tag: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let _ = w.write_all(format!("HELLO {tag}\r\n").as_bytes());
                let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
                let mut line = String::new();
                if BufReader::new(s).read_line(&mut line).unwrap_or(0) > 0 {
                    let _ = w.write_all(format!("ECHO {}\r\n", line.trim_end()).as_bytes());
                }
                let _ = w.shutdown(Shutdown::Both);
            });
        }
    });
    a
}

/// A minimal HTTP/1.0 server answering every request with `hello from <tag>`.
pub fn http_peer(tag: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" || line == "\n" {
                        break;
                    }
                }
                let body = format!("hello from {tag}\n");
                let mut s = s;
                let _ = write!(s, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = s.shutdown(Shutdown::Write);
            });
        }
    });
    a
}

/// A port on 127.0.0.1 where nothing listens.
pub fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

// ---------------------------------------------------------------- SOCKS5

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    V4(std::net::Ipv4Addr, u16),
    V6(std::net::Ipv6Addr, u16),
    Name(String, u16),
}

/// What the fake tailnet does with a destination: connect here, or answer with this REP.
pub enum Dial {
    To(SocketAddr),
    Rep(u8),
    /// Accept the request and never answer.
    Hang,
    /// A slow dial: wait this long, then connect.
    Slow(Duration, SocketAddr),
}

pub type Router = Arc<dyn Fn(&Dest) -> Dial + Send + Sync>;

/// An in-process SOCKS5 server on 127.0.0.1 that reads the handshake with exact-length reads
/// (as tailscaled does, so pipelined greeting+request works), records every CONNECT and relays.
pub struct Socks {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Dest>>>,
}

impl Socks {
    pub fn start(auth: Option<(&'static str, &'static str)>, router: Router) -> Socks {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        thread::spawn(move || {
            for s in l.incoming().flatten() {
                let (seen, router) = (seen2.clone(), router.clone());
                thread::spawn(move || {
                    let _ = socks_session(s, auth, &router, &seen);
                });
            }
        });
        Socks { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("socks5://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Dest> {
        self.seen.lock().unwrap().clone()
    }
}

fn exact(s: &mut TcpStream, n: usize) -> std::io::Result<Vec<u8>> {
    let mut v = vec![0; n];
    s.read_exact(&mut v)?;
    Ok(v)
}

fn socks_session(mut s: TcpStream, auth: Option<(&str, &str)>, router: &Router, seen: &Mutex<Vec<Dest>>) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let h = exact(&mut s, 2)?;
    assert_eq!(h[0], 5);
    let methods = exact(&mut s, h[1] as usize)?;
    match auth {
        None => {
            if !methods.contains(&0) {
                return s.write_all(&[5, 0xff]);
            }
            s.write_all(&[5, 0])?;
        }
        Some((u, p)) => {
            if !methods.contains(&2) {
                return s.write_all(&[5, 0xff]);
            }
            s.write_all(&[5, 2])?;
            let v = exact(&mut s, 2)?;
            let user = exact(&mut s, v[1] as usize)?;
            let pl = exact(&mut s, 1)?;
            let pass = exact(&mut s, pl[0] as usize)?;
            if user != u.as_bytes() || pass != p.as_bytes() {
                return s.write_all(&[1, 1]);
            }
            s.write_all(&[1, 0])?;
        }
    }
    let r = exact(&mut s, 4)?;
    assert_eq!(&r[..3], &[5, 1, 0]);
    let dest = match r[3] {
        1 => {
            let a = exact(&mut s, 6)?;
            Dest::V4([a[0], a[1], a[2], a[3]].into(), u16::from_be_bytes([a[4], a[5]]))
        }
        4 => {
            let a = exact(&mut s, 18)?;
            let ip: [u8; 16] = a[..16].try_into().unwrap();
            Dest::V6(ip.into(), u16::from_be_bytes([a[16], a[17]]))
        }
        3 => {
            let l = exact(&mut s, 1)?[0] as usize;
            let a = exact(&mut s, l + 2)?;
            Dest::Name(String::from_utf8_lossy(&a[..l]).into_owned(), u16::from_be_bytes([a[l], a[l + 1]]))
        }
        _ => return s.write_all(&[5, 8, 0, 1, 0, 0, 0, 0, 0, 0]),
    };
    seen.lock().unwrap().push(dest.clone());
    match router(&dest) {
        Dial::Rep(rep) => s.write_all(&[5, rep, 0, 1, 0, 0, 0, 0, 0, 0]),
        Dial::Hang => {
            thread::sleep(Duration::from_secs(20));
            Ok(())
        }
        Dial::Slow(d, to) => {
            thread::sleep(d);
            connect_and_relay(s, to)
        }
        Dial::To(to) => connect_and_relay(s, to),
    }
}

fn connect_and_relay(mut s: TcpStream, to: SocketAddr) -> std::io::Result<()> {
    match TcpStream::connect(to) {
        Err(_) => s.write_all(&[5, 1, 0, 1, 0, 0, 0, 0, 0, 0]),
        Ok(up) => {
            s.write_all(&[5, 0, 0, 1, 127, 0, 0, 1, 0x12, 0x34])?;
            relay(s, up);
            Ok(())
        }
    }
}

pub fn relay(a: TcpStream, b: TcpStream) {
    let _ = a.set_read_timeout(None);
    let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let t = thread::spawn(move || {
        let _ = std::io::copy(&mut a2, &mut b2);
        let _ = b2.shutdown(Shutdown::Write);
    });
    let (mut a, mut b) = (a, b);
    let _ = std::io::copy(&mut b, &mut a);
    let _ = a.shutdown(Shutdown::Write);
    let _ = t.join();
}

// ---------------------------------------------------------------- HTTP CONNECT

pub type HttpRouter = Arc<dyn Fn(&str) -> Option<SocketAddr> + Send + Sync>;

/// An HTTP CONNECT proxy on 127.0.0.1: `CONNECT host:port`, optional Basic auth check; the
/// router decides; a refusal is tailscaled's answer (500 + Tailscale-Connect-Error).
pub struct HttpProxy {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl HttpProxy {
    pub fn start(basic: Option<&'static str>, router: HttpRouter) -> HttpProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        thread::spawn(move || {
            for s in l.incoming().flatten() {
                let (seen, router) = (seen2.clone(), router.clone());
                thread::spawn(move || {
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let mut first = String::new();
                    if r.read_line(&mut first).is_err() {
                        return;
                    }
                    let mut authed = basic.is_none();
                    loop {
                        let mut l = String::new();
                        if r.read_line(&mut l).unwrap_or(0) == 0 || l == "\r\n" {
                            break;
                        }
                        if let Some(b) = basic {
                            if l.trim_end() == format!("Proxy-Authorization: Basic {b}") {
                                authed = true;
                            }
                        }
                    }
                    let mut s = s;
                    let target = first.split(' ').nth(1).unwrap_or("").to_string();
                    seen.lock().unwrap().push(target.clone());
                    if !authed {
                        let _ = s.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n");
                        return;
                    }
                    match router(&target).and_then(|to| TcpStream::connect(to).ok()) {
                        Some(up) => {
                            let _ = s.write_all(b"HTTP/1.1 200 Connection established\r\nProxy-Agent: test\r\n\r\n");
                            relay(s, up);
                        }
                        None => {
                            let _ = s.write_all(b"HTTP/1.1 500 Internal Server Error\r\nTailscale-Connect-Error: dial refused\r\nContent-Length: 0\r\n\r\n");
                        }
                    }
                });
            }
        });
        HttpProxy { addr, seen }
    }
}

pub fn once<T: Send + Sync + 'static>(cell: &'static OnceLock<T>, f: impl FnOnce() -> T) -> &'static T {
    cell.get_or_init(f)
}

// ---------------------------------------------------------------- the fake tailnet

pub struct Net {
    pub socks: Socks,
    pub http: SocketAddr,
    pub banner: SocketAddr,
}

/// The fake tailnet: port 80 is an HTTP peer, port 7 a banner peer; some names refuse,
/// are unreachable, or hang.
pub fn router(http: SocketAddr, banner: SocketAddr) -> Router {
    Arc::new(move |d: &Dest| {
        let (known, port) = match d {
            Dest::V4(ip, p) => (ip.octets() == [100, 64, 0, 2], *p),
            Dest::V6(ip, p) => (ip.segments()[..3] == [0xfd7a, 0x115c, 0xa1e0] && ip.segments()[7] == 2, *p),
            Dest::Name(n, p) => match n.as_str() {
                "refuser" => return Dial::Rep(5),
                "unreach" => return Dial::Rep(4),
                "netunreach" => return Dial::Rep(3),
                "ttl" => return Dial::Rep(6),
                "hang" => return Dial::Hang,
                "slow" => return Dial::Slow(Duration::from_millis(1000), if *p == 80 { http } else { banner }),
                n => (["peer-1", "peer-1.tail1234.ts.net", "peer6", "db.corp.example"].contains(&n), *p),
            },
        };
        match (known, port) {
            (true, 80) => Dial::To(http),
            (true, 7) => Dial::To(banner),
            _ => Dial::Rep(1),
        }
    })
}

pub fn net() -> &'static Net {
    static N: OnceLock<Net> = OnceLock::new();
    N.get_or_init(|| {
        let http = http_peer("tailnet");
        let banner = banner_peer("tailnet");
        Net { socks: Socks::start(None, router(http, banner)), http, banner }
    })
}

// ---------------------------------------------------------------- static binaries

fn have(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().map(|o| o.status.success()).unwrap_or(false)
}

/// Skip (None) when a toolchain is missing, unless TSPROXY_REQUIRE_STATIC=1 (make test as root).
fn required(tool: &str) -> bool {
    if have(tool) {
        return true;
    }
    if std::env::var("TSPROXY_REQUIRE_STATIC").as_deref() == Ok("1") {
        panic!("{tool} is required (TSPROXY_REQUIRE_STATIC=1)");
    }
    eprintln!("static-binary tests skipped: {tool} not installed");
    false
}

/// tests/go/client.go built with CGO_ENABLED=0 (a static Go binary), once per test process.
pub fn go_client() -> Option<PathBuf> {
    static P: OnceLock<Option<PathBuf>> = OnceLock::new();
    P.get_or_init(|| build_go("client", "0")).clone()
}

/// The same client built with cgo (dynamic; resolves through glibc with GODEBUG=netdns=cgo).
pub fn go_client_cgo() -> Option<PathBuf> {
    static P: OnceLock<Option<PathBuf>> = OnceLock::new();
    P.get_or_init(|| build_go("client-cgo", "1")).clone()
}

fn build_go(name: &str, cgo: &str) -> Option<PathBuf> {
    {
        if !required("go") {
            return None;
        }
        let dir = target_dir().join("go");
        let out = dir.join(name);
        let st = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg("client.go")
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go"))
            .env("CGO_ENABLED", cgo)
            .env("GO111MODULE", "off")
            .env("GOCACHE", dir.join("cache"))
            .env("GOPATH", dir.join("path"))
            .status()
            .expect("go build");
        assert!(st.success(), "go build failed");
        Some(out)
    }
}

/// c-harness/tcpclient.c linked with -static.
pub fn static_tcpclient() -> Option<PathBuf> {
    static P: OnceLock<Option<PathBuf>> = OnceLock::new();
    P.get_or_init(|| {
        if !required("cc") {
            return None;
        }
        let out = target_dir().join("c-harness").join("tcpclient-static");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("c-harness/tcpclient.c");
        let o = Command::new("cc").args(["-static", "-O2", "-o"]).arg(&out).arg(&src).output().expect("cc");
        assert!(o.status.success(), "cc -static: {}", String::from_utf8_lossy(&o.stderr));
        Some(out)
    })
    .clone()
}

/// The supervisor of a command run by the launcher with the supervisor on: the process holding
/// the DNS responder socket named in the command's TSPROXY_SUPERVISOR_DNS (the supervisor is
/// nobody's child: wrapper/src/supervisor/spawn.rs). Looked up in the command's own network
/// namespace.
#[allow(dead_code)]
pub fn supervisor_of(cmd_pid: i32) -> Option<i32> {
    let env = std::fs::read(format!("/proc/{cmd_pid}/environ")).ok()?;
    let port: u16 = env
        .split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(b"TSPROXY_SUPERVISOR_DNS="))
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.rsplit(':').next())
        .and_then(|p| p.parse().ok())?;
    let udp = std::fs::read_to_string(format!("/proc/{cmd_pid}/net/udp")).ok()?;
    let inode = udp.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let p = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
        (p == port).then(|| f.get(9).map(|s| s.to_string())).flatten()
    })?;
    let want = format!("socket:[{inode}]");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .ok()?
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.to_str() == Some(want.as_str())))
            .then_some(pid)
    })
}

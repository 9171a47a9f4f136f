//! No-root tier: a process that is the configured proxy never tunnels to itself.
//!
//! 127.0.0.5 is made a tailnet route (`TSPROXY_ROUTES`), so "dialling the tailnet directly" is a
//! loopback connection a test peer answers: a direct dial would get the peer's banner (a leak,
//! in production); a tunnel to itself gets nothing (its own listener never answers, or it fans
//! out). The promise: refused at once (ECONNREFUSED), with the reason logged. Nothing leaves
//! loopback.
mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A peer on 127.0.0.5 (a "tailnet" address here) that greets with `HELLO <tag>` and, for an
/// HTTP request, answers `hello from <tag>`.
fn route_peer(tag: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.5:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
                let mut line = String::new();
                if BufReader::new(&s).read_line(&mut line).unwrap_or(0) > 0 && line.starts_with("GET ") {
                    let body = format!("hello from {tag}\n");
                    let _ = write!(w, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                } else {
                    let _ = w.write_all(format!("HELLO {tag}\r\n").as_bytes());
                }
            });
        }
    });
    port
}

fn which(p: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {p}")]).output().map(|o| o.status.success()).unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn selfproxy(mode: &str, proxy_port: u16, host: &str, port: u16, inherit: Option<&TcpListener>) -> std::process::Output {
    let mut c = preloaded(harness("h_selfproxy"));
    c.args([mode, &proxy_port.to_string(), host, &port.to_string()])
        .env("TSPROXY_PROXY", format!("socks5://127.0.0.1:{proxy_port}"))
        .env("TSPROXY_ROUTES", "127.0.0.5/32")
        .env("TSPROXY_CONNECT_TIMEOUT", "2");
    if let Some(l) = inherit {
        use std::os::fd::AsRawFd;
        let fd = l.as_raw_fd();
        // SAFETY: dup2 is async-signal-safe; the listener outlives the spawn.
        unsafe {
            c.pre_exec(move || if libc::dup2(fd, 3) == 3 { Ok(()) } else { Err(std::io::Error::last_os_error()) });
        }
    }
    c.output().unwrap()
}

/// The refusal a process that listens on the proxy endpoint gets: at once, said in the log,
/// neither a direct dial (the peer's banner) nor a tunnel to itself (a hang until the timeout).
fn refused_as_the_proxy(what: &str, out: &std::process::Output) {
    let k = kv(out);
    assert_eq!(k.get("connect").map(String::as_str), Some("ECONNREFUSED"), "{what}: {}", text(out));
    assert_eq!(k.get("reply"), None, "{what}: dialled directly: {}", text(out));
    assert!(k["elapsed_ms"].parse::<f64>().unwrap() < 1000.0, "{what}: {}", text(out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(SELF_LINE), "{what}: the reason is logged: {}", text(out));
}

const SELF_LINE: &str = "tunnelling to itself would loop";

#[test]
fn a_process_listening_on_the_proxy_endpoint_never_tunnels_to_itself_nor_dials_directly() {
    let peer = route_peer("route");
    for mode in ["listen", "wild", "wild6"] {
        let out = selfproxy(mode, free_port(), "127.0.0.5", peer, None);
        assert_eq!(kv(&out).get("listen").map(String::as_str), Some("ok"), "{mode}: {}", text(&out));
        refused_as_the_proxy(mode, &out);
    }
    // A listener made after the first tunnelled connect (the scan is done by then): listen()
    // itself tells.
    let out = selfproxy("late", free_port(), "127.0.0.5", peer, None);
    assert_eq!(kv(&out)["pre_connect"], "ECONNREFUSED", "no listener yet: tunnelled to the absent proxy: {}", text(&out));
    refused_as_the_proxy("late", &out);
    // Socket activation: the listener comes from the parent, no listen() in this process.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let out = selfproxy("inherit", l.local_addr().unwrap().port(), "127.0.0.5", peer, Some(&l));
    refused_as_the_proxy("inherited listener", &out);
    // A tailnet name in the proxy itself: refused at once (a placeholder cannot be dialled).
    let out = selfproxy("listen", free_port(), "peer-1", 80, None);
    let k = kv(&out);
    assert_eq!(k["connect"], "ECONNREFUSED", "{}", text(&out));
    assert!(k["elapsed_ms"].parse::<f64>().unwrap() < 1000.0, "{}", text(&out));
}

#[test]
fn other_listeners_do_not_make_a_process_the_proxy() {
    let peer = route_peer("route");
    // Nothing serves the proxy endpoint: a tunnelled connect is refused there, a direct one
    // would have reached the peer. Another port, and an IPv6-only wildcard on the proxy port
    // (which takes no IPv4 connection to 127.0.0.1), are not the proxy.
    for mode in ["other", "v6only"] {
        let out = selfproxy(mode, free_port(), "127.0.0.5", peer, None);
        let k = kv(&out);
        assert_eq!(k.get("listen").map(String::as_str), Some("ok"), "{mode}: {}", text(&out));
        assert_eq!(k["connect"], "ECONNREFUSED", "{mode}: tunnelled to the (absent) proxy: {}", text(&out));
        assert!(!String::from_utf8_lossy(&out.stderr).contains(SELF_LINE), "{mode}: not the proxy: {}", text(&out));
    }
}

/// Threads of `pid` now.
fn threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Threads:").map(|v| v.trim().parse().unwrap_or(0))))
        .unwrap_or(0)
}

#[test]
fn microsocks_as_its_own_upstream_does_not_fan_out() {
    if !which("microsocks") || !which("curl") {
        assert!(std::env::var_os("TSPROXY_REQUIRE_NETNS").is_none(), "microsocks and curl are required");
        eprintln!("SKIPPED: microsocks or curl not installed");
        return;
    }
    let peer = route_peer("route");
    let port = free_port();
    let mut c = preloaded("microsocks");
    c.args(["-i", "127.0.0.1", "-p", &port.to_string()])
        .env("TSPROXY_PROXY", format!("socks5://127.0.0.1:{port}"))
        .env("TSPROXY_ROUTES", "127.0.0.5/32")
        .env("TSPROXY_CONNECT_TIMEOUT", "3")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe. 256 descriptors bound a fan-out, should there be one.
    unsafe {
        c.pre_exec(|| {
            let r = libc::rlimit { rlim_cur: 256, rlim_max: 256 };
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            Ok(())
        });
    }
    let mut ms = c.spawn().unwrap();
    let pid = ms.id();
    let up = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(up.elapsed() < Duration::from_secs(5), "microsocks did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A watchdog: the most threads microsocks ever had; a fan-out is killed at once.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut max = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let n = threads(pid);
                max = max.max(n);
                if n > 32 {
                    // SAFETY: our own child.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            max
        })
    };
    let curl = |args: &[&str]| {
        let t = Instant::now();
        let out = Command::new("curl").args(["-sS", "--max-time", "8"]).args(args).env_remove("LD_PRELOAD").output().unwrap();
        (out, t.elapsed())
    };
    let proxy = format!("127.0.0.1:{port}");
    // A tailnet address: microsocks' own dial is refused at once (never through itself, never
    // directly), so curl gets a SOCKS failure promptly.
    let (out, took) = curl(&["--socks5", &proxy, &format!("http://127.0.0.5:{peer}/")]);
    let page = String::from_utf8_lossy(&out.stdout).to_string();
    // A tailnet name: microsocks resolves it to a placeholder: refused promptly, not looped.
    let (named, named_took) = curl(&["--socks5-hostname", &proxy, "http://peer-1/"]);
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let max = watch.join().unwrap();
    let _ = ms.kill();
    let logged = ms.wait_with_output().map(|o| String::from_utf8_lossy(&o.stderr).into_owned()).unwrap_or_default();
    assert!(max <= 8, "microsocks fanned out to {max} threads (through itself)");
    assert!(!out.status.success() && page.is_empty(), "dialled directly: {} in {took:?}", text(&out));
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(logged.contains(SELF_LINE), "microsocks' log: {logged}");
    assert!(!named.status.success(), "{}", text(&named));
    assert!(named_took < Duration::from_secs(2), "a prompt refusal, not a loop: {named_took:?} {}", text(&named));
}

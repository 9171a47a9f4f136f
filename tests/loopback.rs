//! No-root tier: real programs (c-harness, curl, python3) run with libtsproxy.so against
//! SOCKS5 and HTTP CONNECT servers in this test process on 127.0.0.1. Tailnet addresses are
//! never dialled: the proxy "is" the tailnet and routes them to local peers.
mod common;

use common::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn tcpclient(args: &[&str], proxy: &str) -> std::process::Output {
    preloaded(harness("tcpclient")).args(args).env("TSPROXY_PROXY", proxy).output().unwrap()
}

fn assert_tunnel(out: &std::process::Output, peer: &str) {
    let k = kv(out);
    assert_eq!(k.get("connect").map(String::as_str), Some("ok"), "{}", text(out));
    assert_eq!(k["peer"], peer, "{}", text(out));
    assert_eq!(k["reply"], "HELLO tailnet", "banner must survive the handshake: {}", text(out));
    assert_eq!(k["same_fd"], "1", "{}", text(out));
    assert_eq!(k["flags_ok"], "1", "{}", text(out));
}

#[test]
fn ipv4_tailnet_address_goes_through_socks5_atyp1() {
    let n = net();
    let out = tcpclient(&["-C", "-r", "100.64.0.2", "7"], &n.socks.url());
    assert_tunnel(&out, "100.64.0.2:7");
    assert!(n.socks.seen().contains(&Dest::V4([100, 64, 0, 2].into(), 7)));
}

#[test]
fn ipv6_tailnet_address_goes_through_socks5_atyp4() {
    let n = net();
    let out = tcpclient(&["-r", "fd7a:115c:a1e0::2", "7"], &n.socks.url());
    assert_tunnel(&out, "[fd7a:115c:a1e0::2]:7");
    assert!(n.socks.seen().contains(&Dest::V6("fd7a:115c:a1e0::2".parse().unwrap(), 7)));
}

#[test]
fn short_name_and_fqdn_are_sent_as_names() {
    let n = net();
    for name in ["peer-1", "peer-1.tail1234.ts.net", "PEER-1.tail1234.ts.net."] {
        let out = tcpclient(&["-r", name, "7"], &n.socks.url());
        let k = kv(&out);
        assert!(k["resolved"].starts_with("240."), "placeholder expected: {}", text(&out));
        assert_tunnel(&out, &k["resolved"]);
    }
    let seen = n.socks.seen();
    assert!(seen.contains(&Dest::Name("peer-1".into(), 7)), "{seen:?}");
    assert!(seen.contains(&Dest::Name("peer-1.tail1234.ts.net".into(), 7)), "{seen:?}");
}

#[test]
fn v6_only_name_from_an_af_inet6_socket() {
    let n = net();
    let out = tcpclient(&["-6", "-r", "peer6", "7"], &n.socks.url());
    let k = kv(&out);
    assert_eq!(k["family"], "6", "{}", text(&out));
    assert!(k["resolved"].starts_with("[100::"), "{}", text(&out));
    assert_tunnel(&out, &k["resolved"]);
    assert!(n.socks.seen().contains(&Dest::Name("peer6".into(), 7)));
}

#[test]
fn tsproxy_domains_suffix_is_a_tailnet_name() {
    let n = net();
    let out = preloaded(harness("tcpclient"))
        .args(["-r", "db.corp.example", "7"])
        .env("TSPROXY_PROXY", n.socks.url())
        .env("TSPROXY_DOMAINS", "corp.example")
        .output()
        .unwrap();
    assert_tunnel(&out, &kv(&out)["resolved"]);
}

#[test]
fn non_tailnet_destination_goes_direct_and_proxy_never_sees_it() {
    let n = net();
    let direct = banner_peer("direct");
    let before = n.socks.seen().len();
    let out = tcpclient(&["-r", "127.0.0.1", &direct.port().to_string()], &n.socks.url());
    let k = kv(&out);
    assert_eq!(k["connect"], "ok", "{}", text(&out));
    assert_eq!(k["reply"], "HELLO direct", "{}", text(&out));
    assert_eq!(k["peer"], direct.to_string());
    // Other tests share the server; none of them asks for this port.
    assert!(!n.socks.seen()[before..].iter().any(|d| matches!(d, Dest::V4(_, p) if *p == direct.port())));
}

#[test]
fn no_proxy_entries_are_never_proxied() {
    let n = net();
    // 127.0.0.3 is made a tailnet route, then NO_PROXY exempts it: it must be dialled directly
    // (a peer listens there) and the proxy must never hear of it. Only loopback is dialled.
    let l = std::net::TcpListener::bind("127.0.0.3:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::Write;
        for mut s in l.incoming().flatten() {
            let _ = s.write_all(b"HELLO exempt\r\n");
        }
    });
    let run = |no_proxy: &str| {
        preloaded(harness("tcpclient"))
            .args(["-r", "127.0.0.3", &port.to_string()])
            .env("TSPROXY_PROXY", n.socks.url())
            .env("TSPROXY_ROUTES", "127.0.0.3/32")
            .env("NO_PROXY", no_proxy)
            .output()
            .unwrap()
    };
    let out = run("localhost,127.0.0.3");
    assert_eq!(kv(&out)["reply"], "HELLO exempt", "{}", text(&out));
    let out = run("127.0.0.0/24");
    assert_eq!(kv(&out)["reply"], "HELLO exempt", "{}", text(&out));
    assert!(!n.socks.seen().iter().any(|d| matches!(d, Dest::V4(_, p) if *p == port)));
    // Without the exemption the route sends it to the proxy (which does not know it).
    let out = run("");
    assert_eq!(kv(&out)["errno"], "ECONNREFUSED", "{}", text(&out));
    assert!(n.socks.seen().contains(&Dest::V4([127, 0, 0, 3].into(), port)));
}

#[test]
fn username_password_auth() {
    let n = net();
    let s = Socks::start(Some(("alice", "s3cr3t pw")), router(n.http, n.banner));
    let url = format!("socks5://alice:s3cr3t%20pw@{}", s.addr);
    let log = std::env::temp_dir().join(format!("tsproxy-auth-{}.log", std::process::id()));
    let out = preloaded(harness("tcpclient"))
        .args(["-r", "peer-1", "7"])
        .env("TSPROXY_PROXY", &url)
        .env("TSPROXY_LOG", "debug")
        .env("TSPROXY_LOG_FILE", &log)
        .output()
        .unwrap();
    assert_tunnel(&out, &kv(&out)["resolved"]);
    let bad = tcpclient(&["100.64.0.2", "7"], &format!("socks5://alice:wrong@{}", s.addr));
    assert_eq!(kv(&bad)["errno"], "ECONNREFUSED", "{}", text(&bad));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("peer-1"), "debug log has the decision: {logged}");
    assert!(!logged.contains("s3cr3t"), "password leaked into the log: {logged}");
    assert!(!String::from_utf8_lossy(&bad.stderr).contains("wrong"), "{}", text(&bad));
    let _ = std::fs::remove_file(log);
}

#[test]
fn failover_to_the_next_proxy() {
    let n = net();
    let dead = closed_port();
    let out = tcpclient(&["-r", "100.64.0.2", "7"], &format!("socks5://{dead},{}", n.socks.url()));
    assert_tunnel(&out, "100.64.0.2:7");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&dead.to_string()), "failed proxy is logged: {}", text(&out));
}

#[test]
fn proxy_down_is_a_fast_econnrefused_with_a_log_line_never_a_direct_dial() {
    let dead = closed_port();
    let t = Instant::now();
    let out = tcpclient(&["100.64.0.2", "7"], &format!("socks5://{dead}"));
    let k = kv(&out);
    assert_eq!(k["errno"], "ECONNREFUSED", "{}", text(&out));
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(k["elapsed_ms"].parse::<f64>().unwrap() < 500.0, "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tsproxy"), "a log line: {}", text(&out));
}

/// The log line of a failed tailnet connect went to stderr with write(2): when stderr is a pipe
/// whose reader has gone (`cmd 2>&1 | head -1` once head exited, a dead log collector) the
/// write raised SIGPIPE and killed a program that wrote nothing itself and would have lived
/// (it got its ECONNREFUSED and went on). A log line must never end the program.
#[test]
fn a_log_line_to_a_broken_stderr_pipe_does_not_kill_the_program() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut p = [0; 2];
    // SAFETY: p has room for the two descriptors pipe2 writes.
    assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both ends are ours and open; the read end is closed at once (the reader gone).
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
    drop(r);
    let dead = closed_port();
    let out = preloaded(harness("tcpclient"))
        .args(["100.64.0.2", "7"])
        .env("TSPROXY_PROXY", format!("socks5://{dead}"))
        .stderr(std::process::Stdio::from(w))
        .output()
        .unwrap();
    let k = kv(&out);
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&out.status), None, "killed by the log line: {}", text(&out));
    assert_eq!(k.get("errno").map(String::as_str), Some("ECONNREFUSED"), "{}", text(&out));
}

#[test]
fn proxy_replies_map_to_errnos() {
    let n = net();
    for (name, errno) in
        [("refuser", "ECONNREFUSED"), ("unreach", "EHOSTUNREACH"), ("netunreach", "ENETUNREACH"), ("ttl", "ETIMEDOUT"), ("nosuchpeer", "ECONNREFUSED")]
    {
        let out = tcpclient(&[name, "7"], &n.socks.url());
        assert_eq!(kv(&out).get("errno").map(String::as_str), Some(errno), "{name}: {}", text(&out));
    }
}

#[test]
fn so_sndtimeo_bounds_a_hanging_proxy() {
    let n = net();
    let out = tcpclient(&["-T", "300", "hang", "7"], &n.socks.url());
    let k = kv(&out);
    assert_eq!(k["errno"], "ETIMEDOUT", "{}", text(&out));
    let ms: f64 = k["elapsed_ms"].parse().unwrap();
    assert!((250.0..1500.0).contains(&ms), "{ms} ms: {}", text(&out));
}

#[test]
fn pipelined_greeting_works_with_an_exact_read_server() {
    let n = net();
    let out = preloaded(harness("tcpclient"))
        .args(["-r", "100.64.0.2", "7"])
        .env("TSPROXY_PROXY", n.socks.url())
        .env("TSPROXY_SOCKS_PIPELINE", "on")
        .output()
        .unwrap();
    assert_tunnel(&out, "100.64.0.2:7");
}

#[test]
fn http_connect_upstream_with_basic_auth() {
    let n = net();
    let (http, banner) = (n.http, n.banner);
    let p = HttpProxy::start(
        Some("dTpw"), // u:p
        Arc::new(move |t: &str| match t {
            "peer-1:7" | "100.64.0.2:7" | "[fd7a:115c:a1e0::2]:7" => Some(banner),
            "peer-1:80" => Some(http),
            _ => None,
        }),
    );
    let url = format!("http://u:p@{}", p.addr);
    for (host, peer) in [("100.64.0.2", "100.64.0.2:7"), ("fd7a:115c:a1e0::2", "[fd7a:115c:a1e0::2]:7")] {
        let out = tcpclient(&["-r", host, "7"], &url);
        assert_tunnel(&out, peer);
    }
    let out = tcpclient(&["-r", "peer-1", "7"], &url);
    assert_tunnel(&out, &kv(&out)["resolved"]);
    assert!(p.seen.lock().unwrap().contains(&"peer-1:7".to_string()));
    // tailscaled's failure answer: 500 + Tailscale-Connect-Error.
    let out = tcpclient(&["refuser", "7"], &url);
    assert_eq!(kv(&out)["errno"], "ECONNREFUSED", "{}", text(&out));
    // Without credentials: 407, a proxy-level failure.
    let out = tcpclient(&["peer-1", "7"], &format!("http://{}", p.addr));
    assert_eq!(kv(&out)["errno"], "ECONNREFUSED", "{}", text(&out));
}

#[test]
fn tcp_fast_open_sendto_is_connect_plus_send() {
    let n = net();
    let out = tcpclient(&["-F", "-s", "ping\\n", "-r", "100.64.0.2", "7"], &n.socks.url());
    let k = kv(&out);
    assert_eq!(k["connect"], "ok", "{}", text(&out));
    assert_eq!(k["fastopen_sent"], "6");
    assert_eq!(k["peer"], "100.64.0.2:7");
    assert_eq!(k["reply"], "HELLO tailnet");
}

#[test]
fn nonblocking_socket_connects_and_keeps_its_flags() {
    let n = net();
    let out = tcpclient(&["-n", "-r", "100.64.0.2", "7"], &n.socks.url());
    assert_tunnel(&out, "100.64.0.2:7");
}

#[test]
fn datagrams_to_tailnet_are_refused_not_sent() {
    let out = preloaded(harness("udpsend")).args(["100.64.0.2", "53"]).output().unwrap();
    let k = kv(&out);
    assert_eq!(k["sendto"], "ENETUNREACH", "{}", text(&out));
    // A UDP connect opens no association (the first send does): it succeeds; the send is
    // refused (this proxy takes no UDP ASSOCIATE).
    assert_eq!(k["connect"], "ok", "{}", text(&out));
    assert_eq!(k["send"], "ENETUNREACH", "{}", text(&out));
    let out = preloaded(harness("udpsend")).args(["127.0.0.1", "9"]).output().unwrap();
    assert_eq!(kv(&out)["sendto"], "ok", "{}", text(&out));
}

#[test]
fn legacy_resolver_apis() {
    let out = preloaded(harness("resolve")).arg("peer-1.tail1234.ts.net").output().unwrap();
    let k = kv(&out);
    assert!(k["gethostbyname"].starts_with("240."), "{}", text(&out));
    assert!(k["gethostbyname"].ends_with("name=peer-1.tail1234.ts.net len=4"), "{}", text(&out));
    assert!(k["gethostbyname2_v6"].starts_with("100::"), "{}", text(&out));
    assert_eq!(k["gethostbyname_r_small"], "ERANGE");
    assert_eq!(k["gethostbyaddr"], "peer-1.tail1234.ts.net");
    assert_eq!(k["getnameinfo"], "peer-1.tail1234.ts.net serv=http");
    assert_eq!(k["getnameinfo_small"], "EAI_OVERFLOW");
    // AF_UNSPEC: both placeholders, IPv4 first.
    assert!(k["getaddrinfo_canon"].starts_with("peer-1.tail1234.ts.net entries=2 "), "{}", text(&out));
    assert!(k["getaddrinfo_canon"].ends_with("first_family=4"), "{}", text(&out));
}

#[test]
fn invalid_config_under_bare_preload_fails_closed() {
    let direct = banner_peer("direct");
    let out = tcpclient(&["100.64.0.2", "7"], "socks4://nope");
    assert_eq!(kv(&out)["errno"], "ECONNREFUSED", "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("invalid TSPROXY_PROXY").count(), 1, "one line naming it: {err}");
    let out = tcpclient(&["-r", "127.0.0.1", &direct.port().to_string()], "socks4://nope");
    assert_eq!(kv(&out)["reply"], "HELLO direct", "everything else untouched: {}", text(&out));
}

#[test]
fn curl_and_python_through_the_launcher() {
    let n = net();
    if which("curl") {
        let out =
            std::process::Command::new(launcher()).args(["--proxy", &n.socks.url(), "curl", "-sS", "--max-time", "10", "http://peer-1/"]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from tailnet\n", "{}", text(&out));
    }
    let py = r#"
import socket, threading, urllib.request, multiprocessing as mp
def get(u):
    return urllib.request.urlopen(u, timeout=10).read().decode()
res = []
def worker(i):
    res.append(get("http://peer-1.tail1234.ts.net/" if i % 2 else "http://100.64.0.2/"))
ts = [threading.Thread(target=worker, args=(i,)) for i in range(64)]
[t.start() for t in ts]; [t.join() for t in ts]
assert len(res) == 64 and all(r == "hello from tailnet\n" for r in res), res
with mp.get_context("fork").Pool(4) as p:
    out = p.map(get, ["http://peer-1/"] * 8)
assert all(r == "hello from tailnet\n" for r in out), out
s = socket.create_connection(("peer-1", 7), timeout=5)
assert s.recv(64).startswith(b"HELLO"), "banner"
print("python ok", s.getpeername()[0])
"#;
    let out = std::process::Command::new(launcher()).args(["--proxy", &n.socks.url(), "python3", "-c", py]).env_remove("http_proxy").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("python ok 240."), "{}", text(&out));
}

fn which(p: &str) -> bool {
    std::process::Command::new("sh").args(["-c", &format!("command -v {p}")]).output().map(|o| o.status.success()).unwrap_or(false)
}

//! Static binaries through the seccomp supervisor (no-root tier): a static Go HTTP client
//! (CGO_ENABLED=0: Go's own resolver, raw syscalls) and a `cc -static` C client, run by the
//! launcher against the in-process SOCKS5 server. LD_PRELOAD cannot reach them; the supervisor
//! must. Tailnet names reach Go through the supervisor's DNS responder, never a real resolver.
mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn run(args: &[&str], extra: &[(&str, &str)]) -> (String, std::process::Output, Duration) {
    let t = Instant::now();
    let mut c = Command::new(launcher());
    c.args(["--supervisor=on", "--proxy", &net().socks.url()]).args(args);
    for (k, v) in extra {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (String::from_utf8_lossy(&out.stdout).trim().to_string(), out, t.elapsed())
}

#[test]
fn static_go_reaches_tailnet_by_ip_and_name_directly_and_via_sh() {
    let Some(go) = go_client() else { return };
    let go = go.to_string_lossy().into_owned();
    for url in ["http://100.64.0.2/", "http://[fd7a:115c:a1e0::2]/", "http://peer-1/", "http://peer-1.tail1234.ts.net/", "http://peer6/"] {
        let (s, out, _) = run(&[&go, url], &[]);
        assert_eq!(s, "hello from tailnet", "{url}: {}", text(&out));
        let (s, out, _) = run(&["sh", "-c", &format!("{go} {url}")], &[]);
        assert_eq!(s, "hello from tailnet", "sh -c {url}: {}", text(&out));
    }
    let seen = net().socks.seen();
    assert!(seen.contains(&Dest::Name("peer-1".into(), 80)), "{seen:?}");
}

#[test]
fn static_go_public_destination_goes_direct() {
    let Some(go) = go_client() else { return };
    let direct = http_peer("direct");
    let before = net().socks.seen().len();
    let (s, out, _) = run(&[&go.to_string_lossy(), &format!("http://{direct}/")], &[]);
    assert_eq!(s, "hello from direct", "{}", text(&out));
    assert!(!net().socks.seen()[before..].iter().any(|d| matches!(d, Dest::V4(_, p) if *p == direct.port())));
}

#[test]
fn static_go_errors_come_within_the_clients_timeout() {
    let Some(go) = go_client() else { return };
    let go = go.to_string_lossy().into_owned();
    let (s, out, took) = run(&[&go, "http://refuser/", "5"], &[]);
    assert!(s.starts_with("ERR") && s.contains("connection refused"), "{}", text(&out));
    assert!(took < Duration::from_secs(3), "{took:?}");
    let (s, out, took) = run(&[&go, "http://hang/", "5"], &[("TSPROXY_CONNECT_TIMEOUT", "1.5")]);
    assert!(s.starts_with("ERR"), "{}", text(&out));
    assert!(took < Duration::from_secs(5), "within the client's 5 s: {took:?}");
    let dead = closed_port();
    let mut c = Command::new(launcher());
    let out = c.args(["--supervisor=on", "--proxy", &format!("socks5://{dead}"), &go, "http://100.64.0.2/", "5"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("connection refused"), "proxy down: {}", text(&out));
}

#[test]
fn static_c_client_reaches_tailnet() {
    let Some(c) = static_tcpclient() else { return };
    let c = c.to_string_lossy().into_owned();
    for host in ["100.64.0.2", "peer-1", "fd7a:115c:a1e0::2"] {
        let (_, out, _) = run(&[&c, "-r", host, "7"], &[]);
        let k = kv(&out);
        assert_eq!(k.get("reply").map(String::as_str), Some("HELLO tailnet"), "{host}: {}", text(&out));
        assert_eq!(k["same_fd"], "1");
    }
}

#[test]
fn supervisor_off_leaves_static_binaries_alone() {
    let Some(c) = static_tcpclient() else { return };
    // With the supervisor off nothing intercepts the static client: its connect to a loopback
    // "tailnet route" goes straight to the kernel (nothing listens there: refused) and the
    // proxy never hears of it.
    let before = net().socks.seen().len();
    let port = closed_port().port().to_string();
    let out = Command::new(launcher())
        .args(["--supervisor=off", "--proxy", &net().socks.url(), &c.to_string_lossy(), "127.0.0.1", &port])
        .env("TSPROXY_ROUTES", "127.0.0.1/32")
        .output()
        .unwrap();
    assert_eq!(kv(&out)["errno"], "ECONNREFUSED", "{}", text(&out));
    assert_eq!(net().socks.seen().len(), before);
    // With it on, the same route is proxied.
    let out = Command::new(launcher())
        .args(["--supervisor=on", "--proxy", &net().socks.url(), &c.to_string_lossy(), "127.0.0.1", &port])
        .env("TSPROXY_ROUTES", "127.0.0.1/32")
        .output()
        .unwrap();
    assert!(net().socks.seen().iter().any(|d| matches!(d, Dest::V4(ip, p) if ip.octets() == [127, 0, 0, 1] && p.to_string() == port)), "{}", text(&out));
}

#[test]
fn bad_supervisor_mode_is_exit_2() {
    let out = Command::new(launcher()).args(["--supervisor=maybe", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("supervisor"));
}

#[test]
fn cgo_go_resolving_through_glibc_and_dialing_raw() {
    // Go dials with raw syscalls even when built with cgo: the name comes from the library's
    // getaddrinfo hook, the dial is the supervisor's. The library registers the name with the
    // supervisor so the placeholder means the same name on both sides.
    let Some(go) = go_client_cgo() else { return };
    for url in ["http://peer-1/", "http://peer-1.tail1234.ts.net/", "http://100.64.0.2/"] {
        let (s, out, _) = run(&[&go.to_string_lossy(), url], &[("GODEBUG", "netdns=cgo")]);
        assert_eq!(s, "hello from tailnet", "{url}: {}", text(&out));
    }
}

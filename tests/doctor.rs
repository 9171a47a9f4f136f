//! `tsproxy doctor` (issue 13, part 3) against real upstreams and a stand-in for tailscaled's
//! LocalAPI: a unix socket that serves `GET /localapi/v0/status` with the JSON of tailscale's
//! `ipnstate.Status` (field names as in tailscale's ipn/ipnstate/ipnstate.go: BackendState,
//! TailscaleIPs, Self{DNSName, TailscaleIPs, Online}, Peer keyed by node key, CurrentTailnet
//! {Name, MagicDNSSuffix, MagicDNSEnabled}, MagicDNSSuffix), and only when asked with
//! `Host: local-tailscaled.sock`.
mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

fn status_json(state: &str) -> String {
    format!(
        r#"{{"Version":"1.80.0-t","TUN":false,"BackendState":"{state}","HaveNodeKey":true,"AuthURL":"","TailscaleIPs":["100.64.0.1","fd7a:115c:a1e0::1"],
"Self":{{"ID":"n1","PublicKey":"nodekey:aa","HostName":"ws","DNSName":"ws.tail1234.ts.net.","OS":"linux","UserID":1,"TailscaleIPs":["100.64.0.1","fd7a:115c:a1e0::1"],"Online":true,"Active":false}},
"Health":[],"MagicDNSSuffix":"tail1234.ts.net","CurrentTailnet":{{"Name":"example.com","MagicDNSSuffix":"tail1234.ts.net","MagicDNSEnabled":true}},"CertDomains":null,
"Peer":{{"nodekey:bb":{{"ID":"n2","HostName":"peer-1","DNSName":"peer-1.tail1234.ts.net.","TailscaleIPs":["100.64.0.2"],"Online":true}},"nodekey:cc":{{"ID":"n3","HostName":"peer-2","DNSName":"peer-2.tail1234.ts.net.","TailscaleIPs":["100.64.0.3"],"Online":false}}}},
"User":{{"1":{{"ID":1,"LoginName":"a@example.com","DisplayName":"A"}}}}}}"#
    )
}

/// The stand-in: answers the status request with `state`; anything else 404. Records requests.
struct LocalApi {
    path: PathBuf,
    seen: Arc<Mutex<Vec<String>>>,
}

impl LocalApi {
    fn start(state: &'static str) -> LocalApi {
        let path = target_dir().join(format!("doctor-{state}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut head = Vec::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push(line.trim_end().to_string());
                }
                seen2.lock().unwrap().push(head.join("|"));
                let ok = head.first().is_some_and(|l| l.starts_with("GET /localapi/v0/status "))
                    && head.iter().any(|h| h.eq_ignore_ascii_case("host: local-tailscaled.sock"));
                let mut s = s;
                if ok {
                    let body = status_json(state);
                    let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                } else {
                    let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                }
            }
        });
        LocalApi { path, seen }
    }
}

impl Drop for LocalApi {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn doctor(proxy: &str, sock: &std::path::Path, extra: &[&str]) -> Output {
    let mut c = Command::new(launcher());
    for k in TSPROXY_ENV {
        c.env_remove(k);
    }
    let home = target_dir().join("doctor-home");
    c.env("XDG_CONFIG_HOME", &home).env("HOME", &home).env("TSPROXY_PROXY", proxy).arg("doctor").arg("--socket").arg(sock).args(extra);
    c.output().unwrap()
}

fn lines(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn healthy() {
    let api = LocalApi::start("Running");
    let out = doctor(&net().socks.url(), &api.path, &["peer-1:80"]);
    let s = lines(&out);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(s.contains(&format!("✓ upstream: socks5://{}: answers (SOCKS5, no authentication); in use", net().socks.addr)), "{s}");
    assert!(s.contains("✓ tailscaled: BackendState Running"), "{s}");
    assert!(s.contains("MagicDNS suffix tail1234.ts.net"), "{s}");
    assert!(s.contains("ws.tail1234.ts.net. 100.64.0.1 fd7a:115c:a1e0::1"), "{s}");
    assert!(s.contains("peers: 1 of 2 online"), "{s}");
    assert!(s.contains("✓ library:"), "{s}");
    assert!(s.contains("✓ sample: peer-1:80: via socks5://"), "{s}");
    assert!(!s.contains('✗'), "{s}");
    assert!(net().socks.seen().contains(&Dest::Name("peer-1".into(), 80)), "the sample was tried through the proxy");
    let seen = api.seen.lock().unwrap().clone();
    assert!(seen.iter().any(|h| h.starts_with("GET /localapi/v0/status HTTP/") && h.contains("Host: local-tailscaled.sock")), "{seen:?}");
    // --json: one object, parsed by python's json.
    let out = doctor(&net().socks.url(), &api.path, &["--json"]);
    assert_eq!(out.status.code(), Some(0));
    let py = Command::new("python3")
        .args(["-c", "import json,sys; d=json.load(sys.stdin); print(d['ok'], sorted({c['status'] for c in d['checks']}), [c['detail'] for c in d['checks'] if c['check']=='tailscaled'][0])"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            ch.stdin.take().unwrap().write_all(&out.stdout)?;
            ch.wait_with_output()
        })
        .unwrap();
    let said = String::from_utf8_lossy(&py.stdout);
    assert!(said.starts_with("True ") && said.contains("BackendState Running") && !said.contains("fail"), "{said} {}", text(&out));
}

#[test]
fn proxy_down_and_sample_not_tried() {
    let api = LocalApi::start("Running");
    let dead = closed_port();
    let out = doctor(&format!("socks5://{dead}"), &api.path, &["peer-1:22"]);
    let s = lines(&out);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(s.contains(&format!("✗ upstream: socks5://{dead}")) && s.contains("→ start tailscaled's proxy"), "{s}");
    assert!(s.contains("✗ sample: peer-1:22: would go through the proxy, but no upstream answers"), "{s}");
    // Failover: a dead first upstream with a working second is a warning, not a failure.
    let out = doctor(&format!("socks5://{dead},{}", net().socks.url()), &api.path, &[]);
    let s = lines(&out);
    assert_eq!(out.status.code(), Some(0), "{s}");
    assert!(s.contains(&format!("! upstream: socks5://{dead}")) && s.contains("in use"), "{s}");
}

#[test]
fn wrong_auth_socks_and_http() {
    let api = LocalApi::start("Running");
    let http = http_peer("tailnet");
    let socks = Socks::start(Some(("alice", "right")), router(http, banner_peer("t")));
    let out = doctor(&format!("socks5://alice:wrongpw@{}", socks.addr), &api.path, &[]);
    let s = lines(&out);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(s.contains("✗ upstream") && s.contains("authentication failed"), "{s}");
    assert!(!s.contains("wrongpw"), "{s}");
    // No credentials at all for a proxy that wants them.
    let s = lines(&doctor(&format!("socks5://{}", socks.addr), &api.path, &[]));
    assert!(s.contains("requires authentication"), "{s}");
    // Control: the right password.
    let out = doctor(&format!("socks5://alice:right@{}", socks.addr), &api.path, &[]);
    assert!(lines(&out).contains("SOCKS5, authenticated"), "{}", text(&out));
    assert_eq!(out.status.code(), Some(0));
    // HTTP CONNECT with Basic auth: 407 for the wrong one.
    let hp = HttpProxy::start(Some("YWxpY2U6cmlnaHQ="), Arc::new(|_: &str| None));
    let s = lines(&doctor(&format!("http://alice:wrongpw@{}", hp.addr), &api.path, &[]));
    assert!(s.contains("✗ upstream") && s.contains("407"), "{s}");
    let s = lines(&doctor(&format!("http://alice:right@{}", hp.addr), &api.path, &[]));
    assert!(s.contains("✓ upstream") && s.contains("HTTP CONNECT"), "{s}");
}

#[test]
fn needs_login_and_no_socket() {
    let api = LocalApi::start("NeedsLogin");
    let out = doctor(&net().socks.url(), &api.path, &[]);
    let s = lines(&out);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(s.contains("✗ tailscaled: BackendState NeedsLogin") && s.contains("→ log in: tailscale up"), "{s}");
    let none = target_dir().join("doctor-no-such.sock");
    let out = doctor(&net().socks.url(), &none, &["--json"]);
    let s = lines(&out);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(s.starts_with("{\"ok\":false,") && s.contains("\"check\":\"tailscaled\",\"status\":\"fail\"") && s.contains("No such file"), "{s}");
}

#[test]
fn sample_decisions() {
    let api = LocalApi::start("Running");
    for (dest, want) in [
        ("example.com:443", "not a tailnet name"),
        ("8.8.8.8:53", "not a tailnet address"),
        ("100.64.0.2:80", "✓ sample: 100.64.0.2:80: via"),
        ("refuser:22", "REP 5 (connection refused)"),
        ("nocolon", "is not HOST:PORT"),
    ] {
        let s = lines(&doctor(&net().socks.url(), &api.path, &[dest]));
        assert!(s.contains(want), "{dest}: {s}");
    }
    // A bad configuration value: ✗ with the variable, exit 1.
    let mut c = Command::new(launcher());
    c.env("TSPROXY_PROXY", net().socks.url()).env("TSPROXY_LOG", "loud").args(["doctor", "--socket"]).arg(&api.path);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(lines(&out).contains("✗ configuration: invalid TSPROXY_LOG"), "{}", text(&out));
}

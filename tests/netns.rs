//! Root tier: real proxies (microsocks, dante-server with username/password, tinyproxy with
//! Basic auth) in a "workspace" network namespace, peers on tailnet addresses in a "tailnet"
//! namespace, real clients (curl, wget, python3, node, c-harness), and an nftables leak meter
//! that rejects and counts every direct packet from the workspace to tailnet ranges. Every test
//! ends by asserting that the meter (and the DNS meter) did not move.
//!
//! Needs root, ip, nft and the proxies. Without them the tests say so and pass, unless
//! TSPROXY_REQUIRE_NETNS=1 (set by `make test` and CI), where a missing piece fails.
mod common;

use common::*;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

const TOPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/netns/topology.sh");
const PEER: &str = "hello from peer";

fn ready() -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let r = READY.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc_geteuid() } != 0 {
            return Err("not root".into());
        }
        for tool in ["ip", "nft", "microsocks", "danted", "tinyproxy", "curl", "wget", "python3", "node", "setpriv", "unshare"] {
            if !Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().map(|o| o.status.success()).unwrap_or(false) {
                return Err(format!("{tool} not installed"));
            }
        }
        let out = Command::new("bash").arg(TOPO).arg("up").output().map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("topology.sh up failed:\n{}", text(&out)));
        }
        Ok(())
    });
    match r {
        Ok(()) => true,
        Err(why) if std::env::var("TSPROXY_REQUIRE_NETNS").as_deref() == Ok("1") => panic!("root tier required: {why}"),
        Err(why) => {
            eprintln!("netns tier skipped: {why} (set TSPROXY_REQUIRE_NETNS=1 to make this an error)");
            false
        }
    }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Run in the workspace namespace with a clean environment plus `env`.
fn ws(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", "tsp-ws"]).args(args).env_clear();
    for k in ["PATH", "HOME", "PYENV_ROOT", "LANG"] {
        if let Ok(v) = std::env::var(k) {
            c.env(k, v);
        }
    }
    c.envs(env.iter().copied());
    c.output().unwrap()
}

fn preload_env() -> String {
    lib().to_string_lossy().into_owned()
}

fn counter(name: &str) -> u64 {
    let out = Command::new("ip").args(["netns", "exec", "tsp-ws", "nft", "list", "counter", "inet", "tsproxy", name]).output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    s.split("packets ").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("counter {name}: {s}"))
}

fn no_leak() {
    assert_eq!(counter("leak"), 0, "a direct packet reached a tailnet range");
    assert_eq!(counter("dns"), 0, "a tailnet name reached the system resolver");
}

fn ts(args: &[&str]) -> Output {
    let mut v = vec![launcher().to_string_lossy().into_owned()];
    v.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = v.iter().map(String::as_str).collect();
    ws(&refs, &[])
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn curl_zero_config_ipv4_ipv6_short_fqdn_v6only() {
    if !ready() {
        return;
    }
    for url in [
        "http://peer-1:8080/",
        "http://peer-1.tail1234.ts.net:8080/",
        "http://100.64.0.2:8080/",
        "http://[fd7a:115c:a1e0::2]:8080/",
        "http://peer6:8080/",
        "http://peer6.tail1234.ts.net:8080/",
    ] {
        let out = ts(&["curl", "-sS", "--max-time", "10", url]);
        assert_eq!(stdout(&out), PEER, "{url}: {}", text(&out));
    }
    // An AF_INET6 resolution of a v6-only name, then an AF_INET6 socket.
    let py = "import socket, urllib.request\nfam, _, _, _, sa = socket.getaddrinfo('peer6', 8080, socket.AF_INET6, socket.SOCK_STREAM)[0]\ns = socket.socket(fam); s.connect(sa); s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\nprint(s.makefile('rb').read().split(b'\\r\\n\\r\\n', 1)[1].decode().strip(), sa[0])";
    let out = ts(&["python3", "-c", py]);
    assert!(stdout(&out).starts_with("hello from peer 100::"), "AF_INET6: {}", text(&out));
    no_leak();
}

#[test]
fn bare_ld_preload_wget_and_curl() {
    if !ready() {
        return;
    }
    let lib = preload_env();
    let out = ws(&["wget", "-qO-", "--timeout=10", "http://peer-1:8080/"], &[("LD_PRELOAD", &lib)]);
    assert_eq!(stdout(&out), PEER, "{}", text(&out));
    let out = ws(&["curl", "-sS", "--max-time", "10", "http://peer-1.tail1234.ts.net:8080/"], &[("LD_PRELOAD", &lib)]);
    assert_eq!(stdout(&out), PEER, "{}", text(&out));
    no_leak();
}

#[test]
fn control_public_server_answers_a_plain_client() {
    if !ready() {
        return;
    }
    // Control for the public-destination test: without the library a plain client reaches the
    // public server, and the meter sees it as direct. (That the leak meter counts a direct dial
    // to the tailnet is checked by topology.sh up, before any test runs, so the meter is clean
    // for the tests running beside this one.)
    let out = ws(&["curl", "-sS", "--max-time", "5", "--resolve", "peer-x:8080:198.51.100.10", "http://peer-x:8080/"], &[]);
    assert_eq!(stdout(&out), PEER, "the public server answers directly: {}", text(&out));
    assert!(counter("public_direct") >= 1);
    no_leak();
}

#[test]
fn public_destination_goes_direct_never_through_the_proxy() {
    if !ready() {
        return;
    }
    let before = counter("public_direct");
    let out = ts(&["curl", "-sS", "--max-time", "10", "http://198.51.100.10:8080/"]);
    assert_eq!(stdout(&out), PEER, "{}", text(&out));
    assert!(counter("public_direct") > before, "the SYN left from the app's own uid");
    assert_eq!(counter("public_via_proxy"), 0, "the proxy dialled a public destination");
    no_leak();
}

#[test]
fn python_urllib_threads_fork_pool_asyncio() {
    if !ready() {
        return;
    }
    let py = r#"
import asyncio, socket, threading, urllib.request, multiprocessing as mp
def get(u):
    return urllib.request.urlopen(u, timeout=10).read().decode().strip()
res = []
def worker(i):
    res.append(get(["http://peer-1:8080/", "http://100.64.0.2:8080/", "http://peer6.tail1234.ts.net:8080/", "http://[fd7a:115c:a1e0::2]:8080/"][i % 4]))
ts = [threading.Thread(target=worker, args=(i,)) for i in range(64)]
[t.start() for t in ts]; [t.join() for t in ts]
assert res == ["hello from peer"] * 64, res
with mp.get_context("fork").Pool(4) as p:
    out = p.map(get, ["http://peer-1:8080/"] * 16)
assert out == ["hello from peer"] * 16, out
async def main():
    r, w = await asyncio.open_connection("peer-1", 8080)
    w.write(b"GET / HTTP/1.0\r\n\r\n"); await w.drain()
    body = await r.read()
    assert body.endswith(b"hello from peer\n"), body
    peer = w.get_extra_info("peername")
    w.close()
    return peer
print("ok", asyncio.run(main())[0])
"#;
    let out = ts(&["python3", "-c", py]);
    assert!(stdout(&out).starts_with("ok 240."), "{}", text(&out));
    no_leak();
}

#[test]
fn node_http_get_and_fetch() {
    if !ready() {
        return;
    }
    let js = r#"
const http = require('http');
http.get('http://peer-1:8080/', r => {
  let d = ''; r.on('data', c => d += c);
  r.on('end', async () => {
    const f = await fetch('http://peer6.tail1234.ts.net:8080/');
    console.log(d.trim() + '|' + (await f.text()).trim());
  });
}).on('error', e => { console.log('ERR ' + e.code); process.exit(1); });
"#;
    let out = ts(&["node", "-e", js]);
    assert_eq!(stdout(&out), "hello from peer|hello from peer", "{}", text(&out));
    no_leak();
}

#[test]
fn c_harness_getpeername_fd_and_flags() {
    if !ready() {
        return;
    }
    let h = harness("tcpclient").to_string_lossy().into_owned();
    for (args, peer) in [
        (vec!["-C", "-s", "GET / HTTP/1.0\\n\\n", "-r", "100.64.0.2", "8080"], Some("100.64.0.2:8080")),
        (vec!["-6", "-s", "GET / HTTP/1.0\\n\\n", "-r", "fd7a:115c:a1e0::2", "8080"], Some("[fd7a:115c:a1e0::2]:8080")),
        (vec!["-6", "-s", "GET / HTTP/1.0\\n\\n", "-r", "peer6", "8080"], None),
        (vec!["-n", "-s", "GET / HTTP/1.0\\n\\n", "-r", "peer-1", "8080"], None),
    ] {
        let mut a = vec![launcher().to_string_lossy().into_owned(), h.clone()];
        a.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        let out = ws(&refs, &[]);
        let k = kv(&out);
        assert_eq!(k.get("connect").map(String::as_str), Some("ok"), "{args:?}: {}", text(&out));
        assert_eq!(k["peer"], peer.map(String::from).unwrap_or_else(|| k["resolved"].clone()), "{args:?}");
        assert_eq!(k["reply"], "HTTP/1.0 200 OK", "{args:?}");
        assert_eq!((k["same_fd"].as_str(), k["flags_ok"].as_str()), ("1", "1"));
    }
    no_leak();
}

#[test]
fn dante_username_password() {
    if !ready() {
        return;
    }
    let out = ts(&["--proxy", "socks5://tsproxy-px:px-pass-4711@127.0.0.1:1081", "curl", "-sS", "--max-time", "10", "http://peer6:8080/"]);
    assert_eq!(stdout(&out), PEER, "{}", text(&out));
    let h = harness("tcpclient").to_string_lossy().into_owned();
    let out = ts(&["--proxy", "socks5://tsproxy-px:wrong@127.0.0.1:1081", &h, "peer-1", "8080"]);
    assert_eq!(kv(&out)["errno"], "ECONNREFUSED", "{}", text(&out));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("wrong"));
    no_leak();
}

#[test]
fn tinyproxy_http_connect_with_basic_auth() {
    if !ready() {
        return;
    }
    for url in ["http://peer-1:8080/", "http://100.64.0.2:8080/", "http://[fd7a:115c:a1e0::2]:8080/"] {
        let out = ts(&["--proxy", "http://tsuser:tspass@127.0.0.1:3128", "curl", "-sS", "--max-time", "10", url]);
        assert_eq!(stdout(&out), PEER, "{url}: {}", text(&out));
    }
    let h = harness("tcpclient").to_string_lossy().into_owned();
    let out = ts(&["--proxy", "http://tsuser:tspass@127.0.0.1:3128", &h, "100.64.0.3", "8080"]);
    assert_eq!(kv(&out)["errno"], "ECONNREFUSED", "refused peer via HTTP CONNECT: {}", text(&out));
    no_leak();
}

#[test]
fn failover_proxy_down_refused_and_unanswered_peers() {
    if !ready() {
        return;
    }
    let h = harness("tcpclient").to_string_lossy().into_owned();
    let out = ts(&["--proxy", "socks5://127.0.0.1:1999,socks5://127.0.0.1:1080", &h, "-s", "GET / HTTP/1.0\\n\\n", "-r", "peer-1", "8080"]);
    assert_eq!(kv(&out)["reply"], "HTTP/1.0 200 OK", "failover: {}", text(&out));

    let t = Instant::now();
    let out = ts(&["--proxy", "socks5://127.0.0.1:1999", &h, "peer-1", "8080"]);
    assert_eq!(kv(&out)["errno"], "ECONNREFUSED", "proxy down: {}", text(&out));
    assert!(kv(&out)["elapsed_ms"].parse::<f64>().unwrap() < 500.0, "{}", text(&out));
    assert!(t.elapsed().as_millis() < 3000);
    assert!(String::from_utf8_lossy(&out.stderr).contains("127.0.0.1:1999"), "logged: {}", text(&out));

    for target in ["100.64.0.3", "refuser"] {
        let out = ts(&[&h, target, "8080"]);
        assert_eq!(kv(&out)["errno"], "ECONNREFUSED", "refused peer {target}: {}", text(&out));
    }
    // A peer that never answers: the app's SO_SNDTIMEO bounds the wait.
    let out = ts(&[&h, "-T", "1000", "blackhole", "8080"]);
    let k = kv(&out);
    assert_eq!(k["errno"], "ETIMEDOUT", "{}", text(&out));
    let ms: f64 = k["elapsed_ms"].parse().unwrap();
    assert!((900.0..2500.0).contains(&ms), "{ms}");
    no_leak();
}

#[test]
fn exit_codes_and_child_processes() {
    if !ready() {
        return;
    }
    let out = ts(&["sh", "-c", "curl -sS --max-time 10 http://peer-1:8080/ && sh -c 'curl -sS --max-time 10 http://peer6:8080/'; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(stdout(&out), format!("{PEER}\n{PEER}"));
    no_leak();
}

#[test]
fn no_proxy_name_goes_to_the_system_resolver() {
    if !ready() {
        return;
    }
    // Give this one process a resolver of its own (10.200.0.9, counted apart) so the `dns`
    // meter the other tests assert on stays untouched.
    let before = counter("dns_other");
    let script = format!(
        "mount --bind /run/tsproxy-test/resolv.other /etc/resolv.conf && exec {} python3 -c \"import socket\ntry: print(socket.getaddrinfo('peer-1', 80)[0][4][0])\nexcept OSError as e: print('resolver', e.errno)\"",
        launcher().display()
    );
    let out = ws(&["unshare", "-m", "sh", "-c", &script], &[("NO_PROXY", "peer-1")]);
    assert!(stdout(&out).starts_with("resolver"), "{}", text(&out));
    assert!(counter("dns_other") > before, "the name was asked of the system resolver");
    no_leak();
}

#[test]
fn event_loops_through_real_proxies() {
    if !ready() {
        return;
    }
    let ev = harness("evloop").to_string_lossy().into_owned();
    let l = launcher().to_string_lossy().into_owned();
    for proxy in ["socks5://127.0.0.1:1080", "socks5://tsproxy-px:px-pass-4711@127.0.0.1:1081", "http://tsuser:tspass@127.0.0.1:3128"] {
        for mode in ["epoll", "epoll-et", "poll", "select"] {
            let out = ws(&[&l, "--proxy", proxy, &ev, "-m", mode, "-s", "GET / HTTP/1.0\\n\\n", "-r", "peer-1", "8080"], &[]);
            let k = kv(&out);
            let ctx = format!("{proxy} {mode}: {}", text(&out));
            assert_eq!(k.get("connect").map(String::as_str), Some("EINPROGRESS"), "{ctx}");
            assert_eq!(k.get("reply").map(String::as_str), Some("HTTP/1.0 200 OK"), "{ctx}");
            assert_eq!(k["again"], "EISCONN", "{ctx}");
            assert_eq!(k["fds_before"], k["fds_after"], "{ctx}");
        }
        // -q: no probes while pending, which would take a refusal that arrived that fast.
        let out = ws(&[&l, "--proxy", proxy, &ev, "-m", "epoll", "-q", "100.64.0.3", "8080"], &[]);
        assert_eq!(kv(&out).get("soerr").map(String::as_str), Some("ECONNREFUSED"), "refused via {proxy}: {}", text(&out));
        let out = ws(&[&l, "--proxy", proxy, &ev, "-m", "poll", "-t", "700", "blackhole", "8080"], &[]);
        let k = kv(&out);
        assert_eq!(k.get("result").map(String::as_str), Some("timeout"), "blackhole via {proxy}: {}", text(&out));
        assert_eq!(k["fds_before"], k["fds_after"]);
    }
    let py = r#"
import socket, time
t = time.monotonic()
try:
    socket.create_connection(("blackhole", 8080), timeout=1.5)
except socket.timeout:
    print("timeout %.3f" % (time.monotonic() - t))
"#;
    let out = ts(&["python3", "-c", py]);
    let t: f64 = stdout(&out).strip_prefix("timeout ").and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{}", text(&out)));
    assert!((1.35..1.65).contains(&t), "python's timeout holds within 10%: {t}");
    no_leak();
}

#[test]
fn static_go_and_c_through_the_supervisor() {
    if !ready() {
        return;
    }
    let (Some(go), Some(c)) = (go_client(), static_tcpclient()) else { return };
    let (go, c) = (go.to_string_lossy().into_owned(), c.to_string_lossy().into_owned());
    for url in [
        "http://100.64.0.2:8080/",
        "http://[fd7a:115c:a1e0::2]:8080/",
        "http://peer-1:8080/",
        "http://peer-1.tail1234.ts.net:8080/",
        "http://peer6:8080/",
        "http://slow-peer:8080/",
    ] {
        let out = ts(&[&go, url]);
        assert_eq!(stdout(&out), PEER, "go {url}: {}", text(&out));
        let out = ts(&["sh", "-c", &format!("{go} {url}")]);
        assert_eq!(stdout(&out), PEER, "sh -c go {url}: {}", text(&out));
    }
    for host in ["100.64.0.2", "peer-1", "peer-1.tail1234.ts.net", "fd7a:115c:a1e0::2"] {
        let out = ts(&[&c, "-s", "GET / HTTP/1.0\\n\\n", "-r", host, "8080"]);
        assert_eq!(kv(&out).get("reply").map(String::as_str), Some("HTTP/1.0 200 OK"), "static C {host}: {}", text(&out));
    }
    let before = counter("public_direct");
    let out = ts(&[&go, "http://198.51.100.10:8080/"]);
    assert_eq!(stdout(&out), PEER, "{}", text(&out));
    assert!(counter("public_direct") > before);
    assert_eq!(counter("public_via_proxy"), 0);
    let t = Instant::now();
    let out = ws(&[&launcher().to_string_lossy(), &go, "http://blackhole:8080/", "5"], &[("TSPROXY_CONNECT_TIMEOUT", "2")]);
    assert!(stdout(&out).starts_with("ERR"), "{}", text(&out));
    assert!(t.elapsed().as_secs_f64() < 5.0, "within the client's timeout: {:?}", t.elapsed());
    let out = ts(&[&go, "http://100.64.0.3:8080/", "5"]);
    assert!(stdout(&out).contains("connection refused"), "{}", text(&out));
    no_leak();
}

//! Nonblocking connects (no-root tier): connect() returns EINPROGRESS at once and the socket
//! behaves like a kernel socket in SYN_SENT until the tunnel is up, under every wait API.
//! "slow" is a tailnet name whose dial takes 1 s at the proxy.
mod common;

use common::*;
use std::collections::HashMap;
use std::process::Output;

/// The tests here measure time (readiness after a 1 s dial, the app's own timeouts within 10%),
/// and one of them is a 64-thread stress run: they take turns, so none measures another's load.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn evloop(args: &[&str]) -> (Output, HashMap<String, String>) {
    let out = preloaded(harness("evloop")).args(args).env("TSPROXY_PROXY", net().socks.url()).output().unwrap();
    let k = kv(&out);
    (out, k)
}

fn num(k: &HashMap<String, String>, key: &str) -> f64 {
    k.get(key).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{key} missing in {k:?}"))
}

fn hex(k: &HashMap<String, String>, key: &str) -> u32 {
    u32::from_str_radix(k[key].trim_start_matches("0x"), 16).unwrap()
}

#[test]
fn every_wait_api_sees_syn_sent_then_connected() {
    let _serial = serial();
    for mode in ["epoll", "epoll-et", "epoll-oneshot", "epoll-before", "epoll-pwait", "epoll-pwait2", "poll", "ppoll", "select", "pselect"] {
        let (out, k) = evloop(&["-m", mode, "-s", "GET / HTTP/1.0\\n\\n", "-r", "slow", "80"]);
        let ctx = format!("{mode}: {}", text(&out));
        assert_eq!(k.get("connect").map(String::as_str), Some("EINPROGRESS"), "{ctx}");
        assert!(num(&k, "connect_us") < 20_000.0, "connect() held the caller: {ctx}");
        for (key, want) in [
            ("pending_write", "EAGAIN"),
            ("pending_recv", "EAGAIN"),
            ("pending_peer", "ENOTCONN"),
            ("pending_connect", "EALREADY"),
            ("pending_soerr", "0"),
            ("pending_poll0", "0"),
        ] {
            assert_eq!(k[key], want, "{key}: {ctx}");
        }
        assert!(num(&k, "wait_ms") >= 900.0, "ready before the 1 s dial finished: {ctx}");
        assert!(num(&k, "cpu_ms") < 50.0, "busy waiting: {ctx}");
        assert!(hex(&k, "events") & 0x4 != 0, "writable when up: {ctx}");
        assert!(hex(&k, "events") & 0x8 == 0, "no error: {ctx}");
        assert!(!k.contains_key("bad_data"), "epoll data must be the application's: {ctx}");
        assert_eq!(k["soerr"], "0", "{ctx}");
        assert!(k["peer"].starts_with("240."), "{ctx}");
        assert_eq!(k["again"], "EISCONN", "{ctx}");
        assert_eq!(k["reply"], "HTTP/1.0 200 OK", "bytes flow on the app's socket: {ctx}");
        if mode.starts_with("epoll") {
            let second = if mode == "epoll-et" || mode == "epoll-oneshot" { "0" } else { "1" };
            assert_eq!(k["second"], second, "level/edge/one-shot semantics: {ctx}");
        }
        assert_eq!(k["fds_before"], k["fds_after"], "fd leak: {ctx}");
    }
}

#[test]
fn waiting_on_a_dup_of_the_pending_socket() {
    let _serial = serial();
    let (out, k) = evloop(&["-d", "-m", "epoll", "-s", "GET / HTTP/1.0\\n\\n", "-r", "slow", "80"]);
    assert_eq!(k.get("reply").map(String::as_str), Some("HTTP/1.0 200 OK"), "{}", text(&out));
    assert!(num(&k, "wait_ms") >= 900.0, "{}", text(&out));
    let (out, k) = evloop(&["-d", "-m", "poll", "-r", "slow", "7"]);
    assert_eq!(k.get("reply").map(String::as_str), Some("HELLO tailnet"), "{}", text(&out));
}

#[test]
fn dup_variants_fork_while_pending_and_threads_racing_on_one_epoll_set() {
    let _serial = serial();
    for (flag, mode) in [("-D", "epoll"), ("-3", "poll"), ("-f", "epoll"), ("-f", "select")] {
        let (out, k) = evloop(&[flag, "-m", mode, "-s", "GET / HTTP/1.0\\n\\n", "-r", "slow", "80"]);
        let ctx = format!("{flag} {mode}: {}", text(&out));
        assert_eq!(k.get("reply").map(String::as_str), Some("HTTP/1.0 200 OK"), "{ctx}");
        assert!(num(&k, "wait_ms") >= 900.0, "{ctx}");
        if flag == "-f" {
            assert_eq!(k["forked"], "0", "the child ran and exited cleanly: {ctx}");
        }
        assert_eq!(k["fds_before"], k["fds_after"], "{ctx}");
    }
    let (out, k) = evloop(&["-T", "-t", "3000", "-m", "epoll", "-s", "GET / HTTP/1.0\\n\\n", "-r", "slow", "80"]);
    let ctx = text(&out);
    assert!(hex(&k, "events") & 0x4 != 0, "{ctx}");
    let racer = hex(&k, "racer_events");
    assert!(racer == 0 || racer & 0x4 != 0, "the other thread saw only real events: {ctx}");
    assert!(!k.contains_key("racer_bad_data") && !k.contains_key("bad_data"), "no token leaked to a thread: {ctx}");
    assert_eq!(k.get("reply").map(String::as_str), Some("HTTP/1.0 200 OK"), "{ctx}");
}

#[test]
fn failures_are_epollerr_and_so_error_once() {
    let _serial = serial();
    for (name, errno) in [("refuser", "ECONNREFUSED"), ("unreach", "EHOSTUNREACH"), ("ttl", "ETIMEDOUT")] {
        for mode in ["epoll", "poll", "select"] {
            // -q: no probes while pending (a send or SO_ERROR read there would take a failure
            // that arrived that fast, as on a kernel socket, and make this schedule-dependent).
            let (out, k) = evloop(&["-m", mode, "-q", name, "7"]);
            let ctx = format!("{name} {mode}: {}", text(&out));
            assert_eq!(k.get("connect").map(String::as_str), Some("EINPROGRESS"), "{ctx}");
            let ev = hex(&k, "events");
            assert!(ev & 0x4 != 0, "{ctx}");
            if mode != "select" {
                // As for a kernel socket: EPOLLERR/POLLERR until SO_ERROR has been read.
                assert!(ev & 0x8 != 0, "EPOLLERR/POLLERR expected: {ctx}");
            }
            // Reported by SO_ERROR after the wait.
            assert_eq!(k["soerr"], errno, "{ctx}");
            assert_eq!(k["fds_before"], k["fds_after"], "{ctx}");
        }
    }
}

#[test]
fn proxy_down_fails_fast_through_the_event_loop() {
    let _serial = serial();
    let dead = closed_port();
    let out = preloaded(harness("evloop")).args(["-m", "epoll", "peer-1", "7"]).env("TSPROXY_PROXY", format!("socks5://{dead}")).output().unwrap();
    let k = kv(&out);
    let ctx = text(&out);
    assert_eq!(k.get("connect").map(String::as_str), Some("EINPROGRESS"), "{ctx}");
    // Refusal on loopback is instant: the first call that looks sees it, as with a direct dial
    // to a closed local port (the error is reported once, by whichever call comes first).
    let first = ["pending_write", "pending_connect", "soerr"].iter().find_map(|k2| k.get(*k2).filter(|v| v.as_str() == "ECONNREFUSED"));
    assert!(first.is_some(), "{ctx}");
    assert!(k.get("wait_ms").map(|_| num(&k, "wait_ms")).unwrap_or(0.0) < 500.0, "{ctx}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&dead.to_string()), "logged: {ctx}");
}

#[test]
fn the_apps_timeout_holds_and_close_cancels() {
    let _serial = serial();
    for mode in ["epoll", "poll", "select"] {
        let (out, k) = evloop(&["-m", mode, "-t", "300", "hang", "7"]);
        let ctx = format!("{mode}: {}", text(&out));
        assert_eq!(k.get("result").map(String::as_str), Some("timeout"), "{ctx}");
        let w = num(&k, "wait_ms");
        assert!((290.0..600.0).contains(&w), "{ctx}");
        assert!(num(&k, "cpu_ms") < 50.0, "{ctx}");
        assert_eq!(k["fds_before"], k["fds_after"], "{ctx}");
    }
}

#[test]
fn python_timeouts_asyncio_and_a_live_event_loop() {
    let _serial = serial();
    let py = r#"
import asyncio, socket, time
t = time.monotonic()
try:
    socket.create_connection(("hang", 7), timeout=1.5)
    print("create_connection=connected")
except socket.timeout:
    print("create_connection=timeout %.3f" % (time.monotonic() - t))
s = socket.create_connection(("slow", 7), timeout=5)
print("sync_banner=" + s.recv(64).decode().strip())
async def ticker(n):
    while True:
        n[0] += 1
        await asyncio.sleep(0.05)
async def main():
    ticks = [0]
    tk = asyncio.create_task(ticker(ticks))
    t = time.monotonic()
    r, w = await asyncio.open_connection("slow", 7)
    line = await r.readline()
    print("asyncio_banner=%s ticks=%d dial=%.2f" % (line.decode().strip(), ticks[0], time.monotonic() - t))
    w.close()
    t = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.open_connection("hang", 7), 1.5)
    except asyncio.TimeoutError:
        print("wait_for=timeout %.3f" % (time.monotonic() - t))
    try:
        await asyncio.open_connection("refuser", 7)
    except ConnectionRefusedError:
        print("refused=ConnectionRefusedError")
    except OSError as e:
        # A name with an IPv4 and an IPv6 address (as every tailnet name has now): asyncio
        # reports both refusals together, as for any dual-stack host that refuses.
        if str(e).startswith("Multiple exceptions") and str(e).count("[Errno 111]") == 2:
            print("refused=ConnectionRefusedError")
        else:
            raise
    tk.cancel()
asyncio.run(main())
"#;
    let out = preloaded("python3").args(["-c", py]).env("TSPROXY_PROXY", net().socks.url()).output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout).to_string();
    let ctx = text(&out);
    let secs = |key: &str| -> f64 {
        s.lines().find(|l| l.starts_with(key)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{key}: {ctx}"))
    };
    let t = secs("create_connection=timeout");
    assert!((1.35..1.65).contains(&t), "socket timeout within 10%: {t}: {ctx}");
    assert!(s.contains("sync_banner=HELLO tailnet"), "{ctx}");
    let line = s.lines().find(|l| l.starts_with("asyncio_banner=HELLO tailnet")).unwrap_or_else(|| panic!("{ctx}"));
    let ticks: u32 = line.split("ticks=").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(ticks >= 10, "the event loop kept running during the 1 s dial: {line}");
    let t = secs("wait_for=timeout");
    assert!((1.35..1.65).contains(&t), "asyncio timeout within 10%: {t}: {ctx}");
    assert!(s.contains("refused=ConnectionRefusedError"), "{ctx}");
}

#[test]
fn node_event_loop_keeps_running_during_a_slow_dial() {
    let _serial = serial();
    let js = r#"
const http = require('http');
let ticks = 0;
const iv = setInterval(() => ticks++, 50);
const t = Date.now();
http.get('http://slow/', r => {
  let d = ''; r.on('data', c => d += c);
  r.on('end', () => {
    fetch('http://slow/').then(f => f.text()).then(b => {
      clearInterval(iv);
      console.log(JSON.stringify({get: d.trim(), fetch: b.trim(), ticks, ms: Date.now() - t}));
    });
  });
}).on('error', e => { console.log('ERR ' + e.code); process.exit(1); });
"#;
    let out = preloaded("node").args(["-e", js]).env("TSPROXY_PROXY", net().socks.url()).output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains(r#""get":"hello from tailnet","fetch":"hello from tailnet""#), "{}", text(&out));
    let ticks: u32 = s.split("\"ticks\":").nth(1).and_then(|r| r.split(',').next()).and_then(|v| v.parse().ok()).unwrap();
    assert!(ticks >= 20, "node's loop ran during two 1 s dials: {s}");
}

#[test]
fn curl_through_a_slow_dial() {
    let _serial = serial();
    let out = std::process::Command::new(launcher()).args(["--proxy", &net().socks.url(), "curl", "-sS", "--max-time", "10", "http://slow/"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from tailnet\n", "{}", text(&out));
    let out = std::process::Command::new(launcher())
        .args(["--proxy", &net().socks.url(), "curl", "-sS", "--connect-timeout", "0.5", "http://hang/"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(28), "curl's own connect timeout: {}", text(&out));
}

#[test]
fn stress_threads_and_a_fork_storm() {
    let _serial = serial();
    // 64 threads x 200 connects (blocking, epoll, poll in turn) while a thread forks 60
    // children, a quarter of them daemonized, each connecting too. Bounded by an alarm.
    let out = preloaded(harness("stress"))
        .args(["-t", "64", "-n", "200", "-f", "60", "-s", "120", "100.64.0.2", "7"])
        .env("TSPROXY_PROXY", net().socks.url())
        .env("TSPROXY_LOG", "off")
        .output()
        .unwrap();
    let k = kv(&out);
    let ctx = text(&out);
    assert_eq!(out.status.code(), Some(0), "{ctx}");
    assert_eq!(k["ok"], "12800", "{ctx}");
    assert_eq!(k["forks_ok"], "60", "{ctx}");
    assert_eq!(k["fds_before"], k["fds_after"], "{ctx}");
    eprintln!("stress: {}", ctx.replace('\n', " "));
}

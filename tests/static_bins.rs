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

// ---- Never-leak rules of the supervisor, with c-harness/sup_probe.c linked -static. ----

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// c-harness/sup_probe.c linked with -static, once per test process.
fn probe() -> Option<PathBuf> {
    static P: OnceLock<Option<PathBuf>> = OnceLock::new();
    P.get_or_init(|| {
        if !Command::new("sh").args(["-c", "command -v cc"]).output().map(|o| o.status.success()).unwrap_or(false) {
            eprintln!("sup_probe tests skipped: cc not installed");
            return None;
        }
        let out = target_dir().join("c-harness").join("sup_probe-static");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let tmp = out.with_extension(format!("tmp{}", std::process::id()));
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("c-harness/sup_probe.c");
        let o = Command::new("cc").args(["-static", "-O2", "-Wall", "-o"]).arg(&tmp).arg(&src).output().expect("cc");
        assert!(o.status.success(), "cc -static sup_probe.c: {}", String::from_utf8_lossy(&o.stderr));
        std::fs::rename(&tmp, &out).unwrap();
        Some(out)
    })
    .clone()
}

/// Run sup_probe under the launcher (supervisor on) with `TSPROXY_ROUTES` making loopback
/// addresses "tailnet" destinations, so a leak reaches a listener of ours instead of a network.
fn probe_run(proxy: &str, args: &[&str]) -> std::process::Output {
    let p = probe().unwrap();
    Command::new(launcher())
        .args(["--supervisor=on", "--proxy", proxy])
        .arg(&p)
        .args(args)
        .env("TSPROXY_ROUTES", "127.0.0.1/32,::1/128")
        .env_remove("TSPROXY_LOG")
        .output()
        .unwrap()
}

#[test]
fn i386_int80_connect_to_tailnet_never_leaves() {
    if probe().is_none() {
        return;
    }
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port().to_string();
    let before = net().socks.seen().len();
    let out = probe_run(&net().socks.url(), &["int80", "127.0.0.1", &port]);
    assert_eq!(kv(&out).get("errno").map(String::as_str), Some("ENOSYS"), "{}", text(&out));
    assert!(l.accept().is_err(), "the i386 connect reached the destination");
    assert_eq!(net().socks.seen().len(), before);
}

#[test]
fn datagrams_with_sendmsg_sendmmsg_and_family_zero_are_refused() {
    if probe().is_none() {
        return;
    }
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let port = u.local_addr().unwrap().port().to_string();
    for how in ["sendmsg", "sendmmsg", "sendto0"] {
        let out = probe_run(&net().socks.url(), &[how, "127.0.0.1", &port]);
        assert_eq!(kv(&out).get("errno").map(String::as_str), Some("ENETUNREACH"), "{how}: {}", text(&out));
        let mut b = [0u8; 16];
        assert!(u.recv(&mut b).is_err(), "{how}: a datagram reached the tailnet destination");
    }
    // Not ours: untouched.
    let u2 = UdpSocket::bind("127.0.0.2:0").unwrap();
    u2.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let out = probe_run(&net().socks.url(), &["sendmsg", "127.0.0.2", &u2.local_addr().unwrap().port().to_string()]);
    assert_eq!(kv(&out)["errno"], "0", "{}", text(&out));
    let mut b = [0u8; 16];
    assert_eq!(u2.recv(&mut b).unwrap(), 5);
}

#[test]
fn io_uring_is_enosys_under_the_supervisor() {
    if probe().is_none() {
        return;
    }
    let out = probe_run(&net().socks.url(), &["io_uring"]);
    assert_eq!(kv(&out)["errno"], "ENOSYS", "{}", text(&out));
}

#[test]
fn rfc2133_24_byte_inet6_connect_is_proxied() {
    if probe().is_none() || TcpListener::bind("[::1]:0").is_err() {
        return;
    }
    let l = TcpListener::bind("[::1]:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    let out = probe_run(&net().socks.url(), &["connect24", "::1", &port.to_string()]);
    assert!(l.accept().is_err(), "the 24-byte connect went direct: {}", text(&out));
    assert!(net().socks.seen().iter().any(|d| matches!(d, Dest::V6(ip, p) if ip.is_loopback() && *p == port)), "{}", text(&out));
}

/// A SOCKS5 server (no auth) that waits `delay` before answering CONNECT, then answers
/// "PONG:" + the first 4 bytes of data. Records those bytes.
fn slow_socks(delay: Duration) -> (String, Arc<Mutex<Vec<Vec<u8>>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("socks5://{}", l.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let seen = s2.clone();
            std::thread::spawn(move || {
                let mut c = c;
                let mut g = [0u8; 3];
                c.read_exact(&mut g)?;
                c.write_all(&[5, 0])?;
                let mut h = [0u8; 4];
                c.read_exact(&mut h)?;
                let alen = match h[3] {
                    1 => 4,
                    4 => 16,
                    _ => {
                        let mut n = [0u8; 1];
                        c.read_exact(&mut n)?;
                        n[0] as usize
                    }
                };
                let mut rest = vec![0u8; alen + 2];
                c.read_exact(&mut rest)?;
                std::thread::sleep(delay);
                c.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0])?;
                let mut d = [0u8; 4];
                c.read_exact(&mut d)?;
                seen.lock().unwrap().push(d.to_vec());
                c.write_all(&[&b"PONG:"[..], &d].concat())?;
                std::io::Result::Ok(())
            });
        }
    });
    (url, seen)
}

#[test]
fn a_signal_during_a_held_connect_neither_interrupts_it_nor_mixes_data_into_the_handshake() {
    if probe().is_none() {
        return;
    }
    let (url, seen) = slow_socks(Duration::from_millis(700));
    let out = probe_run(&url, &["sigconnect", "100.64.0.2", "7"]);
    let k = kv(&out);
    assert_eq!(k.get("errno").map(String::as_str), Some("0"), "connect interrupted: {}", text(&out));
    assert_eq!(k.get("reply").map(String::as_str), Some("PONG:PING"), "{}", text(&out));
    assert!(k["alarms"].parse::<u32>().unwrap() >= 1, "the timer fired after connect: {}", text(&out));
    assert_eq!(*seen.lock().unwrap(), vec![b"PING".to_vec()]);
}

/// The pid of the supervisor started by a launcher whose environment holds `marker`.
fn supervisor_with(marker: &str) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok()).find(|pid| {
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        cmd.starts_with(b"tsproxy-supervisor") && env.windows(marker.len()).any(|w| w == marker.as_bytes())
    })
}

#[test]
fn dials_use_a_bounded_pool_and_overflow_fails_with_eagain() {
    if probe().is_none() {
        return;
    }
    let (url, _) = slow_socks(Duration::from_millis(500));
    let marker = format!("SUP_POOL_TEST={}", std::process::id());
    let mut child = Command::new(launcher())
        .args(["--supervisor=on", "--proxy", &url])
        .arg(probe().unwrap())
        .args(["many", "150", "100.64.0.2", "7"])
        .env(marker.split('=').next().unwrap(), marker.split('=').nth(1).unwrap())
        .env_remove("TSPROXY_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut max_threads = 0;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if let Some(pid) = supervisor_with(&marker) {
            let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let n: usize = st.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
            max_threads = max_threads.max(n);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let k = kv(&out);
    let (ok, eagain, other): (usize, usize, usize) = (k["ok"].parse().unwrap(), k["eagain"].parse().unwrap(), k["other"].parse().unwrap());
    assert_eq!((ok + eagain, other), (150, 0), "{}", text(&out));
    assert!(ok >= 12 + 64, "{}", text(&out));
    assert!(eagain > 0, "150 dials at once through a slow proxy: some must find the queue full: {}", text(&out));
    // The process's first thread (it only waits for the next: supervisor/spawn.rs), the
    // supervisor's main thread, the DNS responders (UDP and TCP), 12 dial workers.
    assert!(max_threads > 0 && max_threads <= 16, "supervisor threads: {max_threads}");
}

#[test]
fn proxy_password_is_not_in_the_supervisors_command_line() {
    let secret = format!("pw-{}-secret", std::process::id());
    let marker = format!("SUP_ARGV_TEST={}", std::process::id());
    let mut child = Command::new(launcher())
        .args(["--supervisor=on", "--proxy", &format!("socks5://user:{secret}@127.0.0.1:1"), "sleep", "3"])
        .env(marker.split('=').next().unwrap(), marker.split('=').nth(1).unwrap())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let mut sup = None;
    while sup.is_none() && t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(50));
        sup = supervisor_with(&marker);
    }
    let leaks: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default().windows(secret.len()).any(|w| w == secret.as_bytes()))
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    assert!(sup.is_some(), "no supervisor found");
    assert!(leaks.is_empty(), "the password is in /proc/{leaks:?}/cmdline");
}

#[test]
fn dns_responder_answers_only_the_supervised_tree() {
    let mut child = Command::new(launcher())
        .args(["--supervisor=on", "--proxy", &net().socks.url(), "sh", "-c", "echo $TSPROXY_SUPERVISOR_DNS $TSPROXY_SUPERVISOR_DNS_KEY; sleep 3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let mut it = line.split_whitespace();
    let (addr, key): (SocketAddr, String) = (it.next().unwrap().parse().unwrap(), it.next().unwrap_or("").to_string());
    let q = tsproxy_core::dns::query(0x4242, "outsider-peer", tsproxy_core::dns::TYPE_A).unwrap();
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    u.send_to(&q, addr).unwrap();
    let mut b = [0u8; 512];
    let outsider = u.recv(&mut b);
    // With the tree's key, the library's registration is answered.
    let mut keyed = b"TSK1".to_vec();
    keyed.extend_from_slice(key.as_bytes());
    keyed.extend_from_slice(&q);
    u.send_to(&keyed, addr).unwrap();
    let insider = u.recv(&mut b).map(|n| tsproxy_core::dns::first_address(&b[..n], 0x4242));
    let _ = child.kill();
    let _ = child.wait();
    assert!(outsider.is_err(), "an outsider got an answer");
    assert!(matches!(insider, Ok(Some(ip)) if tsproxy_core::names::is_placeholder(&ip)), "{insider:?}");
}

// ---- A static proxy never tunnels to itself (the supervisor's half of the self-proxy rule). ----

/// c-harness/NAME.c linked with -static (and -pthread), once per test process, as NAME-static
/// (the dynamic build of the same harness lives next to it under NAME).
fn static_harness(name: &str) -> Option<PathBuf> {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap();
    if let Some((_, p)) = built.iter().find(|(n, _)| n == name) {
        return Some(p.clone());
    }
    if !Command::new("sh").args(["-c", "command -v cc"]).output().map(|o| o.status.success()).unwrap_or(false) {
        assert!(std::env::var("TSPROXY_REQUIRE_STATIC").as_deref() != Ok("1"), "cc is required (TSPROXY_REQUIRE_STATIC=1)");
        eprintln!("{name} tests skipped: cc not installed");
        return None;
    }
    let out = target_dir().join("c-harness").join(format!("{name}-static"));
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("c-harness/{name}.c"));
    let o = Command::new("cc").args(["-static", "-pthread", "-O2", "-Wall", "-o"]).arg(&tmp).arg(&src).output().expect("cc");
    assert!(o.status.success(), "cc -static {name}.c: {}", String::from_utf8_lossy(&o.stderr));
    std::fs::rename(&tmp, &out).unwrap();
    built.push((name.to_string(), out.clone()));
    Some(out)
}

/// A peer on 127.0.0.5 (made a "tailnet" address with TSPROXY_ROUTES) that greets with
/// `HELLO <tag>`: a proxy that dials it itself gets the banner.
fn route_peer(tag: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.5:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.write_all(format!("HELLO {tag}\r\n").as_bytes());
        }
    });
    port
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A SOCKS5 CONNECT through `proxy` to `dest` (ATYP 1 for an IPv4 address, else ATYP 3):
/// the reply code (None: no reply) and the first line the destination sent.
fn socks_connect(proxy: u16, dest: &str, port: u16) -> (Option<u8>, String) {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", proxy)) else { return (None, String::new()) };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = vec![5, 1, 0, 5, 1, 0];
    match dest.parse::<std::net::Ipv4Addr>() {
        Ok(ip) => {
            req.push(1);
            req.extend_from_slice(&ip.octets());
        }
        Err(_) => {
            req.extend_from_slice(&[3, dest.len() as u8]);
            req.extend_from_slice(dest.as_bytes());
        }
    }
    req.extend_from_slice(&port.to_be_bytes());
    let mut greet = [0u8; 2];
    let mut rep = [0u8; 10];
    if s.write_all(&req).is_err() || s.read_exact(&mut greet).is_err() || s.read_exact(&mut rep).is_err() {
        return (None, String::new());
    }
    let mut line = String::new();
    if rep[1] == 0 {
        let _ = BufReader::new(&s).read_line(&mut line);
    }
    (Some(rep[1]), line.trim_end().to_string())
}

#[test]
fn a_static_socks_proxy_that_is_its_own_upstream_refuses_tailnet_and_never_fans_out() {
    let Some(socks) = static_harness("sup_socks") else { return };
    let peer = route_peer("route");
    let port = free_port();
    // At most 10 connections accepted: a fan-out through itself stops there (and then the
    // first client gets no answer).
    let mut child = Command::new(launcher())
        .args(["--supervisor=on", "--proxy", &format!("socks5://127.0.0.1:{port}")])
        .arg(&socks)
        .args([&port.to_string(), "10"])
        .env("TSPROXY_ROUTES", "127.0.0.5/32")
        .env("TSPROXY_LOG", "info")
        .env("TSPROXY_CONNECT_TIMEOUT", "2")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert_eq!(first.trim(), "listen=ok");
    // A tailnet address, twice: the proxy's own dial is refused at once (never through itself,
    // never directly: the peer's banner would be a leak).
    let t = Instant::now();
    let a = socks_connect(port, "127.0.0.5", peer);
    let b = socks_connect(port, "127.0.0.5", peer);
    let ab_took = t.elapsed();
    // A tailnet name: the proxy resolves it to a placeholder, which it cannot dial: refused
    // promptly, not tunnelled to itself.
    let t = Instant::now();
    let named = socks_connect(port, "peer-1", 80);
    let named_took = t.elapsed();
    drop(child.stdin.take());
    let mut rest = String::new();
    let _ = stdout.read_to_string(&mut rest);
    let _ = child.wait();
    let stderr = err.join().unwrap();
    let report = format!("--- stdout\n{first}{rest}--- stderr\n{stderr}");
    let accepted: usize = rest.lines().find_map(|l| l.strip_prefix("accepted=")).and_then(|v| v.parse().ok()).unwrap_or(0);
    assert_eq!(a, (Some(5), String::new()), "refused (SOCKS5 reply 5), not dialled: {report}");
    assert_eq!(b, (Some(5), String::new()), "{report}");
    assert!(ab_took < Duration::from_secs(1), "{ab_took:?}: {report}");
    assert_eq!(named.0, Some(5), "the placeholder refused (SOCKS5 reply 5): {report}");
    assert!(named_took < Duration::from_secs(1), "{named_took:?}: {report}");
    assert_eq!(accepted, 3, "one connection per request, none from itself: {report}");
    assert_eq!(stderr.matches("it is the proxy").count(), 1, "said once per process: {report}");
}

#[test]
fn a_static_process_listening_on_the_proxy_endpoint_is_the_proxy_and_others_are_not() {
    let Some(h) = static_harness("h_selfproxy") else { return };
    let peer = route_peer("route");
    let run = |mode: &str| {
        let pport = free_port();
        let out = Command::new(launcher())
            .args(["--supervisor=on", "--proxy", &format!("socks5://127.0.0.1:{pport}")])
            .arg(&h)
            .args([mode, &pport.to_string(), "127.0.0.5", &peer.to_string()])
            .env("TSPROXY_ROUTES", "127.0.0.5/32")
            .env("TSPROXY_LOG", "info")
            .env("TSPROXY_CONNECT_TIMEOUT", "2")
            .output()
            .unwrap();
        (kv(&out), text(&out), String::from_utf8_lossy(&out.stderr).matches("it is the proxy").count())
    };
    for mode in ["listen", "wild", "wild6"] {
        let (k, t, said) = run(mode);
        assert_eq!(k.get("listen").map(String::as_str), Some("ok"), "{mode}: {t}");
        assert_eq!(k.get("connect").map(String::as_str), Some("ECONNREFUSED"), "{mode}: {t}");
        assert_eq!(k.get("reply"), None, "{mode}: dialled directly: {t}");
        assert!(k["elapsed_ms"].parse::<f64>().unwrap() < 1000.0, "{mode}: not tunnelled to itself: {t}");
        assert_eq!(said, 1, "{mode}: {t}");
    }
    // Another port, and an IPv6-only wildcard on the proxy port (no IPv4 connection reaches
    // it), are not the proxy: tunnelled to the absent proxy, refused.
    for mode in ["other", "v6only"] {
        let (k, t, said) = run(mode);
        assert_eq!(k.get("listen").map(String::as_str), Some("ok"), "{mode}: {t}");
        assert_eq!(k.get("connect").map(String::as_str), Some("ECONNREFUSED"), "{mode}: {t}");
        assert_eq!(said, 0, "{mode}: {t}");
    }
}

//! Adversarial root tier (issue 10): one test per way a tailnet packet or name could escape,
//! or another local user could abuse tsproxy. Each test runs its attack programs as its own
//! numeric uid with its own leak meter and DNS meter (tests/common/world.rs), and:
//!
//! Items 6, 7, 9 and 10 also have tests in their own namespaces (launcher.rs, self_proxy.rs,
//! static_bins.rs, resolver_apis.rs, dns_leak.rs); here they are measured on the meters too.
//!
//! 1. runs the attack **without tsproxy** first, wherever that is possible, and asserts the
//!    uid's meter moved: the attack is real and the meter sees it (the "control");
//! 2. runs the same attack under tsproxy (bare `LD_PRELOAD` and/or the launcher, as the item
//!    says) and asserts the meter did not move, plus the answer the fix promises.
//!
//! Every run is bounded in time (a hang fails), in namespace tsp-ws, with a clean
//! environment. Attack programs: c-harness/a_*.c, built dynamic (cc) and static (musl-gcc
//! -static: only the supervisor can see those). Needs root and the tools of the namespace
//! tier; skipped without them unless TSPROXY_REQUIRE_NETNS=1 (`make test` as root, CI).
//!
//! Items 6, 7, 9 and 10 are written by others with the same helpers: `Meter::fresh()`, then
//! `m.attack(Via::Plain | Via::Preload | Via::Launcher, argv)` with `.env`, `.launcher_args`,
//! `.net_raw`, `.secs`, and `.run().expect_leak() / expect_dns() / expect_clean()`.
//!
//! Raw sockets (item 2): the test uid gets CAP_NET_RAW as an ambient capability
//! ([`Attack::net_raw`]) rather than running as root, so its raw packets stay on its own
//! per-uid meter (skuid is the socket creator's uid).
mod common;

use common::world::*;
use std::path::PathBuf;

const PEER_REPLY: &str = "HTTP/1.0 200 OK";

fn probe() -> Option<PathBuf> {
    build("a_probe", "a_probe", false, &[])
}

fn probe_static() -> Option<PathBuf> {
    build("a_probe", "a_probe-musl", true, &[])
}

// ---------------------------------------------------------------- 1. RFC 2133 AF_INET6

#[test]
fn item01_inet6_addrlen_24_tcp_udp_fastopen() {
    let Some(m) = Meter::fresh() else { return };
    let (Some(dy), Some(st)) = (probe(), probe_static()) else { return };
    for dest in ["fd7a:115c:a1e0::2", "::ffff:100.64.0.2"] {
        for (mode, port) in [("tcp24", "8080"), ("udp24", "9"), ("tfo24", "8080")] {
            m.attack(Via::Plain, &[s(&dy), mode, dest, port]).run().expect_leak();
            // The library: TCP (and TCP Fast Open) tunnelled, a datagram refused.
            let r = m.attack(Via::Preload, &[s(&dy), mode, dest, port]).run().expect_clean();
            if mode == "udp24" {
                assert_eq!(r.get("errno"), "ENETUNREACH", "{}", r.text());
            } else {
                assert_eq!((r.get("errno").as_str(), r.get("reply").as_str()), ("0", PEER_REPLY), "{}", r.text());
            }
            // The supervisor, for a static program: TCP tunnelled; a datagram refused; TCP
            // Fast Open answered as a kernel with client TFO off does (EOPNOTSUPP).
            let r = m.attack(Via::Launcher, &[s(&st), mode, dest, port]).run().expect_clean();
            match mode {
                "tcp24" => assert_eq!((r.get("errno").as_str(), r.get("reply").as_str()), ("0", PEER_REPLY), "{}", r.text()),
                "udp24" => assert_eq!(r.get("errno"), "ENETUNREACH", "{}", r.text()),
                _ => assert_eq!(r.get("errno"), "EOPNOTSUPP", "{}", r.text()),
            }
        }
    }
}

// ---------------------------------------------------------------- 2. family 0

#[test]
fn item02_family_zero_udp_sendto_sendmsg_raw_icmp_v4_v6() {
    let Some(m) = Meter::fresh() else { return };
    let (Some(dy), Some(st)) = (probe(), probe_static()) else { return };
    for (mode, ip, port) in [("udp0", "100.64.0.2", "9"), ("udpmsg0", "100.64.0.2", "9"), ("raw0", "100.64.0.2", "0"), ("raw6_0", "fd7a:115c:a1e0::2", "0")] {
        m.attack(Via::Plain, &[s(&dy), mode, ip, port]).net_raw().run().expect_leak();
        for (via, prog) in [(Via::Preload, &dy), (Via::Launcher, &st)] {
            let r = m.attack(via, &[s(prog), mode, ip, port]).net_raw().run().expect_clean();
            assert_eq!(r.get("errno"), "ENETUNREACH", "{}", r.text());
        }
    }
}

// ---------------------------------------------------------------- 3. sendmmsg

#[test]
fn item03_sendmmsg_datagram_to_tailnet() {
    let Some(m) = Meter::fresh() else { return };
    let (Some(dy), Some(st)) = (probe(), probe_static()) else { return };
    for mode in ["mmsg", "mmsg2"] {
        m.attack(Via::Plain, &[s(&dy), mode, "100.64.0.2", "9"]).run().expect_leak();
        // The library sends what comes before the first tailnet message (a partial batch, as
        // the kernel reports one) and refuses a batch that starts with one.
        let r = m.attack(Via::Preload, &[s(&dy), mode, "100.64.0.2", "9"]).run().expect_clean();
        if mode == "mmsg" {
            assert_eq!((r.get("sent").as_str(), r.get("errno").as_str()), ("-1", "ENETUNREACH"), "{}", r.text());
        } else {
            assert_eq!(r.get("sent"), "1", "{}", r.text());
        }
        // The supervisor, for a static program: musl's sendmmsg (a loop of sendmsg on 64-bit)
        // stops at the refused message; the sendmmsg syscall itself is refused whole.
        let r = m.attack(Via::Launcher, &[s(&st), mode, "100.64.0.2", "9"]).run().expect_clean();
        let want = if mode == "mmsg" { ("-1", "ENETUNREACH") } else { ("1", "0") };
        assert_eq!((r.get("sent").as_str(), r.get("errno").as_str()), want, "{}", r.text());
        let r = m.attack(Via::Launcher, &[s(&st), &format!("s{mode}"), "100.64.0.2", "9"]).run().expect_clean();
        assert_eq!((r.get("sent").as_str(), r.get("errno").as_str()), ("-1", "ENETUNREACH"), "{}", r.text());
    }
    // Control for the raw syscall form too.
    m.attack(Via::Plain, &[s(&st), "smmsg2", "100.64.0.2", "9"]).run().expect_leak();
}

// ---------------------------------------------------------------- 4. io_uring

#[test]
fn item04_io_uring_connect_is_enosys_under_the_launcher() {
    let Some(m) = Meter::fresh() else { return };
    if !std::path::Path::new("/usr/include/liburing.h").exists() {
        assert!(std::env::var("TSPROXY_REQUIRE_NETNS").as_deref() != Ok("1"), "liburing-dev is required (TSPROXY_REQUIRE_NETNS=1)");
        eprintln!("item04 skipped: liburing-dev not installed");
        return;
    }
    let Some(u) = build("a_uring", "a_uring", false, &["-luring"]) else { return };
    let c = m.attack(Via::Plain, &[s(&u), "100.64.0.2", "8080"]).run().expect_leak();
    assert_eq!(c.get("setup"), "0", "{}", c.text());
    let r = m.attack(Via::Launcher, &[s(&u), "100.64.0.2", "8080"]).run().expect_clean();
    assert_eq!(r.get("setup"), "ENOSYS", "{}", r.text());
    // Bare LD_PRELOAD cannot see io_uring at all (README, Limitations): recorded, not asserted.
    let r = m.attack(Via::Preload, &[s(&u), "100.64.0.2", "8080"]).run();
    eprintln!("[adv] item04 bare LD_PRELOAD (documented limit, not asserted): leaked={} {}", r.leaked, r.get("connect"));
}

// ---------------------------------------------------------------- 5. int 0x80

#[test]
fn item05_i386_int80_connect_is_refused_under_the_launcher() {
    let Some(m) = Meter::fresh() else { return };
    let (Some(dy), Some(st)) = (probe(), probe_static()) else { return };
    m.attack(Via::Plain, &[s(&st), "int80", "100.64.0.2", "8080"]).run().expect_leak();
    for prog in [&st, &dy] {
        let r = m.attack(Via::Launcher, &[s(prog), "int80", "100.64.0.2", "8080"]).run().expect_clean();
        assert_eq!(r.get("errno"), "ENOSYS", "{}", r.text());
    }
}

// ---------------------------------------------------------------- 6. setcap with the supervisor off

#[test]
fn item06_setcap_program_with_the_supervisor_off_is_refused_never_run_unprotected() {
    let Some(m) = Meter::fresh() else { return };
    let Some(dy) = probe() else { return };
    // A file-capability copy of the probe (as `ping` is on Debian): the loader drops LD_PRELOAD
    // for it, so nothing but the supervisor could intercept it.
    let capped = dy.with_file_name(format!("a_probe-setcap-{}", m.uid));
    std::fs::copy(&dy, &capped).unwrap();
    let ok = std::process::Command::new("setcap").arg("cap_net_raw+ep").arg(&capped).status().is_ok_and(|st| st.success());
    if !ok {
        let _ = std::fs::remove_file(&capped);
        assert!(std::env::var("TSPROXY_REQUIRE_NETNS").as_deref() != Ok("1"), "setcap (libcap2-bin) is required");
        return;
    }
    let argv = [s(&capped), "raw0", "100.64.0.2", "0"];
    // Control: the program alone, its capability from the file, pings the tailnet directly.
    m.attack(Via::Plain, &argv).run().expect_leak();
    // The supervisor off: the launcher refuses to start it (exit 126) rather than run it
    // unprotected.
    let r = m.attack(Via::Launcher, &argv).launcher_args(&["--supervisor=off"]).run().expect_clean();
    assert_eq!(r.run.code(), Some(126), "{}", r.text());
    // The supervisor on: no_new_privs, so no capability (the raw socket is refused) and the
    // supervisor stands between it and the tailnet anyway.
    let r = m.attack(Via::Launcher, &argv).run().expect_clean();
    assert!(matches!(r.get("errno").as_str(), "socket:EPERM" | "ENETUNREACH"), "{}", r.text());
    let _ = std::fs::remove_file(&capped);
}

// ---------------------------------------------------------------- 7. a proxy as its own upstream

#[test]
fn item07_a_dynamic_proxy_as_its_own_upstream_never_loops_and_never_dials_directly() {
    let Some(m) = Meter::fresh() else { return };
    let port = (20000 + m.uid % 20000).to_string();
    let curl = || {
        std::process::Command::new("ip")
            .args(["netns", "exec", "tsp-ws", "curl", "-sS", "--max-time", "5", "--socks5", &format!("127.0.0.1:{port}"), "http://100.64.0.2:8080/"])
            .output()
            .unwrap()
    };
    let start = |via: Via| {
        let r = m.attack(via, &["microsocks", "-i", "127.0.0.1", "-p", &port]).env("TSPROXY_PROXY", &format!("socks5://127.0.0.1:{port}")).secs(30).spawn();
        let t0 = std::time::Instant::now();
        while !std::process::Command::new("ip")
            .args(["netns", "exec", "tsp-ws", "bash", "-c", &format!("exec 3<>/dev/tcp/127.0.0.1/{port}")])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|st| st.success())
        {
            assert!(t0.elapsed() < std::time::Duration::from_secs(5), "microsocks did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        r
    };
    // Control: microsocks alone dials the tailnet itself, as this uid: the meter sees it.
    let ms = start(Via::Plain);
    let l0 = m.leak();
    let _ = curl();
    ms.stop();
    assert!(m.leak() > l0, "control: microsocks alone dials 100.64.0.2 directly");
    // With the library and itself as the upstream: its own dial is refused at once — no loop
    // (threads stay few), no direct packet.
    let ms = start(Via::Preload);
    let pid = ms.pid();
    let (l0, d0) = (m.leak(), m.dns());
    let t0 = std::time::Instant::now();
    let out = curl();
    let took = t0.elapsed();
    // The process is microsocks itself (ip netns exec, setpriv and env each exec the next).
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0);
    let run = ms.stop();
    assert!(!out.status.success(), "the request cannot succeed: {}", String::from_utf8_lossy(&out.stdout));
    assert!(took < std::time::Duration::from_secs(3), "refused promptly, not looped: {took:?}");
    assert!(threads <= 8, "microsocks fanned out: {threads} threads");
    assert_eq!((m.leak() - l0, m.dns() - d0), (0, 0), "a direct packet or a name: {}", run.text());
    eprintln!("[adv] item07: refused in {took:?}, {threads} threads");
}

// ---------------------------------------------------------------- 9. res_query, getaddrinfo_a

#[test]
fn item09_res_query_res_search_getaddrinfo_a_never_send_tailnet_names() {
    let Some(m) = Meter::fresh() else { return };
    let Some(p) = build("a_resolv", "a_resolv", false, &["-lresolv", "-lanl"]) else { return };
    for (api, name) in [("res_query", "peer-1.tail1234.ts.net"), ("res_search", "peer-1"), ("srv", "_http._tcp.peer-1.tail1234.ts.net"), ("gai_a", "peer-1")] {
        // Control: without tsproxy the name goes to the system resolver.
        m.attack(Via::Plain, &[s(&p), api, name]).secs(10).run().expect_dns();
        let r = m.attack(Via::Preload, &[s(&p), api, name]).run().expect_clean();
        match api {
            "gai_a" => assert_eq!((r.get("gai").as_str(), r.get("placeholder").as_str()), ("0", "1"), "{}", r.text()),
            "srv" => assert_eq!(r.get("ret"), "-1", "SERVFAIL, never asked: {}", r.text()),
            _ => assert!(r.get("ret").parse::<i32>().unwrap_or(-1) > 0, "a synthesized answer: {}", r.text()),
        }
    }
}

// ---------------------------------------------------------------- 10. static musl lookups

#[test]
fn item10_static_musl_lookups_under_the_launcher_never_reach_the_resolver() {
    let Some(m) = Meter::fresh() else { return };
    let Some(ns) = build("a_names", "a_names-musl", true, &[]) else { return };
    for name in ["peer-1", "peer-1.tail1234.ts.net"] {
        // Control: musl's resolver asks the system resolver with sendto (no connect).
        m.attack(Via::Plain, &[s(&ns), "gai", name, "8080"]).secs(15).run().expect_dns();
        // Under the supervisor the questions go to its responder instead (their destination
        // rewritten in the program's memory): the lookup gets the placeholder, and the connect
        // to it reaches the peer through the proxy.
        let r = m.attack(Via::Launcher, &[s(&ns), "gai", name, "8080"]).secs(15).run().expect_clean();
        assert_eq!((r.get("gai").as_str(), r.get("placeholder").as_str(), r.get("gethostbyname").as_str()), ("ok", "1", "placeholder"), "{name}: {}", r.text());
        assert!(r.get("reply").contains("hello from peer"), "{name}: {}", r.text());
    }
}

// ---------------------------------------------------------------- 8. name table

#[test]
fn item08_16400_distinct_tailnet_names_never_reach_the_resolver() {
    let Some(m) = Meter::fresh() else { return };
    let Some(n) = build("a_names", "a_names", false, &[]) else { return };
    // Control: unknown names, asked without tsproxy, go to the system resolver.
    m.attack(Via::Plain, &[s(&n), "many", "3", "advctl%d"]).run().expect_dns();
    for fmt in ["advn%d", "advh%d.tail1234.ts.net"] {
        let r = m.attack(Via::Preload, &[s(&n), "many", "16400", fmt]).secs(60).run().expect_clean();
        let k = r.kv();
        let num = |key: &str| k.get(key).and_then(|v| v.parse::<u32>().ok()).unwrap_or_else(|| panic!("{key}: {}", r.text()));
        // Every name answered with a placeholder, or EAI_AGAIN past the table's capacity;
        // never an answer from anywhere else.
        assert_eq!((num("ok") + num("again"), num("other"), num("placeholder")), (16400, 0, num("ok")), "{}", r.text());
        eprintln!("[adv] item08 {fmt}: ok={} again={} in {} ms", num("ok"), num("again"), num("ms"));
    }
}

// ---------------------------------------------------------------- 11. setuid + ld.so.preload

/// A chroot with the minimum a dynamic program needs (its loader and libraries, those of
/// libtsproxy.so), the library in /etc/ld.so.preload, a root-only /root/.bashrc to aim at,
/// and a_setuid twice: /bin/a_setuid (root, mode 4755) and /bin/a_plain (0755).
fn setuid_chroot(prog: &std::path::Path, uid: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = common::target_dir().join(format!("adv-chroot-{uid}"));
    let _ = std::fs::remove_dir_all(&dir);
    let lib = lib();
    let mut files: Vec<PathBuf> = Vec::new();
    for bin in [prog, lib.as_path()] {
        let out = std::process::Command::new("ldd").arg(bin).output().unwrap();
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
            let p = l.split("=>").last().unwrap_or("").split_whitespace().next().unwrap_or("");
            if p.starts_with('/') {
                files.push(PathBuf::from(p));
            }
        }
    }
    for f in &files {
        let dst = dir.join(f.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(f, &dst).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
    for d in ["bin", "etc", "lib", "root", "tmp"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy(&lib, dir.join("lib/libtsproxy.so")).unwrap();
    std::fs::copy(prog, dir.join("bin/a_setuid")).unwrap();
    std::fs::copy(prog, dir.join("bin/a_plain")).unwrap();
    std::fs::set_permissions(dir.join("bin/a_setuid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::set_permissions(dir.join("bin/a_plain"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dir.join("root"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(dir.join("root/.bashrc"), "# root's shell start-up\n").unwrap();
    std::fs::write(dir.join("etc/ld.so.preload"), "/lib/libtsproxy.so\n").unwrap();
    std::fs::write(dir.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    std::fs::write(dir.join("etc/nsswitch.conf"), "hosts: files dns\n").unwrap();
    // The default proxy (microsocks on 1080) runs as the proxies' user: the chroot's system
    // file (root's, 0644: the only one a secure-execution process reads) trusts it.
    std::fs::write(dir.join("etc/tsproxy.conf"), format!("TSPROXY_PROXY_OWNER={}\n", px_uid())).unwrap();
    std::fs::set_permissions(dir.join("etc/tsproxy.conf"), std::fs::Permissions::from_mode(0o644)).unwrap();
    // Nothing answers on the chroot's resolver (loopback: refused at once, on no meter).
    std::fs::write(dir.join("etc/resolv.conf"), "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n").unwrap();
    dir
}

/// The uid of topology.sh's proxies (tsproxy-px).
fn px_uid() -> u32 {
    let out = std::process::Command::new("id").args(["-u", "tsproxy-px"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("topology.sh creates tsproxy-px")
}

/// Every file under `dir` (relative paths).
fn tree(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn item11_setuid_program_with_preload_ignores_a_hostile_environment() {
    let Some(m) = Meter::fresh() else { return };
    let Some(prog) = build("a_setuid", "a_setuid", false, &[]) else { return };
    let dir = setuid_chroot(&prog, m.uid);
    let chroot = String::from_utf8(std::process::Command::new("sh").args(["-c", "command -v chroot"]).output().unwrap().stdout).unwrap();
    let hostile_name = "evil\nTSPROXY-INJECTED echo pwned";
    // Every variable that could change what tsproxy does, aimed: the log at a file of the
    // caller's choice, tailnet traffic to a proxy of the caller's choice, names to the resolver.
    let hostile = |log_file: &str| -> Vec<(String, String)> {
        [
            ("TSPROXY_LOG", "debug"),
            ("TSPROXY_LOG_FILE", log_file),
            ("TSPROXY_PROXY", "socks5://127.0.0.1:1999"),
            ("ALL_PROXY", "socks5://127.0.0.1:1999"),
            ("TSPROXY_ROUTES", "all"),
            ("TSPROXY_SHORT_NAMES", "off"),
            ("NO_PROXY", "peer-1"),
            ("TSPROXY_CONNECT_TIMEOUT", "0.001"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    let run = |as_user: bool, bin: &str, env: &[(String, String)]| {
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", "tsp-ws", "env", "-i", "PATH=/bin"]);
        for (k, v) in env {
            c.arg(format!("{k}={v}"));
        }
        c.arg(chroot.trim());
        if as_user {
            c.arg(format!("--userspec={0}:{0}", m.uid));
        }
        c.arg(&dir).arg(bin).args([hostile_name, "peer-1", "8080"]);
        bounded(c, 20)
    };
    // Controls: the same program, not setuid and run by root (no secure execution), obeys the
    // environment: with the whole hostile set the tailnet name is not reached; with the log and
    // proxy variables alone the log file appears and the bogus proxy refuses.
    let c = run(false, "/bin/a_plain", &hostile("/tmp/control0.log"));
    assert_eq!(c.kv().get("secure").map(String::as_str), Some("0"), "control: {}", c.text());
    assert!(!c.stdout.contains(PEER_REPLY), "control: the environment changes the outcome: {}", c.text());
    let _ = std::fs::remove_file(dir.join("tmp/control0.log"));
    let c = run(false, "/bin/a_plain", &hostile("/tmp/control.log")[..3]);
    let k = c.kv();
    assert_eq!(k.get("connect").map(String::as_str), Some("111"), "control: the bogus proxy refuses: {}", c.text());
    let log = std::fs::read_to_string(dir.join("tmp/control.log")).unwrap_or_default();
    assert!(log.contains("peer-1"), "control: the environment's log file got the debug lines: {log:?}");
    // (Asserted last, so that a build which fails it also shows what the setuid runs do.)
    let raw_newline = log.contains("\nTSPROXY-INJECTED");
    eprintln!("[adv] item11 control (not setuid, root): log file {} bytes, connect=ECONNREFUSED via the bogus proxy", log.len());
    std::fs::remove_file(dir.join("tmp/control.log")).unwrap();
    // The controls (root, not secure) made root's name registry in the chroot's /tmp, as any
    // process of root may; the setuid runs must neither create nor change any file.
    let _ = std::fs::remove_dir_all(dir.join("tmp/tsproxy-0"));
    let before = tree(&dir);
    // The attack: an unprivileged uid runs the setuid-root program with the same environment,
    // aiming the log at root's files.
    for target in ["/root/.bashrc", "/etc/created-by-tsproxy", "/root/new", "/tmp/user.log"] {
        let r = run(true, "/bin/a_setuid", &hostile(target));
        let k = r.kv();
        assert_eq!((k.get("secure").map(String::as_str), k.get("euid").map(String::as_str)), (Some("1"), Some("0")), "{}", r.text());
        // The defaults applied: the tailnet name went through the default proxy (1080).
        assert_eq!(k.get("reply").map(String::as_str), Some(PEER_REPLY), "{}", r.text());
        assert!(!r.stderr.contains("TSPROXY-INJECTED") && !r.stderr.contains("debug"), "{}", r.text());
        assert_eq!(std::fs::read_to_string(dir.join("root/.bashrc")).unwrap(), "# root's shell start-up\n");
        assert_eq!(tree(&dir), before, "a file appeared: {}", r.text());
        eprintln!("[adv] item11 uid {} setuid-root, TSPROXY_LOG_FILE={target}: no file written, default proxy used", m.uid);
    }
    assert_eq!((m.leak(), m.dns()), (0, 0));
    assert!(!raw_newline, "a raw newline of a name reached the log: {log:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------- 12. names with CR/LF/NUL/space

/// Basic credentials of topology.sh's tinyproxy (tsuser:tspass).
const TINY_AUTH: &str = "dHN1c2VyOnRzcGFzcw==";
const TINY: &str = "http://tsuser:tspass@127.0.0.1:3128";
/// topology.sh's dante (user/password).
const DANTE: &str = "socks5://tsproxy-px:px-pass-4711@127.0.0.1:1081";

/// Every stderr line is a tsproxy log line: nothing of a name started a line of its own.
#[track_caller]
fn log_lines_are_whole(o: &Outcome) {
    assert!(!o.run.stderr.contains('\r'), "raw CR in the log: {}", o.text());
    for l in o.run.stderr.lines() {
        assert!(l.starts_with("tsproxy"), "a log line that tsproxy did not start: {l:?}\n{}", o.text());
    }
}

/// Python: a proxy that records what it is asked and refuses everything. SOCKS5 (no auth or
/// user/password, any) prints `socks=<repr of the ATYP 3 name or address bytes>`; anything else
/// is taken as HTTP and prints `http=<repr of the head>`. First line: `port=N`.
const RECORDER: &str = r#"
import socket, sys, threading
l = socket.socket()
l.bind(('127.0.0.1', 0)); l.listen(64)
print('port=%d' % l.getsockname()[1], flush=True)
out = threading.Lock()
def say(s):
    with out:
        sys.stdout.write(s + '\n'); sys.stdout.flush()
def need(c, n):
    b = b''
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d: raise EOFError
        b += d
    return b
def serve(c):
    c.settimeout(3)
    try:
        if c.recv(1, socket.MSG_PEEK) == b'\x05':
            v, n = need(c, 2)
            methods = need(c, n)
            if 0 in methods:
                c.sendall(b'\x05\x00')
            else:
                c.sendall(b'\x05\x02')
                need(c, 1); need(c, need(c, 1)[0]); need(c, need(c, 1)[0])
                c.sendall(b'\x01\x00')
            atyp = need(c, 4)[3]
            dest = need(c, need(c, 1)[0]) if atyp == 3 else need(c, 4 if atyp == 1 else 16)
            need(c, 2)
            say('socks=%r' % dest)
            c.sendall(b'\x05\x05\x00\x01' + bytes(6))
        else:
            head = b''
            while b'\r\n\r\n' not in head and len(head) < 8192:
                d = c.recv(4096)
                if not d: break
                head += d
            say('http=%r' % head)
            c.sendall(b'HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n')
    except Exception as e:
        say('error=%r' % e)
    c.close()
while True:
    c, _ = l.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

#[test]
fn item12_names_with_control_characters_go_to_libc_untouched() {
    let Some(m) = Meter::fresh() else { return };
    let Some(rec_uid) = Meter::fresh() else { return };
    let (Some(n), Some(ns)) = (build("a_names", "a_names", false, &[]), build("a_names", "a_names-musl", true, &[])) else { return };
    let mark = format!("advmark{}", m.uid);
    let mut rec = rec_uid.attack(Via::Plain, &["python3", "-c", RECORDER]).secs(120).spawn();
    let port = rec.line().strip_prefix("port=").map(str::to_string).unwrap_or_else(|| panic!("recorder did not start"));
    let (rec_socks, rec_http) = (format!("socks5://127.0.0.1:{port}"), format!("http://127.0.0.1:{port}"));
    // The recorder runs as a uid of its own: trusted as the proxy's owner (with the proxies'
    // user, whom the workspace's system file names and this variable replaces).
    let owner = format!("{},{}", rec_uid.uid, px_uid());

    // Control 1: the request-line injection of the issue, written raw to tinyproxy: CONNECT for
    // port 4001 (where nothing listens) taken as CONNECT peer-1:8080, answered by the peer.
    let inject = format!("peer-1:8080 HTTP/1.1\\r\\nX-Adv: {mark}\\r\\nX-Pad: x");
    let c = m.attack(Via::Plain, &[s(&n), "http", &inject, "4001", "3128", TINY_AUTH]).run();
    assert!(c.get("reply").contains("hello from peer"), "control: the injection works against tinyproxy: {}", c.text());
    // Control 2: the recorder sees marked names written raw, by SOCKS5 and by HTTP CONNECT.
    m.attack(Via::Plain, &[s(&n), "socks", &format!("{mark}-ctl\\r\\nx"), "8080", &port]).run();
    m.attack(Via::Plain, &[s(&n), "http", &format!("{mark}-ctl\\r\\nX: y"), "4001", &port, "-"]).run();
    // Control 3: through tsproxy a tailnet name does reach the recorder, and the debug log
    // names names (so a clean log below means nothing was written raw).
    for proxy in [&rec_socks, &rec_http] {
        let c = m
            .attack(Via::Launcher, &[s(&n), "gai", "peer-1", "8080"])
            .launcher_args(&["--supervisor=on", "--proxy", proxy])
            .env("TSPROXY_LOG", "debug")
            .env("TSPROXY_PROXY_OWNER", &owner)
            .run()
            .expect_clean();
        assert!(c.get("placeholder") == "1" && c.run.stderr.contains("peer-1"), "control: {}", c.text());
    }

    let names = [
        inject.clone(),
        format!("peer-1\\r\\nX-Adv: {mark}"),
        format!("peer-1\\n{mark}"),
        format!("peer 1 {mark}"),
        format!("peer-1\\t{mark}"),
        format!("{mark}\\x01peer"),
        format!("{mark}\\x7f.ts.net"),
        format!("{mark} x.tail1234.ts.net"),
        format!("{mark}\\r\\n.tail1234.ts.net"),
        format!("{}.{mark}.ts.net", "a".repeat(64)),
        format!("{}{mark}.ts.net", "abcdefghi.".repeat(25)),
    ];
    for name in &names {
        for (via, proxy) in
            [(Via::Launcher, TINY), (Via::Launcher, &rec_socks), (Via::Launcher, &rec_http), (Via::Preload, &rec_socks), (Via::Preload, &rec_http)]
        {
            let a = m.attack(via, &[s(&n), "gai", name, "4001"]).env("TSPROXY_LOG", "debug").env("TSPROXY_PROXY_OWNER", &owner);
            let a = if via == Via::Launcher { a.launcher_args(&["--supervisor=on", "--proxy", proxy]) } else { a.env("TSPROXY_PROXY", proxy) };
            // libc may ask the system resolver about such a name (it is no tailnet name).
            let r = a.run().expect_no_leak();
            assert!(r.get("placeholder") != "1" && r.get("gethostbyname") != "placeholder", "{name:?} became a tailnet name: {}", r.text());
            assert!(!r.run.stdout.contains("hello from peer"), "{name:?}: injected: {}", r.text());
            log_lines_are_whole(&r);
        }
    }
    // The supervisor's DNS responder (a static program's own queries; labels of any bytes):
    // only valid host names get a placeholder.
    let r = m.attack(Via::Launcher, &[s(&ns), "dns53", "10.200.0.2", &format!("{mark}.ts.net")]).run().expect_clean();
    assert!(r.get("answer").starts_with("240."), "control: a valid tailnet name gets a placeholder: {}", r.text());
    for label in [format!("{mark}\\x00x.ts.net"), format!("{mark} x.ts.net"), format!("{mark}\\r\\nx.ts.net"), format!("{}.ts.net", "b".repeat(64))] {
        // Never forwarded either: a name under `.ts.net` with bytes no host name has is refused
        // (SERVFAIL), and a section the responder cannot read (the 64-octet label) gets FORMERR.
        let r = m.attack(Via::Launcher, &[s(&ns), "dns53", "10.200.0.2", &label]).env("TSPROXY_LOG", "debug").run().expect_clean();
        assert!(!r.get("answer").starts_with("240."), "{label:?}: {}", r.text());
        log_lines_are_whole(&r);
    }

    let seen = rec.stop().stdout;
    let lines: Vec<&str> = seen.lines().collect();
    let ctl = format!("{mark}-ctl");
    assert_eq!(lines.iter().filter(|l| l.contains(&ctl)).count(), 2, "control: the recorder saw both raw requests: {seen}");
    assert!(lines.iter().any(|l| l.starts_with("socks=b'peer-1'")) && lines.iter().any(|l| l.starts_with("http=b'CONNECT peer-1:8080")), "control: {seen}");
    let reached: Vec<&&str> = lines.iter().filter(|l| l.contains(&mark) && !l.contains(&ctl)).collect();
    assert!(reached.is_empty(), "names reached the proxy: {reached:?}");
    eprintln!("[adv] item12 controls: raw injection via tinyproxy reached the peer; the recorder saw 2 raw marked requests and tsproxy's peer-1; {} names x 5 ways: none reached a proxy, no raw log line", names.len());
}

// ---------------------------------------------------------------- 13. DNS responder flood

/// Python: send N distinct A queries to ADDR (with the key when given), count the answers.
const FLOOD: &str = r#"
import socket, struct, sys, time
host, port = sys.argv[1].rsplit(':', 1)
key, n = sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
answers = 0
def drain():
    global answers
    while True:
        try:
            s.recv(4096); answers += 1
        except BlockingIOError:
            return
for i in range(n):
    q = struct.pack('>HHHHHH', i & 0xffff, 0x0100, 1, 0, 0, 0)
    for label in (b'flood%d' % i, b'tail1234', b'ts', b'net'):
        q += bytes([len(label)]) + label
    q += b'\0' + struct.pack('>HH', 1, 1)
    if key:
        q = b'TSK1' + key.encode() + q
    while True:
        try:
            s.sendto(q, (host, int(port))); break
        except BlockingIOError:
            time.sleep(0.001)
    if i % 200 == 199:
        time.sleep(0.002); drain()
end = time.time() + 1
while time.time() < end:
    drain(); time.sleep(0.05)
print('sent=%d' % n); print('answers=%d' % answers)
"#;

#[test]
fn item13_another_uid_flooding_the_dns_responder_changes_nothing_for_the_tree() {
    let Some(tree) = Meter::fresh() else { return };
    let Some(outsider) = Meter::fresh() else { return };
    let Some(go) = common::go_client() else { return };
    let go = s(&go).to_string();
    let script = format!(
        "echo \"$TSPROXY_SUPERVISOR_DNS $TSPROXY_SUPERVISOR_DNS_KEY\"; read go_on; for u in http://peer-1:8080/ http://peer-1.tail1234.ts.net:8080/ http://peer6:8080/ http://peer6.tail1234.ts.net:8080/; do {go} $u 5; done"
    );
    let mut t = tree.attack(Via::Launcher, &["sh", "-c", &script]).secs(60).spawn();
    let line = t.line();
    let mut it = line.split_whitespace();
    let (addr, key) = (it.next().unwrap_or("").to_string(), it.next().unwrap_or("").to_string());
    assert!(addr.contains(':') && !key.is_empty(), "responder address and key: {line:?}");
    // Control: a query the responder accepts (with the tree's key) is answered: the flood's
    // queries are well-formed and reach it.
    let c = outsider.attack(Via::Plain, &["python3", "-c", FLOOD, &addr, &key, "1"]).run();
    assert_eq!(c.get("answers"), "1", "control: {}", c.text());
    // The attack: another uid, 16,500 distinct names, no key.
    let f = outsider.attack(Via::Plain, &["python3", "-c", FLOOD, &addr, "", "16500"]).secs(60).run().expect_clean();
    assert_eq!((f.get("sent").as_str(), f.get("answers").as_str()), ("16500", "0"), "an outsider was answered: {}", f.text());
    let (l0, d0) = (tree.leak(), tree.dns());
    t.send("go\n");
    let r = t.finish();
    assert_eq!(r.stdout.lines().collect::<Vec<_>>(), vec!["hello from peer"; 4], "the tree's static Go client after the flood: {}", r.text());
    assert_eq!((tree.leak() - l0, tree.dns() - d0), (0, 0), "the tree's lookups reached the resolver or leaked");
    eprintln!("[adv] item13 uid {} flooded 16500 names, 0 answers; tree uid {} resolved 4 names after it, meters 0", outsider.uid, tree.uid);
}

// ---------------------------------------------------------------- 14. passwords

#[test]
fn item14_passwords_never_in_config_errors_or_logs() {
    let Some(m) = Meter::fresh() else { return };
    let Some(p) = probe() else { return };
    let bad = [
        "socks5://alice:Sekr1t",
        "alice:Sekr1t@127.0.0.1:1081",
        "socks5://alice:pa,Sekr1t@127.0.0.1:1081",
        "http://alice:Sekr1t@127.0.0.1:3128,socks5://bob:Sekr1t@[::1",
    ];
    for v in bad {
        // The launcher: exit 2, one line that names the value (the control: values are shown,
        // only the password is hidden).
        let r = m.attack(Via::Launcher, &["true"]).launcher_args(&["--proxy", v]).run().expect_clean();
        assert!(!r.run.stderr.contains("Sekr1t") && !r.run.stdout.contains("Sekr1t"), "{}", r.text());
        assert_eq!(r.run.code(), Some(2), "{}", r.text());
        assert!(r.run.stderr.contains("alice") && r.run.stderr.contains("--proxy"), "the error names the value: {}", r.text());
        for var in ["TSPROXY_PROXY", "ALL_PROXY"] {
            let r = m.attack(Via::Launcher, &["true"]).launcher_args(&[]).env(var, v).run().expect_clean();
            assert!(!r.run.stderr.contains("Sekr1t"), "{}", r.text());
            if var == "TSPROXY_PROXY" {
                assert_eq!(r.run.code(), Some(2), "{}", r.text());
            }
        }
        // The library alone: fails closed, logs the value without the password (stderr and a
        // log file).
        let logf = format!("/tmp/adv-{}-pw.log", m.uid);
        let _ = std::fs::remove_file(&logf);
        for file in [None, Some(logf.as_str())] {
            let a = m.attack(Via::Preload, &[s(&p), "tcp24", "::ffff:100.64.0.2", "8080"]).env("TSPROXY_PROXY", v).env("TSPROXY_LOG", "debug");
            let a = match file {
                Some(f) => a.env("TSPROXY_LOG_FILE", f),
                None => a,
            };
            let r = a.run().expect_clean();
            assert_eq!(r.get("errno"), "ECONNREFUSED", "{}", r.text());
            let logged = format!("{}{}", r.run.stderr, file.map(|f| std::fs::read_to_string(f).unwrap_or_default()).unwrap_or_default());
            assert!(!logged.contains("Sekr1t"), "{logged}");
            assert!(logged.contains("TSPROXY_PROXY") && logged.contains("alice"), "the error names the value: {logged}");
        }
        let _ = std::fs::remove_file(&logf);
    }
    eprintln!("[adv] item14 config errors: launcher and library name the value, never the password");
}

/// ps and /proc of the supervisor and the tree while it runs with a password, as another uid.
#[test]
fn item14_password_never_in_ps_or_another_uids_proc() {
    let Some(m) = Meter::fresh() else { return };
    let Some(other) = Meter::fresh() else { return };
    let Some(n) = build("a_names", "a_names", false, &[]) else { return };
    // A unique command line in the tree, for ps to find: sleep 3.<uid> (seconds).
    let marker = format!("3.{}", m.uid);
    let mut t = m
        .attack(Via::Launcher, &["sh", "-c", &format!("{} gai peer-1 8080; echo up; read x; sleep {marker}", s(&n))])
        .launcher_args(&["--supervisor=on", "--proxy", DANTE])
        .secs(40)
        .spawn();
    let mut first = Vec::new();
    loop {
        let l = t.line();
        let end = l == "up" || l.is_empty();
        first.push(l);
        if end {
            break;
        }
    }
    assert!(first.iter().any(|l| l.starts_with("reply=HTTP/1.0 200 OK")), "through dante with the password: {first:?}");
    t.send("go\n");
    // As the other uid: every command line (ps), and which environments it can read.
    let spy = r#"
import os, sys
secret, marker = sys.argv[1], sys.argv[2]
seen_tree = seen_sup = 0
for pid in filter(str.isdigit, os.listdir('/proc')):
    if int(pid) == os.getpid():
        continue
    try:
        cmd = open('/proc/%s/cmdline' % pid, 'rb').read()
    except OSError:
        continue
    if secret.encode() in cmd:
        print('secret_in_cmdline=' + pid)
    if marker.encode() in cmd or cmd.startswith(b'tsproxy-supervisor'):
        if marker.encode() in cmd: seen_tree += 1
        else: seen_sup += 1
        try:
            env = open('/proc/%s/environ' % pid, 'rb').read()
            print('environ_readable=%s secret=%d' % (pid, secret.encode() in env))
        except OSError as e:
            print('environ=%s %s' % (pid, e.strerror))
print('seen_tree=%d' % seen_tree); print('seen_sup=%d' % seen_sup)
"#;
    std::thread::sleep(std::time::Duration::from_millis(300));
    let ps = other.attack(Via::Plain, &["ps", "-eo", "pid,user,args"]).run().expect_clean();
    let spied = other.attack(Via::Plain, &["python3", "-c", spy, "px-pass-4711", &marker]).run().expect_clean();
    let r = t.finish();
    let pw: Vec<&str> = ps.run.stdout.lines().filter(|l| l.contains("px-pass-4711")).collect();
    assert!(pw.is_empty(), "the password is in ps: {pw:?}");
    assert!(!spied.run.stdout.contains("secret_in_cmdline") && !spied.run.stdout.contains("environ_readable"), "{}", spied.text());
    // Controls: the other uid does see the tree and the supervisor.
    assert!(ps.run.stdout.contains(&format!("sleep {marker}")), "control: ps shows the tree: {}", ps.text());
    assert!(ps.run.stdout.contains("tsproxy-supervisor"), "control: ps shows the supervisor: {}", ps.text());
    let k = spied.kv();
    assert!(k.get("seen_tree").is_some_and(|v| v != "0") && k.get("seen_sup").is_some_and(|v| v != "0"), "control: {}", spied.text());
    assert!(!r.timed_out, "{}", r.text());
    eprintln!("[adv] item14 ps as uid {}: tree and supervisor visible, no password; their environ unreadable", other.uid);
}

// ---------------------------------------------------------------- 15. numeric host forms

#[test]
fn item15_numeric_host_forms_go_direct_never_to_the_proxy() {
    let Some(m) = Meter::fresh() else { return };
    let (Some(p), Some(n)) = (probe(), build("a_names", "a_names", false, &[])) else { return };
    let forms = ["0", "2130706433", "0x7f000001", "127.1", "0177.0.0.1", "127.0.0.1"];
    let argv: Vec<&str> = [s(&p), "numeric", "0"].into_iter().chain(forms).collect();
    // Control 1: the meter counts this uid's lookups of a name.
    m.attack(Via::Plain, &[s(&n), "gai", "advnumctl", "80"]).run().expect_dns();
    // Control 2: the probe tells a proxied connection from a direct one (with 127.0.0.1 made
    // a tailnet route, every form goes through the proxy).
    let c = m.attack(Via::Launcher, &argv).env("TSPROXY_ROUTES", "127.0.0.1/32").run().expect_clean();
    assert_eq!(c.get("127.0.0.1"), "proxied", "control: {}", c.text());
    for via in [Via::Launcher, Via::Preload] {
        let r = m.attack(via, &argv).run().expect_clean();
        for f in forms {
            assert_eq!(r.get(f), "direct", "{f}: {}", r.text());
        }
    }
}

// ---------------------------------------------------------------- 16. a process the supervisor may not read

/// The supervisor reads a connect's or a send's address from the program's memory
/// (process_vm_readv) and takes its socket (pidfd_getfd): both need ptrace rights over it. An
/// unprivileged supervisor has none over a non-dumpable process (prctl(PR_SET_DUMPABLE, 0);
/// likewise, under Yama's ptrace_scope 1, over any process of the tree but the command
/// itself). An address it cannot read must not be let through: the call is refused (EPERM,
/// what a local firewall rule gives), tailnet or not, never a direct packet.
#[test]
fn item16_a_process_the_supervisor_may_not_read_is_refused_never_let_through() {
    let Some(m) = Meter::fresh() else { return };
    let (Some(dy), Some(st)) = (probe(), probe_static()) else { return };
    for (mode, dest, port) in [
        ("tcp24", "::ffff:100.64.0.2", "8080"),
        ("udp24", "::ffff:100.64.0.2", "9"),
        ("udp0", "100.64.0.2", "9"),
        ("mmsg", "100.64.0.2", "9"),
        ("smmsg", "100.64.0.2", "9"),
    ] {
        m.attack(Via::Plain, &[s(&dy), "nodump", mode, dest, port]).run().expect_leak();
        let r = m.attack(Via::Launcher, &[s(&st), "nodump", mode, dest, port]).run().expect_clean();
        assert_eq!(r.get("errno"), "EPERM", "{}", r.text());
        // As a child of the command (a shell's), as under Yama's ptrace_scope 1 any process
        // but the command: one line on the command's stderr says why. (The command itself
        // non-dumpable: the supervisor may not reach its stderr either, the line is dropped.)
        let r = m.attack(Via::Launcher, &["sh", "-c", "\"$0\" \"$@\"; exit $?", s(&st), "nodump", mode, dest, port]).run().expect_clean();
        assert_eq!(r.get("errno"), "EPERM", "{}", r.text());
        assert_eq!(r.run.stderr.matches("may not read").count(), 1, "one line says why: {}", r.text());
    }
    // Not a tailnet destination: refused too (the supervisor cannot tell), and said once.
    let r = m.attack(Via::Launcher, &[s(&st), "nodump", "tcp24", "::ffff:198.51.100.10", "80"]).run().expect_clean();
    assert_eq!(r.get("errno"), "EPERM", "{}", r.text());
    // The same program, dumpable: tunnelled (the control for the refusal).
    let r = m.attack(Via::Launcher, &[s(&st), "tcp24", "::ffff:100.64.0.2", "8080"]).run().expect_clean();
    assert_eq!((r.get("errno").as_str(), r.get("reply").as_str()), ("0", PEER_REPLY), "{}", r.text());
}

// ---------------------------------------------------------------- 17. DNS questions a per-call check never sees whole

fn split() -> Option<PathBuf> {
    build("a_split", "a_split", false, &[])
}

fn split_static() -> Option<PathBuf> {
    build("a_split", "a_split-musl", true, &[])
}

/// The supervisor judges each send's buffer; the kernel may then build one datagram out of
/// several sends (MSG_MORE, UDP_CORK) or several datagrams out of one (UDP GSO), and a TCP Fast
/// Open send to port 53 is a connect the redirect to the responder never sees. A datagram to
/// port 53 must be one whole DNS message (else EPERM), a tailnet question on a corked socket is
/// refused (EPERM), and TCP Fast Open to port 53 is answered as a kernel with client TFO off
/// does (EOPNOTSUPP: the client connects instead, and that connect is redirected). Found by an
/// adversarial hunt (each control below reaches the resolver; under the launcher each did too).
#[test]
fn item17_dns_questions_split_across_sends_or_fast_open_never_reach_the_resolver() {
    let Some(m) = Meter::fresh() else { return };
    let (Some(dy), Some(st)) = (split(), split_static()) else { return };
    // (mode, errno from the library, errno from the supervisor). A connected socket's sends
    // under the supervisor go to its responder, which sees the datagram whole (so 0).
    for (mode, lib_errno, sup_errno) in [
        ("cork_dns", "EPERM", "EPERM"),
        ("cork_dns2", "EPERM", "EPERM"),
        ("udpcork_dns", "EPERM", "EPERM"),
        ("connmore_dns", "EPERM", "0"),
        ("tfo_dns", "EOPNOTSUPP", "EOPNOTSUPP"),
    ] {
        m.attack(Via::Plain, &[s(&dy), mode, "10.200.0.2", "peer-1"]).run().expect_dns();
        // The library (bare LD_PRELOAD, as in system-wide mode, and a dynamic program under the
        // launcher, whose sends the library makes marked, past the supervisor) and the
        // supervisor (a static program) apply the same rule.
        for (via, prog, errno) in [(Via::Preload, &dy, lib_errno), (Via::Launcher, &dy, lib_errno), (Via::Launcher, &st, sup_errno)] {
            let r = m.attack(via, &[s(prog), mode, "10.200.0.2", "peer-1"]).run().expect_clean();
            assert_eq!(r.get("errno"), errno, "{}", r.text());
        }
    }
    // Where a public question goes out too, the per-uid meter counts it either way: the real
    // resolver's log (this test's addresses, 10.200.0.19 and .20) says what arrived.
    // - UDP GSO: one send of a padded public query and a tailnet one; the kernel sends two
    //   datagrams (the meter sees one super-packet).
    let asked = |addr: &str, name: &str| {
        let log = std::fs::read_to_string(format!("{RUN_DIR}/dns-real.log")).unwrap_or_default();
        log.lines().filter(|l| l.starts_with(&format!("{addr} ")) && l.ends_with(&format!(" {name}"))).count()
    };
    {
        let (mode, addr) = ("gso_dns", "10.200.0.19");
        let n0 = asked(addr, "peer-1");
        m.attack(Via::Plain, &[s(&dy), mode, addr, "peer-1"]).run();
        let n1 = (0..20)
            .map(|_| std::thread::sleep(std::time::Duration::from_millis(50)))
            .find_map(|_| Some(asked(addr, "peer-1")).filter(|&n| n > n0))
            .unwrap_or(n0);
        assert!(n1 > n0, "control: without tsproxy {mode}'s tailnet question reaches the server");
        for (via, prog) in [(Via::Preload, &dy), (Via::Launcher, &st)] {
            let r = m.attack(via, &[s(prog), mode, addr, "peer-1"]).run().expect_no_leak();
            std::thread::sleep(std::time::Duration::from_millis(300));
            assert_eq!(asked(addr, "peer-1"), n1, "a tailnet name reached the real resolver: {}", r.text());
            assert_eq!(r.get("errno"), "EPERM", "{}", r.text());
        }
    }
    // Corked: a whole public question, then a whole tailnet one: without tsproxy one datagram
    // carries both (the server reads the first message and ignores the rest, so its log shows
    // only the public name: no control here). Under the launcher the tailnet piece is refused.
    let r = m.attack(Via::Launcher, &[s(&st), "corkwhole_dns", "10.200.0.20", "peer-1"]).run().expect_no_leak();
    assert_eq!(r.get("errno"), "EPERM", "{}", r.text());
    // The library answers the tailnet question itself (never sent), so that send succeeds.
    let r = m.attack(Via::Preload, &[s(&dy), "corkwhole_dns", "10.200.0.20", "peer-1"]).run().expect_no_leak();
    assert_eq!(r.get("errno"), "0", "{}", r.text());
    // A whole question to a public name is untouched (the control for the rule).
    for (via, prog) in [(Via::Preload, &dy), (Via::Launcher, &st)] {
        let r = m.attack(via, &[s(prog), "whole_dns", "10.200.0.19", "public.example"]).run().expect_no_leak();
        assert_eq!((r.get("errno").as_str(), r.get("reply").as_str()), ("0", "1"), "{}", r.text());
    }
}

// ---------------------------------------------------------------- 18. libc paths past the hooks

fn libpaths() -> Option<PathBuf> {
    build("a_lib", "a_lib", false, &[])
}

/// What a dynamic program reaches through libc without passing a hook (found by an adversarial
/// hunt of the library under bare LD_PRELOAD; each control reaches the meter):
/// - rexec/rcmd/ruserok resolve and dial with glibc's internal getaddrinfo and connect: a
///   tailnet host is refused before glibc sees it (ENETUNREACH);
/// - glibc's exported `__connect`, `__write` and `__send`, and `pwritev2` with offset -1: hooked
///   as connect, write and send;
/// - sendmmsg's flags (MSG_FASTOPEN) were not passed to each message's judgement;
/// - a reverse lookup (getnameinfo, gethostbyaddr) of a tailnet address asked the system
///   resolver for its PTR: not found (EAI_NONAME with NI_NAMEREQD, else the numeric form);
/// - getaddrinfo and gethostbyname judged `pe\101r-1` as written, glibc asked for `peer-1`;
///   getaddrinfo with AI_IDN judged `ｐｅｅｒ-1` as written, glibc asked for `peer-1`.
#[test]
fn item18_libc_paths_past_the_hooks_never_leak() {
    let Some(m) = Meter::fresh() else { return };
    let Some(p) = libpaths() else { return };
    // A tailnet address dialled by rexec (which retries ECONNREFUSED for ~30 s: 6 s is enough
    // for the control's first SYNs).
    m.attack(Via::Plain, &[s(&p), "rexec", "100.64.0.2", "512"]).secs(6).run().expect_leak();
    let r = m.attack(Via::Preload, &[s(&p), "rexec", "100.64.0.2", "512"]).secs(6).run().expect_clean();
    assert!(r.run.stderr.contains("refused"), "{}", r.text());
    // Tailnet names resolved by glibc inside rexec, rcmd and ruserok.
    for a in [&["rexec", "peer-1", "512"][..], &["rcmd", "peer-1"], &["ruserok", "peer-1"], &["ruserok", "peer-1.tail1234.ts.net"]] {
        let mut v = vec![s(&p)];
        v.extend_from_slice(a);
        m.attack(Via::Plain, &v).secs(10).run().expect_dns();
        m.attack(Via::Preload, &v).secs(10).run().expect_clean();
    }
    // __connect is connect: tunnelled. sendmmsg with MSG_FASTOPEN to a tailnet address: refused
    // as through sendmsg (EOPNOTSUPP).
    for (mode, want) in [("uconnect", "0"), ("mmsgtfo", "EOPNOTSUPP")] {
        m.attack(Via::Plain, &[s(&p), mode, "100.64.0.2", "8080"]).run().expect_leak();
        let r = m.attack(Via::Preload, &[s(&p), mode, "100.64.0.2", "8080"]).run().expect_clean();
        assert_eq!(r.get("errno"), want, "{}", r.text());
    }
    // A UDP socket connected to the resolver's port 53: a tailnet question written through
    // __write, __send or pwritev2 is answered by tsproxy, never sent.
    for mode in ["write_dns", "pwritev2_dns", "uwrite_dns", "usend_dns"] {
        m.attack(Via::Plain, &[s(&p), mode, "10.200.0.2", "peer-1"]).run().expect_dns();
        let r = m.attack(Via::Preload, &[s(&p), mode, "10.200.0.2", "peer-1"]).run().expect_clean();
        assert_eq!(r.get("errno"), "0", "{}", r.text());
    }
    // The same over TCP, judged by the real resolver's log at 10.200.0.14 (names.rs uses it
    // too, from another test binary, never at the same time; counted here as a difference),
    // and sendmmsg(MSG_FASTOPEN) to port 53 (refused, EOPNOTSUPP, as sendto's is).
    let asked = |addr: &str| {
        let log = std::fs::read_to_string(format!("{RUN_DIR}/dns-real.log")).unwrap_or_default();
        log.lines().filter(|l| l.starts_with(&format!("{addr} tcp ")) && l.ends_with(" peer-1")).count()
    };
    let addr = "10.200.0.14";
    for mode in ["tcp_pwritev2_dns", "tcp_usend_dns", "tcp_mmsgtfo_dns"] {
        let n0 = asked(addr);
        m.attack(Via::Plain, &[s(&p), mode, addr, "peer-1"]).run().expect_no_leak();
        let n1 = (0..20).map(|_| std::thread::sleep(std::time::Duration::from_millis(50))).find_map(|_| Some(asked(addr)).filter(|&n| n > n0)).unwrap_or(n0);
        assert!(n1 > n0, "control: {mode} reaches the server without tsproxy");
        let r = m.attack(Via::Preload, &[s(&p), mode, addr, "peer-1"]).run().expect_no_leak();
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(asked(addr), n1, "{mode}: a tailnet name reached the real resolver: {}", r.text());
    }
    // Backslash escapes, which glibc's resolver reads as ns_name_pton does (`pe\101r-1` asks
    // for peer-1): judged as the name that would be sent.
    for a in [&["gai", r"pe\101r-1"][..], &["ghbn", r"pe\101r-1"], &["ghbn", r"pe\101r-1.tail1234.ts.net"]] {
        let mut v = vec![s(&p)];
        v.extend_from_slice(a);
        m.attack(Via::Plain, &v).secs(10).run().expect_dns();
        m.attack(Via::Preload, &v).secs(10).run().expect_clean();
    }
    // AI_IDN: glibc maps fullwidth letters and the ideographic full stop to the ASCII tailnet
    // name (libidn2) after the hook has seen the name: judged in that form.
    for name in ["ｐｅｅｒ-1", "peer-1。tail1234。ts。net", "ｐｅｅｒ-1.tail1234.ts.net"] {
        m.attack(Via::Plain, &[s(&p), "gai", name, "idn"]).secs(10).run().expect_dns();
        let r = m.attack(Via::Preload, &[s(&p), "gai", name, "idn"]).secs(10).run().expect_clean();
        assert!(r.run.stdout.contains("240."), "a placeholder: {}", r.text());
    }
    // Reverse lookups of a tailnet address: never asked of the system resolver, and not found.
    for (mode, key, none) in [("gni", "gni", "Name or service not known"), ("gha", "gha", "1")] {
        m.attack(Via::Plain, &[s(&p), mode, "100.64.0.2"]).secs(10).run().expect_dns();
        for via in [Via::Preload, Via::Launcher] {
            let r = m.attack(via, &[s(&p), mode, "100.64.0.2"]).secs(10).run().expect_clean();
            assert_eq!(r.get(key), none, "{}", r.text());
        }
    }
    // An address the workspace's /etc/hosts lists (100.64.0.77 lan-printer, topology.sh) is
    // left to glibc, whose files source answers before any resolver: the administrator's name,
    // with tsproxy as without it, and the resolver asked by neither.
    for (mode, key) in [("gni", "host"), ("gha", "name")] {
        for via in [Via::Plain, Via::Preload, Via::Launcher] {
            let r = m.attack(via, &[s(&p), mode, "100.64.0.77"]).secs(10).run().expect_clean();
            assert_eq!(r.get(key), "lan-printer", "{}", r.text());
        }
    }
}

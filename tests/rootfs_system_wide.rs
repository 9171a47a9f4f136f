//! System-wide mode in a real Debian system (issue 13's main real-parts test).
//!
//! A Debian rootfs of the host's suite — `mmdebstrap --variant=minbase` plus curl, sudo and
//! microsocks, the tarball cached per package list (tests/common/debian.rs) — gets the package
//! (`make deb`) with dpkg, a user `user`, `tsproxy install --system`, and one line in the
//! shipped /etc/tsproxy.conf: `TSPROXY_PROXY=` the workspace's proxy (microsocks on
//! 127.0.0.1:1080 of tests/netns/topology.sh). It is entered with
//! `ip netns exec tsp-ws unshare -m ... chroot`: inside the root tier's workspace namespace,
//! with its leak meter (every packet to a tailnet range from any uid but the proxies' is
//! rejected and counted) and its DNS meter (the rootfs's resolv.conf is the workspace's, so a
//! tailnet name that reaches the system resolver is counted).
//!
//! No session is given LD_PRELOAD or a TSPROXY_* variable: the library comes from
//! /etc/ld.so.preload, the configuration from /etc/tsproxy.conf. Each kind of session whose
//! environment is reset — a login shell (`su - user -c`), `sudo -u user`, `env -i`, a
//! cron-style `sh -c` (another uid, an empty environment, cwd /, stdin /dev/null) — fetches a
//! tailnet peer's page by name (peer-1) and by address with Debian's curl; each time the page
//! arrives, stderr is empty, the library is in the session's own maps, and both meters stay at
//! zero. A setuid-root program (c-harness/a_setuid) run by `user` with a hostile environment
//! (TSPROXY_LOG_FILE, TSPROXY_LOG=debug, TSPROXY_PROXY naming a dead port) reaches the peer
//! through the system file's proxy and creates no log file; the same program without the
//! setuid bit (the control) obeys that environment. Debian's microsocks, dynamically linked,
//! started by `user` as the upstream that /etc/tsproxy.conf names, gets its own dials to the
//! peer (by address, and to the placeholder of a name) refused at once with one error line
//! each — neither a loop through itself (its descriptors and threads stay bounded) nor a direct
//! dial (the meter stays at zero). Controls at the end, after `tsproxy uninstall --system`: the
//! same microsocks, as the proxies' uid, does carry the request to the peer, and a plain fetch
//! from the rootfs is a direct dial the leak meter counts.
//!
//! `measure_startup_of_ld_so_preload_in_rootfs` (ignored: a measurement, not a test) times
//! `/bin/true` with and without the packaged library in the rootfs's /etc/ld.so.preload,
//! interleaved rounds, and prints the per-round ratios.
mod common;

use common::child::Run;
use common::debian::{build_deb, in_root, rootfs_tarball, suite, tools, unpack, Net, Scratch};
use common::world::{self, counter};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Instant;

/// Added to minbase: a client, sudo, and a dynamically linked SOCKS5 proxy.
const PACKAGES: &[&str] = &["curl", "microsocks", "sudo"];
const WS: &str = "tsp-ws";
const PEER: &str = "hello from peer";
/// What each session runs: the peer by name and by address, who it is, how many tsproxy
/// variables its environment has, and whether the library is in its own maps.
const BODY: &str = "curl -sS --max-time 10 http://peer-1:8080/; curl -sS --max-time 10 http://100.64.0.2:8080/; \
                    echo user=$(id -un); echo env=$(env | grep -c -e ^TSPROXY_ -e ^LD_PRELOAD); grep -q libtsproxy.so /proc/self/maps && echo maps=1 || echo maps=0";

/// The rootfs with the package installed, `user` created and system-wide mode on.
struct Rootfs {
    _scratch: Scratch,
    root: PathBuf,
    /// The packaged library's path inside the rootfs.
    lib: String,
}

/// Build the package, unpack the cached rootfs and install it there (no network needed for
/// that: `Net::Isolated`). None: skipped (not root, tools missing).
fn prepare(tag: &str, t0: Instant) -> Option<Rootfs> {
    if !common::debian::root("the rootfs system-wide test") {
        return None;
    }
    if !tools(&["dpkg-deb", "dpkg-shlibdeps", "dpkg-architecture", "mmdebstrap", "unshare", "chroot", "cc"], "rootfs system-wide test") {
        return None;
    }
    let phase = |what: &str| eprintln!("rootfs test: {what} at {:.1} s", t0.elapsed().as_secs_f64());
    let deb = build_deb();
    phase("package built");
    let tar = rootfs_tarball(&suite(), PACKAGES);
    phase(&format!("rootfs tarball {} ready", tar.display()));
    let s = Scratch::new(tag);
    let root = s.0.join("root");
    unpack(&tar, &root);
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::copy(&deb, root.join("tmp").join(&name)).unwrap();
    // sudo resolves the machine's name (the chroot shares the host's UTS namespace); the
    // tarball has no /etc/hosts. Without this line sudo says "unable to resolve host".
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    std::fs::write(root.join("etc/hosts"), format!("127.0.0.1 localhost\n::1 localhost ip6-localhost\n127.0.1.1 {}\n", host.trim())).unwrap();
    phase("rootfs unpacked");
    // microsocks on the workspace's 1080 runs as tsproxy-px (topology.sh): trusted by the
    // system file, as its administrator would.
    let px_uid =
        std::process::Command::new("id").args(["-u", "tsproxy-px"]).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    let r = in_root(
        &root,
        Net::Isolated,
        &format!(
            "set -e\ndpkg -i /tmp/{name} >/dev/null\nuseradd -m -s /bin/bash user\ntsproxy install --system\n\
             echo 'TSPROXY_PROXY=socks5://127.0.0.1:1080' >> /etc/tsproxy.conf\n\
             echo 'TSPROXY_PROXY_OWNER={px_uid}' >> /etc/tsproxy.conf\ncat /etc/ld.so.preload"
        ),
        &[],
        120,
    );
    assert!(r.ok(), "installing the package, the user, system-wide mode:\n{}", r.text());
    let lib = r.stdout.lines().last().unwrap_or_default().to_string();
    assert!(lib.ends_with("/tsproxy/libtsproxy.so") && root.join(&lib[1..]).is_file(), "/etc/ld.so.preload names {lib:?}:\n{}", r.text());
    phase("package installed, install --system done");
    Some(Rootfs { _scratch: s, root, lib })
}

/// Both meters of the workspace at zero, after `what`.
fn no_leak(what: &str) {
    assert_eq!(counter("leak"), 0, "{what}: a direct packet reached a tailnet range");
    assert_eq!(counter("dns"), 0, "{what}: a tailnet name reached the system resolver");
}

/// Lines of `out` after `marker` up to the next `--` line.
fn section<'a>(out: &'a str, marker: &str) -> Vec<&'a str> {
    out.lines().skip_while(|l| *l != marker).skip(1).take_while(|l| !l.starts_with("--")).collect()
}

/// `script` as root in the rootfs, inside the workspace namespace.
fn ws(rf: &Rootfs, script: &str, secs: u64) -> Run {
    in_root(&rf.root, Net::Netns(WS), script, &[("B", BODY)], secs)
}

/// A session ran BODY as `user`: both pages, nothing configured by the environment, the
/// library loaded, nothing on stderr, nothing leaked.
fn fetched(what: &str, r: &Run, user: &str) {
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines, [PEER, PEER, &format!("user={user}"), "env=0", "maps=1"], "{what}: by name, by address, as {user}:\n{}", r.text());
    assert!(r.ok() && r.stderr.is_empty(), "{what}: stray output on stderr:\n{}", r.text());
    no_leak(what);
}

#[test]
fn every_kind_of_session_reaches_the_tailnet_and_a_proxy_never_loops() {
    let t0 = Instant::now();
    let Some(rf) = prepare("rsw", t0) else { return };
    if !world::ready() {
        return;
    }
    // The workspace's resolver (nothing answers there; the DNS meter counts every question).
    std::fs::copy(format!("/etc/netns/{WS}/resolv.conf"), rf.root.join("etc/resolv.conf")).unwrap();
    no_leak("topology up");

    let r = ws(&rf, "su - user -c \"$B\"", 60);
    fetched("su - user -c (login shell)", &r, "user");
    let r = ws(&rf, "sudo -u user sh -c \"$B\"", 60);
    fetched("sudo -u user", &r, "user");
    let r = ws(&rf, "env -i /bin/sh -c \"$B\"", 60);
    fetched("env -i", &r, "root");
    // What cron does for a user's job: its uid and groups, an environment of four variables,
    // cwd /, no terminal, /bin/sh -c.
    let r = ws(
        &rf,
        "cd / && setpriv --reuid=user --regid=user --init-groups env -i HOME=/home/user LOGNAME=user SHELL=/bin/sh PATH=/usr/bin:/bin /bin/sh -c \"$B\"",
        60,
    );
    fetched("cron-style sh -c", &r, "user");
    eprintln!("rootfs test: four sessions at {:.1} s", t0.elapsed().as_secs_f64());

    // A setuid-root program run by `user` with a hostile environment, and its control.
    let harness = common::harness("a_setuid");
    let bin = rf.root.join("usr/local/bin");
    std::fs::copy(&harness, bin.join("a_setuid")).unwrap();
    std::fs::copy(&harness, bin.join("a_plain")).unwrap();
    std::fs::set_permissions(bin.join("a_setuid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::set_permissions(bin.join("a_plain"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = ws(
        &rf,
        "H=$(printf 'bad\\nname')\n\
         for p in a_setuid a_plain; do for d in peer-1 100.64.0.2; do echo \"-- $p $d\"\n\
           setpriv --reuid=user --regid=user --init-groups env TSPROXY_LOG_FILE=/tmp/$p.log TSPROXY_LOG=debug TSPROXY_PROXY=socks5://127.0.0.1:9 /usr/local/bin/$p \"$H\" $d 8080\n\
         done; done\necho -- end",
        60,
    );
    for d in ["peer-1", "100.64.0.2"] {
        let suid = section(&r.stdout, &format!("-- a_setuid {d}"));
        assert!(suid.contains(&"secure=1") && suid.contains(&"euid=0"), "{d}: not run setuid:\n{}", r.text());
        assert!(suid.contains(&"reply=HTTP/1.0 200 OK"), "{d}: the setuid program reached the peer through the system file's proxy:\n{}", r.text());
        let plain = section(&r.stdout, &format!("-- a_plain {d}"));
        assert!(plain.contains(&"secure=0"), "{}", r.text());
        assert!(!plain.contains(&"reply=HTTP/1.0 200 OK"), "control: the plain program uses the environment's (dead) proxy:\n{}", r.text());
    }
    assert!(!rf.root.join("tmp/a_setuid.log").exists(), "the setuid program created the file TSPROXY_LOG_FILE names");
    let plain_log = std::fs::read_to_string(rf.root.join("tmp/a_plain.log")).unwrap_or_default();
    assert!(!plain_log.is_empty(), "control: the plain program logs to TSPROXY_LOG_FILE:\n{}", r.text());
    assert!(r.ok() && r.stderr.is_empty(), "setuid: stray output on stderr:\n{}", r.text());
    no_leak("setuid program");

    // Debian's microsocks as the upstream /etc/tsproxy.conf names, run by `user` (any uid but
    // the proxies': a direct dial of its own would be counted). Its own dials to the tailnet
    // must neither go back into itself (a loop: descriptors and threads grow) nor out directly
    // (a leak): the library refuses them at once, with one error line each.
    let script = "sed -i 's|^TSPROXY_PROXY=.*|TSPROXY_PROXY=socks5://127.0.0.1:1090|' /etc/tsproxy.conf\n\
         sed -i \"s|^TSPROXY_PROXY_OWNER=.*|TSPROXY_PROXY_OWNER=$(id -u user)|\" /etc/tsproxy.conf\n\
         setpriv --reuid=user --regid=user --init-groups microsocks -i 127.0.0.1 -p 1090 2>/tmp/ms.err & MS=$!\n\
         i=0; while ! grep -q ':0442 00000000:0000 0A' /proc/net/tcp && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done\n\
         echo -- maps; grep -c libtsproxy.so /proc/$MS/maps\n\
         n0=$(ls /proc/$MS/fd | wc -l)\n\
         for d in 100.64.0.2 peer-1; do echo \"-- $d\"; t=$(date +%s%N); env -i /usr/bin/curl -sS --max-time 10 http://$d:8080/ 2>/dev/null; echo rc=$? ms=$(( ($(date +%s%N) - t) / 1000000 )); done\n\
         sleep 0.3\n\
         echo -- fds; echo $n0 $(ls /proc/$MS/fd | wc -l) $(sed -n 's/^Threads:[[:space:]]*//p' /proc/$MS/status)\n\
         { kill $MS; wait $MS; } 2>/dev/null\n\
         echo -- end";
    let r = ws(&rf, script, 60);
    let maps = section(&r.stdout, "-- maps");
    assert!(maps.first().is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n >= 1)), "microsocks did not load the library:\n{}", r.text());
    for d in ["100.64.0.2", "peer-1"] {
        let got = section(&r.stdout, &format!("-- {d}"));
        let ms: u64 = got.last().and_then(|l| l.rsplit("ms=").next()).and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
        assert!(!got.contains(&PEER) && !got.iter().any(|l| l.starts_with("rc=0 ")) && ms < 3000, "{d}: refused at once, not after a loop:\n{}", r.text());
    }
    let fds: Vec<u32> = section(&r.stdout, "-- fds").first().map(|l| l.split_whitespace().filter_map(|v| v.parse().ok()).collect()).unwrap_or_default();
    assert_eq!(fds.len(), 3, "{}", r.text());
    assert!(fds[1] <= fds[0] + 2 && fds[2] <= 4, "microsocks's descriptors or threads grew (a loop): fds before, after; threads: {fds:?}");
    // What microsocks said: one refusal per request (the address, then peer-1's placeholder),
    // nothing else — which also shows both requests did reach it.
    let ms_err = std::fs::read_to_string(rf.root.join("tmp/ms.err")).unwrap_or_default();
    let lines: Vec<&str> = ms_err.lines().filter(|l| !l.is_empty()).collect();
    assert!(
        lines.len() == 2 && lines.iter().all(|l| l.contains("this process listens on the proxy's address")) && lines[0].contains("100.64.0.2:8080"),
        "microsocks's stderr:\n{ms_err}\n{}",
        r.text()
    );
    assert!(r.ok() && r.stderr.is_empty(), "{}", r.text());
    no_leak("microsocks as the system-wide upstream");

    // Controls, with the library out of /etc/ld.so.preload: the same microsocks, as the
    // proxies' uid (which the meter lets through), carries the request to the peer — the
    // refusal above was the library's; and a plain fetch from the rootfs is a direct dial,
    // rejected and counted by the leak meter.
    let px = std::process::Command::new("id").args(["-u", "tsproxy-px"]).output().unwrap();
    let px = String::from_utf8(px.stdout).unwrap().trim().to_string();
    assert!(px.parse::<u32>().is_ok(), "topology.sh creates the user tsproxy-px");
    let script = format!(
        "tsproxy uninstall --system >/dev/null || exit 1\n\
         setpriv --reuid={px} --regid={px} --clear-groups microsocks -i 127.0.0.1 -p 1090 & MS=$!\n\
         i=0; while ! grep -q ':0442 00000000:0000 0A' /proc/net/tcp && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done\n\
         echo -- via; curl -sS --max-time 10 --socks5 127.0.0.1:1090 http://100.64.0.2:8080/\n\
         {{ kill $MS; wait $MS; }} 2>/dev/null\n\
         echo -- end"
    );
    let r = ws(&rf, &script, 60);
    assert_eq!(section(&r.stdout, "-- via"), [PEER], "control: microsocks without the library reaches the peer:\n{}", r.text());
    no_leak("control: microsocks's dial as the proxies' uid");
    let r = ws(&rf, "curl -sS --max-time 5 http://100.64.0.2:8080/ 2>/dev/null; echo rc=$?", 30);
    assert!(!r.stdout.contains(PEER) && counter("leak") >= 1, "control: a direct dial from the rootfs is seen by the leak meter:\n{}", r.text());
    eprintln!("rootfs test: done at {:.1} s (library {})", t0.elapsed().as_secs_f64(), rf.lib);
}

/// Start-up cost of system-wide mode in the rootfs: `/bin/true` spawned by a static driver
/// (c-harness/spawnbench: it loads no preload library itself), with the packaged library in
/// /etc/ld.so.preload and without it — and, for scale, with another object of about its size
/// there instead (glibc's libm) — several rounds interleaved in one run, the order reversed
/// every other round. Prints each round's ratios; asserts only that the library was really
/// loaded in the "with" runs.
#[test]
#[ignore = "a measurement: cargo test --test rootfs_system_wide -- --ignored --nocapture"]
fn measure_startup_of_ld_so_preload_in_rootfs() {
    let Some(rf) = prepare("rsw-cost", Instant::now()) else { return };
    let bench = common::harness_with("spawnbench", &["-static"]);
    std::fs::copy(bench, rf.root.join("usr/local/bin/spawnbench")).unwrap();
    let libm = format!("/lib/{}/libm.so.6", common::debian::multiarch());
    assert!(rf.root.join(&libm[1..]).is_file(), "{libm} missing in the rootfs");
    const ROUNDS: usize = 6;
    const N: usize = 500;
    let script = format!(
        "tsproxy uninstall --system >/dev/null || exit 1\n\
         without() {{ rm -f /etc/ld.so.preload; }}\nwith() {{ echo {lib} > /etc/ld.so.preload; }}\nlibm() {{ echo {libm} > /etc/ld.so.preload; }}\n\
         for r in $(seq 1 {ROUNDS}); do\n\
           if [ $((r % 2)) = 1 ]; then order='without with libm'; else order='libm with without'; fi\n\
           for k in $order; do $k; echo $k=$(/usr/local/bin/spawnbench {N} /bin/true); done\n\
         done\n\
         for k in with without; do $k; grep -q libtsproxy.so /proc/self/maps && echo maps=1 || echo maps=0; done",
        lib = rf.lib
    );
    let r = in_root(&rf.root, Net::Isolated, &script, &[], 300);
    assert!(r.ok(), "{}", r.text());
    let us = |k: &str| -> Vec<f64> { r.stdout.lines().filter_map(|l| l.strip_prefix(k)?.strip_prefix("us=")?.parse().ok()).collect() };
    let (with, without, libm_us) = (us("with="), us("without="), us("libm="));
    assert_eq!((with.len(), without.len(), libm_us.len()), (ROUNDS, ROUNDS, ROUNDS), "{}", r.text());
    let maps: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with("maps=")).collect();
    assert_eq!(maps, ["maps=1", "maps=0"], "the library is loaded from /etc/ld.so.preload, and only then:\n{}", r.text());
    eprintln!("startup of /bin/true in the rootfs, {N} spawns per cell; with = {} in /etc/ld.so.preload, libm = {libm} there instead", rf.lib);
    for i in 0..ROUNDS {
        let (w, wo, m) = (with[i], without[i], libm_us[i]);
        eprintln!("round {}: without {wo:.0} us, with {w:.0} us, libm {m:.0} us: with/without {:.3}, libm/without {:.3}", i + 1, w / wo, m / wo);
    }
    let med = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    let (w, wo, m) = (med(&with), med(&without), med(&libm_us));
    eprintln!("median: without {wo:.0} us, with {w:.0} us, libm {m:.0} us: with/without {:.3}, libm/without {:.3}", w / wo, m / wo);
}

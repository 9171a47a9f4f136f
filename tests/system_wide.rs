//! System-wide mode (issue 13, part 1): `tsproxy install --system` / `uninstall --system` and
//! the library loaded into every process through /etc/ld.so.preload.
//!
//! Root only, and never on the machine's own /etc: each test runs its commands in a private
//! mount namespace (`unshare -m`) whose /etc is an overlay over the real one with a scratch
//! upper directory, so /etc/ld.so.preload and /etc/tsproxy.conf exist only there (a broken
//! preload line would break every process of the machine). Each script first checks that /etc
//! is that overlay and stops otherwise; each test checks the real /etc/ld.so.preload is
//! unchanged afterwards. Network: loopback only (the test's own proxies and peers).
mod common;

use common::child::{bounded, Run};
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let r = unsafe { libc::geteuid() } == 0;
    if !r {
        assert!(std::env::var_os("TSPROXY_REQUIRE_NETNS").is_none(), "TSPROXY_REQUIRE_NETNS is set but the system-wide tests need root");
        eprintln!("SKIPPED: system-wide tests need root (a private mount namespace, setuid files)");
    }
    r
}

/// A scratch directory (mode 0755, root's) removed when dropped: the overlay's upper and work
/// directories, and whatever the test puts there.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("tsp-sysw-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        for sub in ["upper", "work", "tmp"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(d.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        Scratch(d)
    }
    fn upper(&self) -> PathBuf {
        self.0.join("upper")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn real_preload() -> Option<Vec<u8>> {
    std::fs::read("/etc/ld.so.preload").ok()
}

/// Run `script` with sh in a private mount namespace whose /etc is an overlay (upper:
/// `s.upper()`). The environment is cleared of tsproxy's variables and LD_PRELOAD.
fn in_ns(s: &Scratch, script: &str, env: &[(&str, String)]) -> Run {
    let before = real_preload();
    let full = format!(
        "set -e\nmount -t overlay overlay -o lowerdir=/etc,upperdir={u},workdir={w} /etc\n\
         [ \"$(findmnt -no FSTYPE /etc | tail -n1)\" = overlay ] || {{ echo 'not an overlay: stop' >&2; exit 99; }}\nset +e\n{script}",
        u = s.upper().display(),
        w = s.0.join("work").display()
    );
    let mut c = Command::new("unshare");
    c.args(["-m", "--propagation", "private", "sh", "-c", &full]);
    for k in TSPROXY_ENV.iter().chain(&["LD_PRELOAD", "XDG_CONFIG_HOME"]) {
        c.env_remove(k);
    }
    c.env("HOME", s.0.join("tmp"));
    for (k, v) in env {
        c.env(k, v);
    }
    let r = bounded(c, 60);
    assert_eq!(real_preload(), before, "the machine's /etc/ld.so.preload changed");
    assert_ne!(r.code(), Some(99), "{}", r.text());
    r
}

/// Lines of `out` after `marker` up to the next `--` line.
fn section<'a>(out: &'a str, marker: &str) -> Vec<&'a str> {
    out.lines().skip_while(|l| *l != marker).skip(1).take_while(|l| !l.starts_with("--")).collect()
}

#[test]
fn install_is_idempotent_keeps_other_entries_and_uninstall_removes_its_line() {
    if !root() {
        return;
    }
    let s = Scratch::new("inst");
    let ts = launcher();
    let probe = harness("privprobe");
    let lib = lib().canonicalize().unwrap();
    // Another preload entry that loads fine (glibc's own libm), and a comment: both must stay.
    let other =
        ["/lib/x86_64-linux-gnu/libm.so.6", "/lib/aarch64-linux-gnu/libm.so.6", "/lib64/libm.so.6"].into_iter().find(|p| Path::new(p).exists()).unwrap();
    std::fs::write(s.upper().join("ld.so.preload"), format!("# site preloads\n{other}\n")).unwrap();
    let script = format!(
        "T={ts}; P={probe}\n\
         echo -- probe0; $P\n\
         echo -- install1; $T install --system; echo rc=$?\n\
         echo -- install2; $T install --system; echo rc=$?\n\
         echo -- file1; cat /etc/ld.so.preload\n\
         echo -- probe1; $P\n\
         echo -- child; sh -c \"$P\" | grep preloaded\n\
         echo -- nonroot; setpriv --reuid=65534 --regid=65534 --clear-groups $T uninstall --system 2>&1; echo rc=$?\n\
         echo -- uninstall1; $T uninstall --system; echo rc=$?\n\
         echo -- uninstall2; $T uninstall --system; echo rc=$?\n\
         echo -- file2; cat /etc/ld.so.preload\n\
         echo -- probe2; $P\n\
         echo -- end",
        ts = ts.display(),
        probe = probe.display()
    );
    let r = in_ns(&s, &script, &[]);
    let out = &r.stdout;
    assert!(section(out, "-- probe0").contains(&"preloaded=0"), "control: not loaded before install: {}", r.text());
    assert!(section(out, "-- install1").contains(&"rc=0"), "{}", r.text());
    assert!(section(out, "-- install2").iter().any(|l| l.contains("already")), "{}", r.text());
    assert_eq!(section(out, "-- file1"), ["# site preloads", other, lib.to_str().unwrap()], "one line added, the rest kept: {}", r.text());
    assert!(section(out, "-- probe1").contains(&"preloaded=1"), "loaded without LD_PRELOAD: {}", r.text());
    assert_eq!(section(out, "-- child"), ["preloaded=1"], "{}", r.text());
    let nonroot = section(out, "-- nonroot").join("\n");
    assert!(nonroot.contains("must be run as root") && nonroot.contains("rc=1"), "{}", r.text());
    assert!(section(out, "-- uninstall1").contains(&"rc=0"), "{}", r.text());
    assert!(section(out, "-- uninstall2").iter().any(|l| l.contains("nothing to do")), "{}", r.text());
    assert_eq!(section(out, "-- file2"), ["# site preloads", other], "exactly its line removed: {}", r.text());
    assert!(section(out, "-- probe2").contains(&"preloaded=0"), "{}", r.text());
    assert!(r.stderr.is_empty(), "{}", r.text());
    // No temporary file left in /etc.
    let left: Vec<_> =
        std::fs::read_dir(s.upper()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.contains("tsproxy")).collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn install_refuses_a_library_other_users_could_replace() {
    if !root() {
        return;
    }
    let s = Scratch::new("trust");
    let open = s.0.join("open");
    std::fs::create_dir_all(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::copy(lib(), open.join("libtsproxy.so")).unwrap();
    let safe = s.0.join("safe");
    std::fs::create_dir_all(&safe).unwrap();
    std::fs::set_permissions(&safe, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(lib(), safe.join("libtsproxy.so")).unwrap();
    std::fs::set_permissions(safe.join("libtsproxy.so"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A library that does not load is never written to the file either.
    std::fs::write(safe.join("broken.so"), b"not an ELF file").unwrap();
    let script = format!(
        "T={ts}\n\
         echo -- open; $T install --system --lib {open}/libtsproxy.so 2>&1; echo rc=$?\n\
         echo -- broken; $T install --system --lib {safe}/broken.so 2>&1; echo rc=$?\n\
         echo -- none; cat /etc/ld.so.preload 2>&1 | grep -c libtsproxy\n\
         echo -- safe; $T install --system --lib {safe}/libtsproxy.so; echo rc=$?; cat /etc/ld.so.preload\n\
         echo -- end",
        ts = launcher().display(),
        open = open.display(),
        safe = safe.display()
    );
    let r = in_ns(&s, &script, &[]);
    let o = section(&r.stdout, "-- open").join("\n");
    assert!(o.contains("writable by nobody else") && o.contains("rc=1"), "{}", r.text());
    let b = section(&r.stdout, "-- broken").join("\n");
    assert!(b.contains("not installed") && b.contains("rc=1"), "{}", r.text());
    assert_eq!(section(&r.stdout, "-- none"), ["0"], "{}", r.text());
    let ok = section(&r.stdout, "-- safe");
    assert!(ok.contains(&"rc=0") && ok.contains(&safe.join("libtsproxy.so").to_str().unwrap()), "control: {}", r.text());
}

/// The setuid rule: a setuid-root program run by an unprivileged user, with the library from
/// /etc/ld.so.preload, takes its configuration from /etc/tsproxy.conf only — never from the
/// user's environment (TSPROXY_LOG_FILE, TSPROXY_PROXY) or the user's file. The same program
/// without the setuid bit (the control) does take both.
#[test]
fn setuid_programs_ignore_the_environment_and_the_user_file() {
    if !root() {
        return;
    }
    let s = Scratch::new("suid");
    let http = http_peer("tailnet");
    let system_proxy = Socks::start(None, router(http, banner_peer("tailnet")));
    let user_proxy = Socks::start(None, router(http, banner_peer("tailnet")));
    let env_proxy = Socks::start(None, router(http, banner_peer("tailnet")));
    let bin = s.0.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let prog = harness("a_setuid");
    std::fs::copy(&prog, bin.join("a_setuid")).unwrap();
    std::fs::copy(&prog, bin.join("a_plain")).unwrap();
    std::fs::set_permissions(bin.join("a_setuid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::set_permissions(bin.join("a_plain"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(s.upper().join("tsproxy.conf"), format!("TSPROXY_PROXY={}\nTSPROXY_LOG=error\n", system_proxy.url())).unwrap();
    // The user's own file (owned by the user, uid 65534) and environment.
    let home = s.0.join("tmp/home");
    std::fs::create_dir_all(home.join(".config/tsproxy")).unwrap();
    let log_user = s.0.join("tmp/user-file.log");
    std::fs::write(
        home.join(".config/tsproxy/config"),
        format!("TSPROXY_PROXY={}\nTSPROXY_LOG_FILE={}\nTSPROXY_LOG=debug\n", user_proxy.url(), log_user.display()),
    )
    .unwrap();
    for p in [home.as_path(), &home.join(".config"), &home.join(".config/tsproxy"), &home.join(".config/tsproxy/config")] {
        std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
    }
    let log_env = s.0.join("tmp/env.log");
    let script = format!(
        "echo {lib} > /etc/ld.so.preload\n\
         for p in a_setuid a_plain; do echo -- $p; setpriv --reuid=65534 --regid=65534 --clear-groups {bin}/$p 'bad\nname' peer-1 80; done\n\
         echo -- end",
        lib = lib().canonicalize().unwrap().display(),
        bin = bin.display()
    );
    // a_setuid first; the log file must not exist before the control runs.
    let r = in_ns(
        &s,
        &script,
        &[
            ("HOME", home.display().to_string()),
            ("TSPROXY_PROXY", env_proxy.url()),
            ("TSPROXY_LOG_FILE", log_env.display().to_string()),
            ("TSPROXY_LOG", "debug".into()),
        ],
    );
    let suid = section(&r.stdout, "-- a_setuid");
    let plain = section(&r.stdout, "-- a_plain");
    assert!(suid.contains(&"secure=1") && suid.contains(&"euid=0"), "{}", r.text());
    assert!(suid.contains(&"reply=HTTP/1.0 200 OK"), "the setuid program reached the peer: {}", r.text());
    assert!(plain.contains(&"secure=0") && plain.contains(&"reply=HTTP/1.0 200 OK"), "{}", r.text());
    // Who carried which connection: the setuid program the system file's proxy, the plain one
    // the environment's.
    assert_eq!(system_proxy.seen().len(), 1, "setuid: the system file's proxy: {}", r.text());
    assert_eq!(env_proxy.seen().len(), 1, "control: the plain program used the environment's proxy: {}", r.text());
    assert_eq!(user_proxy.seen().len(), 0, "the environment beats the user file for the plain one; the setuid one never reads it");
    // The log file: written by the plain program only (its lines name its pid: one pid only).
    let logged = std::fs::read_to_string(&log_env).unwrap_or_default();
    assert!(!logged.is_empty(), "control: the plain program logs to TSPROXY_LOG_FILE: {}", r.text());
    let pids: std::collections::HashSet<&str> = logged.lines().filter_map(|l| l.split(']').next()).collect();
    assert_eq!(pids.len(), 1, "only one process wrote the log file: {logged}");
    assert!(!log_user.exists(), "the user file's log file is for nobody here (the environment's wins for the plain one)");
    // The setuid program's stderr: nothing of ours (the system file says error only, and the
    // hostile name was not logged to the user's terminal either).
    assert!(!r.stderr.contains("tsproxy"), "{}", r.text());
}

/// The library in every process: no output in normal operation, no file created, and a
/// dynamically linked proxy (microsocks) configured as the upstream never tunnels to itself.
#[test]
fn every_process_silent_and_a_proxy_never_loops() {
    if !root() {
        return;
    }
    if Command::new("sh").args(["-c", "command -v microsocks && command -v python3"]).output().map(|o| !o.status.success()).unwrap_or(true) {
        assert!(std::env::var_os("TSPROXY_REQUIRE_NETNS").is_none(), "microsocks and python3 are required");
        eprintln!("SKIPPED: microsocks or python3 missing");
        return;
    }
    let s = Scratch::new("quiet");
    let http = http_peer("tailnet");
    let good = Socks::start(None, router(http, banner_peer("tailnet")));
    let ms_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // A peer on 127.0.0.5, made a tailnet route: a direct dial by microsocks would reach it
    // (the leak); a tunnel to itself would loop.
    let peer = std::net::TcpListener::bind("127.0.0.5:0").unwrap();
    let peer_port = peer.local_addr().unwrap().port();
    peer.set_nonblocking(true).unwrap();
    std::fs::write(s.upper().join("tsproxy.conf"), format!("TSPROXY_PROXY=socks5://127.0.0.1:{ms_port}\nTSPROXY_ROUTES=127.0.0.5\n")).unwrap();
    let fetch = "import socket,sys\ns=socket.create_connection(('100.64.0.2',80),timeout=5)\ns.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\nprint(s.recv(100).split(b'\\r\\n')[0].decode())";
    let socks_req = format!(
        "import socket,time\nt=time.time()\ns=socket.create_connection(('127.0.0.1',{ms_port}),timeout=10)\ns.sendall(b'\\x05\\x01\\x00')\ns.recv(2)\ns.sendall(b'\\x05\\x01\\x00\\x01'+bytes([127,0,0,5])+({peer_port}).to_bytes(2,'big'))\nr=s.recv(10)\nprint('rep=%d secs=%.1f' % (r[1] if len(r)>1 else -1, time.time()-t))"
    );
    let script = format!(
        "echo {lib} > /etc/ld.so.preload\n\
         cd {tmp}\n\
         echo -- plain; ls / >/dev/null; sh -c 'true'; python3 -c 'print(1)'; date >/dev/null\n\
         echo -- fetch; TSPROXY_PROXY={good} python3 -c \"$FETCH\"\n\
         echo -- loop; microsocks -i 127.0.0.1 -p {ms_port} 2>{tmp}/../ms.err & MS=$!; sleep 0.5\n\
         n0=$(ls /proc/$MS/fd | wc -l); python3 -c \"$SOCKS\"; sleep 0.3; n1=$(ls /proc/$MS/fd | wc -l)\n\
         grep -c libtsproxy /proc/$MS/maps | sed 's/^/maps=/'; echo fds=$n0,$n1; kill $MS\n\
         echo -- files; ls -A {tmp}; ls -A /etc/.  >/dev/null\n\
         echo -- end",
        lib = lib().canonicalize().unwrap().display(),
        tmp = s.0.join("tmp").display(),
        good = good.url()
    );
    let r = in_ns(&s, &script, &[("FETCH", fetch.into()), ("SOCKS", socks_req)]);
    assert_eq!(section(&r.stdout, "-- plain"), ["1"], "{}", r.text());
    assert_eq!(section(&r.stdout, "-- fetch"), ["HTTP/1.0 200 OK"], "{}", r.text());
    assert_eq!(good.seen().len(), 1);
    let lp = section(&r.stdout, "-- loop");
    assert!(lp.iter().any(|l| l.starts_with("maps=") && *l != "maps=0"), "microsocks loaded the library: {}", r.text());
    let rep = lp.iter().find(|l| l.starts_with("rep=")).unwrap_or_else(|| panic!("{}", r.text()));
    assert!(!rep.starts_with("rep=0 "), "the proxy's own dial to a tailnet destination must not succeed by leaking or looping: {}", r.text());
    let secs: f64 = rep.rsplit('=').next().unwrap().parse().unwrap();
    assert!(secs < 3.0, "refused at once, not after a loop ran out of fds: {}", r.text());
    let fds = lp.iter().find_map(|l| l.strip_prefix("fds=")).unwrap();
    let (n0, n1) = fds.split_once(',').unwrap();
    assert!(n1.parse::<i32>().unwrap() <= n0.parse::<i32>().unwrap() + 2, "fds grew: {fds}");
    assert!(peer.accept().is_err(), "microsocks dialled the tailnet peer directly (a leak)");
    // The one thing said: the refusal, an error, on the proxy's own stderr.
    let ms_err = std::fs::read_to_string(s.0.join("ms.err")).unwrap_or_default();
    assert!(ms_err.contains("this process listens on the proxy's address"), "{ms_err}");
    assert!(section(&r.stdout, "-- files").is_empty(), "a file was created in the working directory: {}", r.text());
    assert!(r.stderr.is_empty(), "output on stderr from a preloaded process: {}", r.text());
    // Nothing but what the test put into /etc.
    let mut etc: Vec<_> = std::fs::read_dir(s.upper()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    etc.sort();
    assert_eq!(etc, ["ld.so.preload", "tsproxy.conf"]);
}

/// Start-up cost: `/bin/true` with the library in /etc/ld.so.preload against without it, in
/// the same run, alternating, timed by a static driver (it loads no preload library itself).
/// Nothing of ours runs at load time: strace shows a preloaded `/bin/true` opens no
/// configuration file, while a program that connects to a tailnet address opens it once.
#[test]
fn startup_cost_of_ld_so_preload() {
    if !root() {
        return;
    }
    let s = Scratch::new("cost");
    let bench = harness_with("spawnbench", &["-static"]);
    let script = format!(
        "for round in 1 2 3; do rm -f /etc/ld.so.preload; echo without=$({b} 300 /bin/true); echo {lib} > /etc/ld.so.preload; echo with=$({b} 300 /bin/true); done\n\
         echo -- strace-true; strace -f -e trace=openat,open /bin/true 2>&1 | grep -cF /etc/tsproxy.conf\n\
         echo -- strace-connect; strace -f -e trace=openat,open python3 -c \"import socket\ntry: socket.create_connection(('100.64.0.2', 80), timeout=2)\nexcept OSError: pass\" 2>&1 | grep -F /etc/tsproxy.conf\n\
         echo -- end",
        b = bench.display(),
        lib = lib().canonicalize().unwrap().display()
    );
    let r = in_ns(&s, &script, &[]);
    let kv = |k: &str| -> Vec<f64> { r.stdout.lines().filter_map(|l| l.strip_prefix(k)?.strip_prefix("us=")?.parse().ok()).collect() };
    let (with, without) = (kv("with="), kv("without="));
    assert_eq!((with.len(), without.len()), (3, 3), "{}", r.text());
    let min = |v: &[f64]| v.iter().cloned().fold(f64::MAX, f64::min);
    let ratio = min(&with) / min(&without);
    eprintln!("startup: /bin/true {:.0} us without, {:.0} us with ld.so.preload (best of 3 x 300): ratio {ratio:.2}", min(&without), min(&with));
    assert_eq!(section(&r.stdout, "-- strace-true"), ["0"], "the configuration is read at load time: {}", r.text());
    // Control: the process that connects reads it, once (python3 may be a shim: several
    // processes; each line names its pid under -f, except the first process's).
    let opens = section(&r.stdout, "-- strace-connect");
    let pids: Vec<&str> = opens.iter().map(|l| if l.starts_with("[pid") { l.split(']').next().unwrap() } else { "first" }).collect();
    let unique: std::collections::HashSet<&&str> = pids.iter().collect();
    assert!(!opens.is_empty() && unique.len() == pids.len(), "control: read once per process on first use: {}", r.text());
    // The cost is mapping one more object (a debug build is 16 times the size of a release one).
    assert!(ratio < 2.5, "ld.so.preload start-up cost too high: {ratio:.2}");
}

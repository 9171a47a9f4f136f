//! The `tsproxy` launcher as a user runs it.
mod common;

use common::*;
use std::process::Command;

fn ts(args: &[&str]) -> std::process::Output {
    Command::new(launcher()).args(args).env_remove("TSPROXY_PROXY").env_remove("TSPROXY_LOG").output().unwrap()
}

#[test]
fn exit_status_and_signals_are_the_commands() {
    assert_eq!(ts(&["sh", "-c", "exit 7"]).status.code(), Some(7));
    assert_eq!(ts(&["true"]).status.code(), Some(0));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(ts(&["sh", "-c", "kill -TERM $$"]).status.signal(), Some(15));
}

#[test]
fn command_not_found_is_127() {
    let out = ts(&["no-such-command-tsproxy-test"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("command not found"));
}

#[test]
fn bad_option_or_value_is_one_line_and_exit_2() {
    for (args, env, needle) in [
        (vec!["--bogus", "true"], None, "--bogus"),
        (vec!["--proxy", "ftp://x", "true"], None, "--proxy"),
        (vec!["--proxy"], None, "--proxy"),
        (vec!["true"], Some(("TSPROXY_LOG", "loud")), "TSPROXY_LOG"),
        (vec!["true"], Some(("TSPROXY_ROUTES", "10.0.0.0/99")), "TSPROXY_ROUTES"),
        (vec!["true"], Some(("TSPROXY_PROXY", "socks5://u:hunter2@h:0")), "TSPROXY_PROXY"),
        (vec![], None, "no command"),
    ] {
        let mut c = Command::new(launcher());
        c.args(&args);
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {}", text(&out));
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}

#[test]
fn help_and_version() {
    let out = ts(&["--help"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("usage: tsproxy"));
    let out = ts(&["--version"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("tsproxy 0."));
}

#[test]
fn preload_is_prepended_and_children_inherit_it() {
    let out = Command::new(launcher())
        .args(["sh", "-c", "echo $LD_PRELOAD; sh -c 'echo $LD_PRELOAD'"])
        .env("LD_PRELOAD", "/lib/x86_64-linux-gnu/libdl.so.2")
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 2, "{s}");
    assert!(lines[0].ends_with("libtsproxy.so:/lib/x86_64-linux-gnu/libdl.so.2"), "{s}");
    assert_eq!(lines[0], lines[1]);
}

#[test]
fn quiet_and_verbose() {
    let out = ts(&["-v", "python3", "-c", "import socket; socket.getaddrinfo('peer', 80)"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("getaddrinfo peer -> tailnet name"), "{}", text(&out));
    let dead = closed_port();
    let out = Command::new(launcher())
        .args(["-q", "--proxy", &format!("socks5://{dead}"), &harness("tcpclient").to_string_lossy(), "100.64.0.2", "1"])
        .output()
        .unwrap();
    assert_eq!(kv(&out)["errno"], "ECONNREFUSED");
    assert!(out.stderr.is_empty(), "{}", text(&out));
}

#[test]
fn supervisor_log_lines_escape_control_characters_of_names() {
    // A process of the tree registers a name with CR/LF/ESC in it (the key path of the
    // supervisor's DNS responder, as the library does), with debug logging on. Such a name is
    // not a host name, so it is never a tailnet name: it gets no placeholder (no answer, or an
    // answer without addresses), and whatever the supervisor logs stays one line per event:
    // no forged "INJECTED" line, no raw CR or escape. (The escaping itself is unit-tested in
    // core::logline.)
    let py = r#"
import os, socket
host, port = os.environ['TSPROXY_SUPERVISOR_DNS'].rsplit(':', 1)
key = os.environ['TSPROXY_SUPERVISOR_DNS_KEY'].encode()
name = b'evil\r\nINJECTED line\x1b[31m'
q = b'\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00' + bytes([len(name)]) + name + b'\x00\x00\x01\x00\x01'
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
s.sendto(b'TSK1' + key + q, (host, int(port)))
try:
    a = s.recv(512)
    print('answers', a[6] << 8 | a[7])
except socket.timeout:
    print('answers none')
"#;
    let out = Command::new(launcher()).args(["-v", "--supervisor=on", "python3", "-c", py]).env_remove("TSPROXY_PROXY").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.trim() == "answers none" || said.trim() == "answers 0", "a name with control characters got an address: {}", text(&out));
    assert!(!err.lines().any(|l| l.starts_with("INJECTED") || l.starts_with("injected")), "{}", text(&out));
    assert!(!err.contains('\x1b') && !err.contains('\r'), "{}", text(&out));
}

// ---- setuid / setgid / setcap commands (issue 10, item 6). Root only: making such a file
// needs root; the command then runs as uid 65534 (setpriv), for whom it is secure execution.

/// The directory of `privileged_probes`, removed when dropped — also when an assertion fails:
/// a setuid-root copy must not stay behind.
struct Probes(std::path::PathBuf);

impl Drop for Probes {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl std::ops::Deref for Probes {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

/// A temporary directory with a copy of the launcher and the library (so uid 65534 can run
/// them), c-harness/privprobe as `probe` (plain), `probe-suid` (setuid root) and `probe-cap`
/// (cap_net_raw+ep). None (skip) without root or setcap, unless TSPROXY_REQUIRE_NETNS=1.
fn privileged_probes() -> Option<Probes> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let setcap = Command::new("sh").args(["-c", "command -v setcap && command -v setpriv"]).output().is_ok_and(|o| o.status.success());
    if !root || !setcap {
        let why = if root { "setcap (libcap2-bin) or setpriv missing" } else { "not root" };
        assert!(std::env::var("TSPROXY_REQUIRE_NETNS").as_deref() != Ok("1"), "setuid/setcap tests: {why} (TSPROXY_REQUIRE_NETNS=1)");
        eprintln!("setuid/setcap tests skipped: {why}");
        return None;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("tsp-privs-{}-{:?}", std::process::id(), std::thread::current().id()).replace(['(', ')'], ""));
    std::fs::create_dir_all(&dir).unwrap();
    let dir = Probes(dir);
    std::fs::set_permissions(&*dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::copy(launcher(), dir.join("tsproxy")).unwrap();
    std::fs::copy(lib(), dir.join("libtsproxy.so")).unwrap();
    let probe = harness("privprobe");
    for (name, mode) in [("probe", 0o755), ("probe-suid", 0o4755), ("probe-cap", 0o755)] {
        std::fs::copy(&probe, dir.join(name)).unwrap();
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let st = Command::new("setcap").arg("cap_net_raw+ep").arg(dir.join("probe-cap")).status().unwrap();
    assert!(st.success(), "setcap");
    Some(dir)
}

/// `tsproxy ARGS` as uid 65534, with 127.0.0.1 made a "tailnet" route.
fn as_nobody(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(dir.join("tsproxy"))
        .args(args)
        .env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
        .env("TSPROXY_ROUTES", "127.0.0.1/32")
        .env_remove("TSPROXY_PROXY")
        .env_remove("TSPROXY_LOG")
        .env_remove("TSPROXY_SUPERVISOR")
        .output()
        .unwrap()
}

#[test]
fn setuid_and_setcap_commands_are_refused_without_the_supervisor() {
    let Some(dir) = privileged_probes() else { return };
    for (prog, why) in [("probe-suid", "setuid root"), ("probe-cap", "file capabilities")] {
        let full = dir.join(prog).to_string_lossy().into_owned();
        // By path and by PATH lookup.
        for cmd in [full.as_str(), prog] {
            let out = as_nobody(&dir, &["--supervisor=off", cmd]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(126), "{cmd}: {}", text(&out));
            assert!(out.stdout.is_empty(), "{cmd} ran: {}", text(&out));
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.contains(why) && err.contains("--allow-unprotected") && err.contains(&full), "{err}");
        }
    }
    // With the opt-in it runs, with one warning — and shows what the refusal prevents: the
    // loader dropped the library (secure execution), nothing intercepts it.
    let out = as_nobody(&dir, &["--supervisor=off", "--allow-unprotected", "probe-suid"]);
    let k = kv(&out);
    assert_eq!((out.status.code(), k["secure"].as_str(), k["preloaded"].as_str(), k["euid"].as_str()), (Some(0), "1", "0", "0"), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.lines().count() == 1 && err.contains("warning") && err.contains("unprotected"), "{err}");
    // A plain program: no refusal, no warning.
    let out = as_nobody(&dir, &["--supervisor=off", "probe"]);
    assert_eq!((out.status.code(), kv(&out)["preloaded"].as_str()), (Some(0), "1"), "{}", text(&out));
    assert!(out.stderr.is_empty(), "{}", text(&out));
}

#[test]
fn setuid_and_setcap_commands_run_without_privileges_under_the_supervisor() {
    let Some(dir) = privileged_probes() else { return };
    let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(std::time::Duration::from_millis(300))).unwrap();
    let port = u.local_addr().unwrap().port().to_string();
    for (prog, euid) in [("probe-suid", "65534"), ("probe-cap", "65534")] {
        let out = as_nobody(&dir, &["--supervisor=on", prog, "127.0.0.1", &port]);
        let k = kv(&out);
        let err = String::from_utf8_lossy(&out.stderr);
        // One warning line from the launcher (the library may log its refusal too).
        let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("tsproxy: ")).collect();
        assert!(warnings.len() == 1 && warnings[0].contains("warning") && warnings[0].contains("without those privileges"), "{prog}: {}", text(&out));
        // No privilege gained (no raw socket), and the "tailnet" datagram is refused: by the
        // library (setuid: no longer secure execution under no_new_privs) or by the supervisor
        // alone (file capabilities: the exec still sets AT_SECURE, the loader drops the library).
        assert_eq!((k["euid"].as_str(), k["raw"].as_str(), k["sendto"].as_str()), (euid, "EPERM", "ENETUNREACH"), "{prog}: {}", text(&out));
        let mut b = [0u8; 8];
        assert!(u.recv(&mut b).is_err(), "{prog}: a datagram reached the tailnet route");
    }
}

/// The supervisor is started by clones that wait for the launcher's exec
/// (wrapper/src/supervisor/spawn.rs). What the command can see of it: nothing among its
/// children (no `wait`, `__WALL` included, reports it; no `pkill -P` reaches it); the
/// supervisor itself (found by the DNS responder port the command is given) is in a session of
/// its own, its argument area scrubbed, holding none of the descriptors the command was given
/// (here an extra fd 3), /dev/null as its stdin/stdout, SIGPIPE and the terminal's signals
/// ignored.
#[test]
fn supervisor_is_nobodys_child_and_holds_nothing_of_the_command() {
    let script = r#"
import os, sys, time
me = os.getpid()
kids = open('/proc/self/task/%d/children' % me).read().split()
assert kids == [], kids
try:
    os.waitpid(-1, os.WNOHANG | 0x40000000)  # __WALL
    print('a child to wait for')
except ChildProcessError:
    pass
port = int(os.environ['TSPROXY_SUPERVISOR_DNS'].rsplit(':', 1)[1])
def owner():
    inode = None
    for l in open('/proc/net/udp').read().splitlines()[1:]:
        f = l.split()
        if int(f[1].split(':')[1], 16) == port:
            inode = f[9]
    for p in os.listdir('/proc'):
        if not p.isdigit(): continue
        try:
            for fd in os.listdir('/proc/%s/fd' % p):
                if os.readlink('/proc/%s/fd/%s' % (p, fd)) == 'socket:[%s]' % inode:
                    return int(p)
        except OSError:
            pass
deadline = time.time() + 5
def state(s):
    cmd = open('/proc/%d/cmdline' % s, 'rb').read()
    fds = {}
    for f in os.listdir('/proc/%d/fd' % s):
        try: fds[int(f)] = os.readlink('/proc/%d/fd/%s' % (s, f))
        except OSError: pass
    return cmd, fds
while True:
    s = owner()
    if s:
        cmd, fds = state(s)
        done = cmd.startswith(b'tsproxy-supervisor') and not any('hostname' in t for t in fds.values()) and fds.get(0) == '/dev/null'
        if done: break
    if time.time() > deadline: break
    time.sleep(0.02)
assert s and s != me, s
ppid = int([l for l in open('/proc/%d/status' % s) if l.startswith('PPid:')][0].split()[1])
assert ppid != me, ppid
assert cmd.startswith(b'tsproxy-supervisor'), cmd
assert not any('hostname' in t for t in fds.values()), fds
assert fds.get(0) == '/dev/null' and fds.get(1) == '/dev/null', fds
assert os.getsid(s) != os.getsid(0) and os.getsid(s) == s, (os.getsid(s), os.getsid(0))
assert os.readlink('/proc/self/fd/3') == '/etc/hostname'
ign = int([l for l in open('/proc/%d/status' % s) if l.startswith('SigIgn:')][0].split()[1], 16)
for sig in (1, 2, 3, 13, 20, 21, 22):  # HUP INT QUIT PIPE TSTP TTIN TTOU
    assert ign >> (sig - 1) & 1, (sig, hex(ign))
print('quiet ok')
"#;
    if !std::path::Path::new("/etc/hostname").exists() {
        eprintln!("skipped: no /etc/hostname to pass as fd 3");
        return;
    }
    let out = Command::new("sh")
        .args(["-c", "exec 3</etc/hostname; exec \"$0\" --supervisor=on python3 -c \"$1\"", launcher().to_str().unwrap(), script])
        .env_remove("TSPROXY_PROXY")
        .env("TSPROXY_LOG", "error")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("quiet ok"), "{}", text(&out));
    assert!(out.status.success(), "{}", text(&out));
}

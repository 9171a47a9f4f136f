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

/// The supervisor holds no descriptor of the command's stdout or stderr (spawn.rs `prelude`,
/// stderr.rs): a pipe the command was given reaches EOF when the command's tree lets go of it.
/// Here the command closes its stdout and stderr and sleeps on, or leaves a daemon behind with
/// /dev/null as its stdio: the reader of both pipes sees EOF at once, not when the tree ends
/// (it took the sleep's 3 s while the supervisor kept the launcher's stderr). Its log lines
/// still reach the command's stderr — through the command's own descriptor 2, and only while
/// that is the same file: once the command has put another file there, nothing is written into
/// it.
#[test]
fn supervisor_keeps_no_pipe_of_the_command_and_logs_only_to_its_stderr() {
    use std::io::Read;
    use std::process::Stdio;
    for script in ["echo hi; exec >&- 2>&-; sleep 3", "sleep 3 </dev/null >/dev/null 2>&1 & echo hi"] {
        let t0 = std::time::Instant::now();
        let mut child = Command::new(launcher())
            .args(["--supervisor=on", "sh", "-c", script])
            .env_remove("TSPROXY_PROXY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (mut out, mut err) = (String::new(), String::new());
        child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        let took = t0.elapsed();
        let _ = child.wait();
        assert_eq!(out, "hi\n", "{script}: {err}");
        assert!(took < std::time::Duration::from_millis(1500), "{script}: EOF after {took:?}");
    }
    // Registering a tailnet name is logged at debug level by the supervisor.
    let py = r#"
import os, socket, tempfile
host, port = os.environ['TSPROXY_SUPERVISOR_DNS'].rsplit(':', 1)
key = os.environ['TSPROXY_SUPERVISOR_DNS_KEY'].encode()
def register(name):
    q = b'\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00' + bytes([len(name)]) + name + b'\x00\x00\x01\x00\x01'
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.sendto(b'TSK1' + key + q, (host, int(port)))
    return s.recv(512)[7]
print('first', register(b'peer-1'), flush=True)
f = tempfile.TemporaryFile()
os.dup2(f.fileno(), 2)
print('second', register(b'peer-2'), flush=True)
f.seek(0)
print('file has supervisor lines:', b'tsproxy[supervisor]' in f.read())
"#;
    let out = Command::new(launcher()).args(["-v", "--supervisor=on", "python3", "-S", "-c", py]).env_remove("TSPROXY_PROXY").output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("first 1") && said.contains("second 1"), "{}", text(&out));
    assert!(said.contains("file has supervisor lines: False"), "a log line went into the file the command put on its fd 2: {}", text(&out));
    assert!(err.contains("tsproxy[supervisor] debug: dns peer-1"), "{}", text(&out));
    assert!(!err.contains("dns peer-2"), "{}", text(&out));
}

/// The supervisor writes a log line to the root's descriptor 2 only while that is still the
/// file the command was given as stderr, judged by device and inode number (stderr.rs). If
/// that file is deleted and closed, the next file the command creates lands on descriptor 2
/// (lowest free) and, on ext4 (/tmp here) or ext2, got the same inode number: the
/// supervisor's lines went into that data file (found by review, 4 runs of 4). The supervisor
/// now keeps the inode of a regular stderr file (O_PATH), so its number is not handed out
/// again while the tree lives.
#[test]
fn supervisor_log_never_goes_into_a_new_file_with_the_old_inode_number() {
    let dir = std::env::temp_dir().join(format!("tsp-stderr-ino-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let py = r#"
import os, socket, sys
d = sys.argv[1]
host, port = os.environ['TSPROXY_SUPERVISOR_DNS'].rsplit(':', 1)
key = os.environ['TSPROXY_SUPERVISOR_DNS_KEY'].encode()
def register(name):
    q = b'\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00' + bytes([len(name)]) + name + b'\x00\x00\x01\x00\x01'
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
    s.sendto(b'TSK1' + key + q, (host, int(port)))
    return s.recv(512)[7]
st = os.fstat(2)
os.unlink(os.path.join(d, 'err.log'))
os.close(2)
fd = os.open(os.path.join(d, 'data.bin'), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
nst = os.fstat(fd)
print('same inode number', (nst.st_dev, nst.st_ino) == (st.st_dev, st.st_ino), 'fd', fd)
os.write(fd, b'DATA\n')
register(b'peer-x')
os.lseek(fd, 0, 0)
print('data file holds', os.read(fd, 4096))
"#;
    // The redirection inside sh, so that nothing else (timeout) holds err.log open.
    let out = Command::new("timeout")
        .args(["20", "sh", "-c", r#"exec "$0" -v --supervisor=on python3 -S -c "$1" "$2" 2>"$2/err.log""#])
        .arg(launcher())
        .arg(py)
        .arg(&dir)
        .env_remove("TSPROXY_PROXY")
        .env_remove("TSPROXY_LOG")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("data file holds b'DATA\\n'"), "a supervisor line went into the command's data file: {}", text(&out));
    assert!(s.contains("same inode number False"), "the deleted stderr's inode number was handed out again: {}", text(&out));
}

/// A supervisor this machine can run but that cannot be started now (here: no descriptor left
/// for the seccomp listener) stops the launcher, in `auto` as in `on`: the command must not
/// run unsupervised because of a resource, nor after no_new_privs without the filter. The same
/// limit does not keep the command itself from running (`off`).
#[test]
fn supervisor_that_cannot_start_for_a_resource_stops_the_launcher() {
    let prlimit = ["/usr/bin/prlimit", "/bin/prlimit"].into_iter().find(|p| std::path::Path::new(p).exists());
    let Some(prlimit) = prlimit else {
        eprintln!("skipped: no prlimit");
        return;
    };
    let run = |mode: &str| {
        let mut c = Command::new(prlimit);
        // Only 0-2 inherited (a `flock` around the tests holds 3): the limit of 4 leaves the
        // launcher exactly one descriptor, for its configuration file, none for the listener.
        // SAFETY: close_range in the child before exec touches no memory.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut c, || {
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
                Ok(())
            })
        };
        c.args(["--nofile=4", launcher().to_str().unwrap(), &format!("--supervisor={mode}"), "/bin/echo", "ran"])
            .env_remove("TSPROXY_PROXY")
            .env_remove("TSPROXY_SUPERVISOR")
            .output()
            .unwrap()
    };
    for mode in ["auto", "on"] {
        let out = run(mode);
        assert_eq!(out.status.code(), Some(1), "{mode}: {}", text(&out));
        assert!(out.stdout.is_empty(), "{mode}: the command ran: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("tsproxy: ") && err.lines().count() == 1, "{mode}: {}", text(&out));
    }
    let out = run("off");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n", "{}", text(&out));
}

/// Reaps every child until none is left (what an init or a process manager does), then says
/// who it is: under the launcher as pid 1 or as a subreaper it must not find the supervisor
/// among its children (it would wait for it forever: the supervisor waits for the tree).
/// Python's subprocess keeps no reference here, so the one child it made is reaped by os.wait.
const WAIT_ALL_PY: &str = r#"
import os, subprocess
subprocess.Popen(['sleep', '0.1'])
n = 0
while True:
    try:
        os.wait()
        n += 1
    except ChildProcessError:
        break
print('reaped', n, 'pid', os.getpid(), 'ppid', os.getppid(), flush=True)
"#;

/// As pid 1 of a pid namespace (a container's entrypoint without --init) the launcher stays as a
/// minimal init (wrapper/src/init.rs) and runs the command as pid 2: the supervisor is handed to
/// the init, not to the command; the command's exit status and death by a signal come out as
/// the init's (128 + n as pid 1); a signal sent to the init reaches the command. With
/// `--supervisor=off` the command is pid 1 itself. Root only (`unshare -p`).
#[test]
fn as_pid_1_the_launcher_is_a_minimal_init() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: unshare -p needs root");
        return;
    }
    let probe = Command::new("unshare").args(["-fp", "--mount-proc", "true"]).output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        // The root tier (make test as root) requires it, as it requires network namespaces.
        assert!(std::env::var_os("TSPROXY_REQUIRE_NETNS").is_none(), "unshare -fp does not work here: {probe:?}");
        eprintln!("skipped: unshare -fp does not work here");
        return;
    }
    let ns = |args: &[&str]| {
        let mut c = Command::new("timeout");
        c.args(["20", "unshare", "-fp", "--mount-proc", launcher().to_str().unwrap()]).args(args).env_remove("TSPROXY_PROXY").env_remove("TSPROXY_SUPERVISOR");
        c
    };
    let out = ns(&["python3", "-S", "-c", WAIT_ALL_PY]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "reaped 1 pid 2 ppid 1", "{}", text(&out));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = ns(&["sh", "-c", "exit 7"]).output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", text(&out));
    let out = ns(&["sh", "-c", "kill -9 $$"]).output().unwrap();
    assert_eq!(out.status.code(), Some(137), "{}", text(&out));
    // The init is not in the command's process group: a signal the command sends to its group
    // (`kill 0`; here SIGWINCH, which timeout and unshare, in that group too, ignore) reaches
    // it once, not again through the init; the command stays in the group it was started in
    // (timeout's, which does not lead it), as with the supervisor off.
    let py = "import os, signal, time\nn = [0]\nsignal.signal(signal.SIGWINCH, lambda s, f: n.__setitem__(0, n[0] + 1))\nos.kill(0, signal.SIGWINCH)\ntime.sleep(0.5)\nprint('sigwinch', n[0], os.getpgrp() == os.getpid(), os.getpgid(1) == os.getpgrp())";
    let out = ns(&["python3", "-S", "-c", py]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "sigwinch 1 False False", "{}", text(&out));
    let out = ns(&["--supervisor=off", "python3", "-S", "-c", py]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "sigwinch 1 False True", "{}", text(&out));
    let out = ns(&["--supervisor=off", "sh", "-c", "echo $$"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1", "{}", text(&out));
    // A SIGTERM for the init (what `docker stop` sends) reaches the command.
    let py = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda s, f: (print('got', s, flush=True), sys.exit(3)))\nprint('ready', flush=True)\ntime.sleep(10)";
    let mut child = ns(&["python3", "-S", "-c", py]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line, "ready\n");
    // timeout -> unshare -> the init (pid 1 inside).
    let kids = |p: u32| {
        std::fs::read_to_string(format!("/proc/{p}/task/{p}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .map(|k| k.parse::<u32>().unwrap())
            .collect::<Vec<_>>()
    };
    let unshare = kids(child.id())[0];
    let init = kids(unshare)[0];
    // SAFETY: kill has no memory arguments.
    unsafe { libc::kill(init as i32, libc::SIGTERM) };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "got 15\n");
    assert_eq!(child.wait().unwrap().code(), Some(3));
}

/// A launcher that is a child subreaper (PR_SET_CHILD_SUBREAPER survives exec) would have the
/// supervisor handed back to it too: it stops being one while the supervisor is orphaned and is
/// one again before the exec (wrapper/src/init.rs). The command keeps the pid it was started
/// with and its subreaper flag, finds no supervisor among its children, and dies of its own
/// signals.
#[test]
fn as_a_subreaper_the_launcher_hands_the_supervisor_on() {
    let exec = |cmd: &[&str]| {
        let py =
            "import ctypes, os, sys\nctypes.CDLL(None).prctl(36, 1, 0, 0, 0)\nprint('launcher', os.getpid(), flush=True)\nos.execv(sys.argv[1], sys.argv[1:])";
        Command::new("timeout")
            .args(["20", "python3", "-S", "-c", py, launcher().to_str().unwrap()])
            .args(cmd)
            .env_remove("TSPROXY_PROXY")
            .env_remove("TSPROXY_SUPERVISOR")
            .output()
            .unwrap()
    };
    let wait_all = WAIT_ALL_PY.to_string() + "import ctypes\nv = ctypes.c_int()\nctypes.CDLL(None).prctl(37, ctypes.byref(v))\nprint('subreaper', v.value)\n";
    let out = exec(&["python3", "-S", "-c", &wait_all]);
    let said = String::from_utf8_lossy(&out.stdout);
    let pid = said.lines().next().and_then(|l| l.strip_prefix("launcher ")).unwrap_or("?").to_string();
    assert!(said.contains(&format!("reaped 1 pid {pid} ")), "{}", text(&out));
    assert!(said.contains("subreaper 1"), "{}", text(&out));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = exec(&["sh", "-c", "kill -TERM $$"]);
    // timeout(1) passes a signal death on as the same signal.
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&out.status), Some(libc::SIGTERM), "{}", text(&out));
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

/// Python for a supervised command to look at its supervisor: `owner()`, the process holding
/// the DNS responder socket named in the command's environment (another than the caller), and
/// `fds(pid)`, its descriptors and what they point at.
const SUPERVISOR_PY: &str = r#"
import os, socket, sys, time
port = int(os.environ['TSPROXY_SUPERVISOR_DNS'].rsplit(':', 1)[1])
def owner():
    inode = None
    for l in open('/proc/net/udp').read().splitlines()[1:]:
        f = l.split()
        if int(f[1].split(':')[1], 16) == port:
            inode = f[9]
    for p in os.listdir('/proc'):
        if not p.isdigit() or int(p) == os.getpid(): continue
        try:
            for fd in os.listdir('/proc/%s/fd' % p):
                if os.readlink('/proc/%s/fd/%s' % (p, fd)) == 'socket:[%s]' % inode:
                    return int(p)
        except OSError:
            pass
def fds(s):
    out = {}
    for f in os.listdir('/proc/%d/fd' % s):
        try: out[int(f)] = os.readlink('/proc/%d/fd/%s' % (s, f))
        except OSError: pass
    return out
"#;

/// The supervisor is started by clones that wait for the launcher's exec
/// (wrapper/src/supervisor/spawn.rs). What the command can see of it: nothing among its
/// children (no `wait`, `__WALL` included, reports it; no `pkill -P` reaches it); the
/// supervisor itself (found by the DNS responder port the command is given) is in a session of
/// its own, its argument area scrubbed, holding none of the descriptors the command was given
/// (here an extra fd 3), /dev/null as its stdin/stdout, SIGPIPE and the terminal's signals
/// ignored.
#[test]
fn supervisor_is_nobodys_child_and_holds_nothing_of_the_command() {
    let script = SUPERVISOR_PY.to_string()
        + r#"
me = os.getpid()
kids = open('/proc/self/task/%d/children' % me).read().split()
assert kids == [], kids
try:
    os.waitpid(-1, os.WNOHANG | 0x40000000)  # __WALL
    print('a child to wait for')
except ChildProcessError:
    pass
deadline = time.time() + 5
def state(s):
    return open('/proc/%d/cmdline' % s, 'rb').read(), fds(s)
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
        .args(["-c", "exec 3</etc/hostname; exec \"$0\" --supervisor=on python3 -c \"$1\"", launcher().to_str().unwrap(), &script])
        .env_remove("TSPROXY_PROXY")
        .env("TSPROXY_LOG", "error")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("quiet ok"), "{}", text(&out));
    assert!(out.status.success(), "{}", text(&out));
}

/// The supervisor starts lazily (wrapper/src/supervisor/spawn.rs, `idle`): until the tree makes
/// a socket call the filter stops or asks the DNS responder something, the supervisor's process
/// is one thread asleep in `poll`, holding only /dev/null on 0-2, the listener, the responder and
/// a pidfd of the command (for its log lines, stderr.rs), in / — no worker threads, no
/// DNS-over-TCP socket, no file read. A datagram to
/// the responder wakes it: then its threads start (and the tree is served as before).
#[test]
fn supervisor_sleeps_until_the_tree_needs_it() {
    let script = SUPERVISOR_PY.to_string()
        + r#"
def threads(s):
    return int([l for l in open('/proc/%d/status' % s) if l.startswith('Threads:')][0].split()[1])
deadline = time.time() + 5
s = None
while time.time() < deadline:
    s = owner()
    if s and open('/proc/%d/cmdline' % s, 'rb').read().startswith(b'tsproxy-supervisor') and fds(s).get(0) == '/dev/null':
        break
    time.sleep(0.02)
assert s, 'no supervisor'
time.sleep(0.2)
f = fds(s)
print('asleep threads=%d fds=%d' % (threads(s), len(f)))
assert threads(s) == 1, threads(s)
others = sorted(t for n, t in f.items() if n > 2)
assert len(others) == 3 and any('seccomp' in t for t in others) and any(t.startswith('socket:') for t in others) and any('pidfd' in t for t in others), f
assert all(f.get(n) == '/dev/null' for n in (0, 1, 2)), f
assert os.readlink('/proc/%d/cwd' % s) == '/', os.readlink('/proc/%d/cwd' % s)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b'\0' * 12, ('127.0.0.1', port))
deadline = time.time() + 5
while threads(s) == 1 and time.time() < deadline:
    time.sleep(0.02)
print('awake threads=%d' % threads(s))
assert threads(s) > 1
print('lazy ok')
"#;
    // The command must make no socket call of its own before the datagram, whatever the
    // environment the tests run in: any NSS lookup does one (glibc connects to nscd's AF_UNIX
    // socket through its internal connect, which the filter stops and which rightly wakes the
    // supervisor). Under CI, without HOME and PYENV_ROOT, a pyenv shim first on PATH is a bash
    // script that looks up the home directory; Python's site module does the same without HOME.
    // So: the system's interpreter by its path, with `-S`, in an environment of our own.
    let python = ["/usr/bin/python3", "/bin/python3"].into_iter().find(|p| std::path::Path::new(p).exists()).unwrap_or("python3");
    let out = Command::new(launcher())
        .args(["--supervisor=on", python, "-S", "-c", &script])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("TSPROXY_LOG", "error")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("lazy ok"), "{}", text(&out));
    assert!(out.status.success(), "{}", text(&out));
}

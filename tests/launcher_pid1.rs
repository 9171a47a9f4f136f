//! The launcher as pid 1 of a pid namespace (wrapper/src/init.rs) and the terminal: the command
//! keeps the terminal, its job control and its pipeline as without the init, whether the init
//! leads its process group (a container's session leader) or not (`unshare -fp` in a shell).
//! Each case runs with `--supervisor=off` too (the command is then pid 1 itself), as the
//! control. Found by a review of the first version, which moved the command to a group of its
//! own and handed it the terminal whenever descriptor 0's foreground group read as ours
//! (under `unshare -fp` both read 0: always), and never gave it back. Root only (unshare -p);
//! every child is bounded by `timeout`.
mod common;

use common::*;
use std::process::{Command, Output, Stdio};

fn root_with_unshare() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: unshare -p needs root");
        return false;
    }
    let probe = Command::new("unshare").args(["-fp", "--mount-proc", "true"]).output();
    let ok = probe.as_ref().is_ok_and(|o| o.status.success());
    let script = Command::new("sh").args(["-c", "command -v script"]).output().is_ok_and(|o| o.status.success());
    if !ok || !script {
        // The root tier (make test as root) requires them, as it requires network namespaces.
        assert!(std::env::var_os("TSPROXY_REQUIRE_NETNS").is_none(), "unshare -fp or script(1) missing: {probe:?}");
        eprintln!("skipped: unshare -fp or script(1) missing");
    }
    ok && script
}

/// Run `body` (sh) as the session leader of a fresh pty (`script -qec`), with $T the launcher
/// and $PROBE a python3 program that says whether it is in the terminal's foreground: with
/// SIGTTIN ignored, a non-blocking read of the terminal gives EIO in a background group and
/// EAGAIN (or data / EOF) in the foreground one.
fn in_pty(name: &str, body: &str) -> Output {
    let dir = std::env::temp_dir().join(format!("tsp-pid1-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("body.sh");
    std::fs::write(&file, body).unwrap();
    let probe = r#"
import errno, fcntl, os, signal, sys, time
signal.signal(signal.SIGTTIN, signal.SIG_IGN)
time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0)
fd = os.open(sys.argv[1] if len(sys.argv) > 1 else '/dev/tty', os.O_RDONLY | os.O_NONBLOCK)
try:
    os.read(fd, 1)
    print('PROBE foreground', flush=True)
except OSError as e:
    print('PROBE', 'background' if e.errno == errno.EIO else 'foreground', flush=True)
"#;
    std::fs::write(dir.join("probe.py"), probe).unwrap();
    let out = Command::new("timeout")
        .args(["30", "script", "-qec", &format!("sh {}", file.display()), "/dev/null"])
        .env("T", launcher())
        .env("PROBE", dir.join("probe.py"))
        .env_remove("TSPROXY_PROXY")
        .env_remove("TSPROXY_SUPERVISOR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    out
}

fn says(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).replace('\r', "")
}

/// A launcher started in the background (a shell job with `&`) leaves the terminal to the
/// shell: the command is in the background, as without the init. (The first version took it:
/// an interactive bash then exited on the EIO.)
#[test]
fn pid1_started_in_the_background_does_not_take_the_terminal() {
    if !root_with_unshare() {
        return;
    }
    let body = r#"
python3 -S -c '
import os, sys
os.setpgid(0, 0)   # a background group of this session, as a job started with &
os.execvp(sys.argv[1], sys.argv[1:])' unshare -fp --mount-proc $T "$@" python3 -S $PROBE /dev/tty
python3 -S $PROBE /dev/tty 0 | sed 's/PROBE/AFTER/'
"#;
    for mode in ["--supervisor=off", "--supervisor=on"] {
        let out = in_pty("bg", &body.replace("\"$@\"", mode));
        let s = says(&out);
        assert!(s.contains("PROBE background"), "{mode}: the background command is in the terminal's foreground: {s}");
        assert!(s.contains("AFTER foreground"), "{mode}: the shell lost its terminal: {s}");
    }
}

/// When the command ends, its caller (here a script without job control that ran
/// `unshare -fp tsproxy CMD` in the foreground) can still read its terminal. (The first
/// version left the terminal to the command's empty group: EIO. tini does that too.)
#[test]
fn pid1_gives_the_terminal_back_when_the_command_ends() {
    if !root_with_unshare() {
        return;
    }
    for mode in ["--supervisor=off", "--supervisor=on"] {
        let body = format!("unshare -fp --mount-proc $T {mode} true\npython3 -S $PROBE /dev/tty\n");
        let out = in_pty("after", &body);
        let s = says(&out);
        assert!(s.contains("PROBE foreground"), "{mode}: after the command, its caller lost the terminal: {s}");
    }
}

/// The rest of the caller's pipeline keeps the terminal while the command runs
/// (`unshare -fp tsproxy CMD | less`: the first version stopped `less` with "Stopped (tty
/// input)" at once; here the pipeline's reader got EIO).
#[test]
fn pid1_the_rest_of_the_pipeline_keeps_the_terminal() {
    if !root_with_unshare() {
        return;
    }
    for mode in ["--supervisor=off", "--supervisor=on"] {
        let body = format!("unshare -fp --mount-proc $T {mode} sleep 2 | python3 -S $PROBE /dev/tty 0.7\n");
        let out = in_pty("pipe", &body);
        let s = says(&out);
        assert!(s.contains("PROBE foreground"), "{mode}: the pipeline's other member lost the terminal: {s}");
    }
}

/// With stdin piped (`echo x | unshare -fp tsproxy CMD`) the command can still read its
/// terminal (a password prompt, `less`'s keys). (The first version judged by descriptor 0
/// alone and left the command in a background group of its own: stopped by SIGTTIN for
/// good, since nobody could `fg` it.)
#[test]
fn pid1_command_with_piped_stdin_can_read_its_terminal() {
    if !root_with_unshare() {
        return;
    }
    for mode in ["--supervisor=off", "--supervisor=on"] {
        let body = format!("echo piped | unshare -fp --mount-proc $T {mode} python3 -S $PROBE /dev/tty\n");
        let out = in_pty("stdin", &body);
        let s = says(&out);
        assert!(s.contains("PROBE foreground"), "{mode}: the command cannot read its terminal: {s}");
    }
}

/// A container's pid 1 is a session leader with the terminal (`docker run -it`): the init
/// cannot leave its group, so the command gets a group of its own and the terminal's
/// foreground (as tini does). It reads the terminal, a Ctrl-C reaches it once, its status is
/// the init's; with `--supervisor=off` it is pid 1 itself and the same holds.
#[test]
fn pid1_as_a_session_leader_hands_the_terminal_to_the_command() {
    if !root_with_unshare() {
        return;
    }
    // Outside: a pty; inside, pid 1 (python) makes itself a session leader with the pty as its
    // controlling terminal and execs the launcher.
    let drive = r#"
import os, select, sys, time
m, s = os.openpty()
pid = os.fork()
if pid == 0:
    os.setsid()
    for fd in (0, 1, 2): os.dup2(s, fd)
    os.close(m); os.close(s)
    lead = "import fcntl, os, sys, termios; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0); os.execvp(sys.argv[1], sys.argv[1:])"
    os.execvp('unshare', ['unshare', '-fp', '--mount-proc', 'python3', '-S', '-c', lead] + sys.argv[1:])
os.close(s)
out = b''
def drain(until, t):
    global out
    end = time.time() + t
    while until not in out and time.time() < end:
        r, _, _ = select.select([m], [], [], max(0, end - time.time()))
        if r:
            try: d = os.read(m, 4096)
            except OSError: return
            if not d: return
            out += d
drain(b'ready', 10)
os.write(m, b'\x03')
drain(b'no such text: to the end', 10)
_, st = os.waitpid(pid, 0)
print(out.decode(errors='replace').replace('\r', ''), 'status', os.waitstatus_to_exitcode(st))
"#;
    let cmd = r#"
import errno, os, signal, time
n = [0]
signal.signal(signal.SIGINT, lambda s, f: n.__setitem__(0, n[0] + 1))
signal.signal(signal.SIGTTIN, signal.SIG_IGN)
fd = os.open('/dev/tty', os.O_RDONLY | os.O_NONBLOCK)
try:
    os.read(fd, 1); where = 'foreground'
except OSError as e:
    where = 'background' if e.errno == errno.EIO else 'foreground'
print('PROBE', where, 'pid', os.getpid(), 'ready', flush=True)
end = time.time() + 5
while n[0] == 0 and time.time() < end:
    time.sleep(0.05)
time.sleep(0.3)
print('sigint', n[0], flush=True)
raise SystemExit(5)
"#;
    for (mode, pid) in [("--supervisor=off", "1"), ("--supervisor=on", "2")] {
        let out = Command::new("timeout")
            .args(["30", "python3", "-S", "-c", drive, launcher().to_str().unwrap(), mode, "python3", "-S", "-c", cmd])
            .env_remove("TSPROXY_PROXY")
            .env_remove("TSPROXY_SUPERVISOR")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(s.contains(&format!("PROBE foreground pid {pid} ready")), "{mode}: {}", text(&out));
        assert!(s.contains("sigint 1"), "{mode}: a Ctrl-C did not reach the command exactly once: {}", text(&out));
        assert!(s.trim_end().ends_with("status 5"), "{mode}: {}", text(&out));
    }
}

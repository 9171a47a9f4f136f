//! Adversarial review of the launcher's start-up (issue 13 part 6: the supervisor cloned with
//! CLONE_VM|CLONE_FILES and exit signal 0, gated on the launcher's clear-child-tid word; the
//! filter's range tests; the launcher's own C `main`). No-root tier: loopback only, the
//! in-process SOCKS5 server of tests/common, static clients built with `cc -static` (the
//! supervisor alone can reach them). Every child runs under a time bound.
//!
//! Tests whose comment starts "DEFECT" failed on the first version of that start (main at
//! 8ce39ff) and pass since the fixes (two clones so that the supervisor is nobody's child, its
//! session and signals set before the launcher's exec, the listener armed only across the
//! execve system call, the supervisor's descriptors above 0-2); the others passed there too
//! and guard something checked during the review.
mod common;

use common::child::{bounded, Run};
use common::*;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// The filter, compiled here as it is in the launcher, for the exhaustive comparison below.
// (Its own unit tests come along and run here too.)
#[allow(dead_code)]
#[path = "../wrapper/src/supervisor/filter.rs"]
mod filter;

/// A C program compiled once per test process into target/<profile>/c-harness/NAME, with
/// `extra` flags (`-static`). The sources live here: each is the reproducer of one finding.
fn cprog(name: &str, src: &str, extra: &[&str]) -> Option<PathBuf> {
    if Command::new("sh").args(["-c", "command -v cc"]).output().map(|o| !o.status.success()).unwrap_or(true) {
        eprintln!("skipped: no cc");
        return None;
    }
    let dir = target_dir().join("c-harness");
    std::fs::create_dir_all(&dir).unwrap();
    let c = dir.join(format!("{name}.c"));
    let out = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    std::fs::write(&c, src).unwrap();
    let o = Command::new("cc").args(["-O2", "-Wall", "-o"]).arg(&tmp).arg(&c).args(extra).output().expect("cc");
    if !o.status.success() && extra.contains(&"-static") {
        eprintln!("skipped: cc -static failed: {}", String::from_utf8_lossy(&o.stderr));
        return None;
    }
    assert!(o.status.success(), "cc {name}: {}", String::from_utf8_lossy(&o.stderr));
    std::fs::rename(&tmp, &out).unwrap();
    Some(out)
}

/// The launcher with the supervisor on, the test SOCKS5 server as the proxy, nothing else
/// configured. The static client's 100.64.0.2:7 is the banner peer through that proxy.
fn supervised() -> Command {
    let mut c = Command::new(launcher());
    for k in TSPROXY_ENV {
        c.env_remove(k);
    }
    c.env_remove("LD_PRELOAD").args(["--supervisor=on", "--proxy", &net().socks.url()]);
    c
}

/// The supervisor answered the static client's connect: it got the banner peer's greeting
/// through the proxy. (Without a supervisor the connect fails with ENOSYS: errno=OTHER.)
fn reached(r: &Run) -> bool {
    r.stdout.lines().any(|l| l == "reply=HELLO tailnet")
}

fn client() -> Option<String> {
    static_tcpclient().map(|p| p.to_string_lossy().into_owned())
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

// ---------------------------------------------------------------- descriptors 0-2

/// DEFECT (fixed): the launcher no longer reopens closed descriptors 0-2 (std's start-up did), so the
/// DNS responder's socket and the seccomp listener take the lowest free numbers: with stdin
/// closed the responder is fd 0, with stdout closed too the listener is fd 1. The supervisor
/// then dup2()s /dev/null over its own fds 0 and 1 (`supervise`): the responder (or the
/// listener) is replaced, `notify::run` returns at once (`responder.local_addr()` fails), the
/// supervisor exits and stays a zombie child of the command, and every supervised connect of
/// the tree fails with ENOSYS. `cmd <&-` (or `>&-`, as some daemons' start scripts do) is
/// enough. Suggested fix: move the responder and the listener above 2 in the launcher
/// (F_DUPFD_CLOEXEC from 3) — or reopen closed 0-2 on /dev/null before anything else, as std
/// did — and never dup2 over a kept descriptor in `supervise`.
#[test]
fn review_closed_stdin_or_stdout_at_launch_leaves_the_supervisor_working() {
    let Some(c) = client() else { return };
    let mut bad = Vec::new();
    // The command moves its output back to fd 1 from fd 3 (the test's pipe) so the client can
    // report, whatever was closed at launch.
    for closed in ["<&-", ">&-", "<&- >&-", "<&- >&- 2>&-", "2>&-"] {
        let l = launcher();
        let script = format!(
            "exec {l} --supervisor=on --proxy {proxy} sh -c 'exec 1>&3 3>&-; exec {c} -r 100.64.0.2 7' {closed}",
            l = sh_quote(&l.to_string_lossy()),
            proxy = sh_quote(&net().socks.url()),
            c = c,
        );
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &format!("exec 3>&1; {script}")]);
        for k in TSPROXY_ENV {
            cmd.env_remove(k);
        }
        cmd.env_remove("LD_PRELOAD");
        let r = bounded(cmd, 10);
        if !reached(&r) {
            bad.push(format!("{closed}: {}", r.text()));
        }
    }
    assert!(bad.is_empty(), "supervised connect failed with these descriptors closed at launch:\n{}", bad.join("\n"));
}

/// Guard (passes): descriptors above 1023 at launch. The listener lands above 1023 (fds 0 to
/// 1100 are taken); the supervisor polls it with poll(), not select(), and closes every
/// inherited descriptor with close_range. A regression to select() or a fixed-size fd set
/// would fail here.
#[test]
fn review_listener_above_fd_1023_works() {
    let Some(c) = client() else { return };
    let mut cmd = supervised();
    cmd.args([&c, "-r", "100.64.0.2", "7"]);
    // SAFETY: between fork and exec only async-signal-safe calls (setrlimit, dup2) on fds of
    // the child; failures are reported through the return value.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 4096, rlim_max: 4096 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            for fd in 3..=1100 {
                if libc::dup2(0, fd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let r = bounded(cmd, 10);
    assert!(reached(&r), "{}", r.text());
}

// ---------------------------------------------------------------- the command's children

const REAP_ALL: &str = r#"
/* Fork a child, then reap every child: wait4(-1, __WALL) until ECHILD, as an init, a
 * process supervisor or a tracer does. Exits 0 at ECHILD; alarm(4) ends a hang (142). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void) {
    pid_t c = fork();
    if (c == 0) _exit(3);
    alarm(4);
    for (;;) {
        int st;
        pid_t p = wait4(-1, &st, __WALL, 0);
        if (p < 0) { printf("done errno=%d\n", errno); return errno == ECHILD ? 0 : 1; }
        printf("reaped %s\n", p == c ? "child" : "other");
        fflush(stdout);
    }
}
"#;

/// DEFECT (fixed): the supervisor is a live child of the command for the command's whole life (it
/// ends when the tree, the command included, is gone). A command that reaps all its children
/// with __WALL (or __WCLONE) until ECHILD — an init or service manager, a tracer — waits for
/// the supervisor, which waits for the command: a deadlock, where --supervisor=off and the
/// former double-forked supervisor (nobody's child) return at once. Suggested fix: the clone
/// child, after the gate, forks the real supervisor and exits (a fork of the launcher's old
/// memory, beside the command, off its start-up path): the command then holds at most a
/// zombie that any wait reports at once, and the supervisor is reparented to init or the
/// subreaper as before.
#[test]
fn review_command_reaping_all_children_with_wall_never_waits_for_the_supervisor() {
    let Some(reap) = cprog("review_reap_all", REAP_ALL, &[]) else { return };
    let mut off = supervised();
    off.arg("--supervisor=off").arg(&reap);
    let r = bounded(off, 10);
    assert!(r.ok() && r.stdout.contains("done"), "--supervisor=off: {}", r.text());
    let mut on = supervised();
    on.arg(&reap);
    let r = bounded(on, 10);
    assert!(r.ok() && r.stdout.contains("done"), "with the supervisor the command's wait4(-1, __WALL) never ends: {}", r.text());
}

/// DEFECT (fixed; same cause, a real program): `tsproxy strace CMD` never ends: strace waits for
/// all its children with wait4(-1, __WALL), the supervisor is one of them and outlives CMD.
/// Even `timeout`'s SIGTERM does not end it. (`strace tsproxy CMD` is fine.)
#[test]
fn review_strace_as_the_command_ends() {
    if Command::new("sh").args(["-c", "command -v strace"]).output().map(|o| !o.status.success()).unwrap_or(true) {
        eprintln!("skipped: no strace");
        return;
    }
    let mut off = supervised();
    off.args(["--supervisor=off", "strace", "-o", "/dev/null", "sh", "-c", "exit 4"]);
    let r = bounded(off, 10);
    assert_eq!(r.code(), Some(4), "--supervisor=off: {}", r.text());
    let mut on = supervised();
    on.args(["strace", "-o", "/dev/null", "sh", "-c", "exit 4"]);
    let r = bounded(on, 10);
    assert_eq!(r.code(), Some(4), "strace under the supervisor: {}", r.text());
}

/// DEFECT (fixed): `pkill -P $$` (a script cleaning up its background jobs) now reaches the
/// supervisor, a child of the command in /proc/PID/task/*/children: it dies of SIGTERM and
/// the tree's next supervised connect fails with ENOSYS. With the former double fork the
/// supervisor was nobody's child. (Fix: as for the __WALL deadlock, the supervisor must not
/// be the command's child; failing that, it should at least ignore SIGTERM/SIGINT/SIGHUP —
/// it ends by POLLHUP anyway — which would not help against SIGKILL.)
#[test]
fn review_pkill_of_the_commands_children_spares_the_supervisor() {
    let Some(c) = client() else { return };
    if Command::new("sh").args(["-c", "command -v pkill"]).output().map(|o| !o.status.success()).unwrap_or(true) {
        eprintln!("skipped: no pkill");
        return;
    }
    let mut cmd = supervised();
    cmd.args(["sh", "-c", &format!("sleep 30 & pkill -P $$; wait; sleep 0.2; exec {c} -r 100.64.0.2 7")]);
    let r = bounded(cmd, 10);
    assert!(reached(&r), "after pkill -P $$: {}", r.text());
}

const KILL_GROUP: &str = r#"
/* First thing: SIGINT to our own process group (what Ctrl-C in a terminal or `kill -INT 0`
 * does), ignored here; then exec the command line after the "--" 50 ms later (what comes
 * before it is padding). REVIEW_NO_KILL set: no signal (the control run). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    signal(SIGINT, SIG_IGN);
    if (!getenv("REVIEW_NO_KILL")) kill(0, SIGINT);
    usleep(50000);
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--") == 0) { execv(argv[i + 1], argv + i + 1); return 127; }
    return 126;
}
"#;

/// DEFECT (fixed): until the supervisor runs `setsid` (then: after the gate, after its
/// argument scrub's /proc reads and writes) it is in the command's process group. A signal to that group right at
/// the start — Ctrl-C in a terminal, `kill 0`, a job-control shell — kills the supervisor
/// (default dispositions) while a command that ignores or handles it goes on, its connects
/// failing with ENOSYS (and the dead supervisor stays a zombie child of the command). Seen
/// here in 26 of 30 runs with this static C program, about half of the runs with
/// `sh -c 'trap "" INT; kill -INT 0; ...'`. Suggested fix: setsid in the child before the
/// gate (the bare system call, like the futex wait: no errno), so the window closes before
/// the exec; the launcher's own group then holds only the launcher.
#[test]
fn review_signal_to_the_process_group_at_start_spares_the_supervisor() {
    let Some(c) = client() else { return };
    let Some(k) = cprog("review_kill_group", KILL_GROUP, &["-static"]) else { return };
    let pad = "x".repeat(120_000);
    let run = |control: bool| {
        let mut cmd = supervised();
        // 840 KB of arguments: in the version this found, the supervisor's argument scrub,
        // before its setsid, overwrote them through /proc/self/mem, which widened the window
        // from tens of microseconds (the race was then lost in anywhere from 10% to 90% of
        // runs, depending on scheduling) to a few hundred. (The scrub now writes the memory
        // directly, after the gate; setsid comes before the gate.)
        cmd.arg(&k).args(std::iter::repeat(&pad).take(7)).args(["--", &c, "-r", "100.64.0.2", "7"]);
        if control {
            cmd.env("REVIEW_NO_KILL", "1");
        }
        // bounded() makes the launcher a process-group leader: the group is the command's.
        bounded(cmd, 10)
    };
    let r = run(true);
    assert!(reached(&r), "control run (no signal): {}", r.text());
    // Up to 20 runs, 20 s, stopping at the first lost supervisor.
    let t_end = Instant::now() + Duration::from_secs(20);
    let mut runs = 0;
    while runs < 20 && Instant::now() < t_end {
        runs += 1;
        let r = run(false);
        assert!(reached(&r), "run {runs}: the supervisor was lost to the command's SIGINT to its group: {}", r.text());
    }
}

/// Guard (passes): SIGTERM to the command ends it with that signal (exit status is the
/// command's) and the supervisor ends with it (POLLHUP on the listener): nothing of the
/// tree is left behind.
#[test]
fn review_sigterm_to_the_command_ends_the_supervisor_too() {
    let mut c = supervised();
    c.args(["sleep", "30"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    let pid = child.id() as i32;
    let t0 = Instant::now();
    let sup = loop {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.starts_with(b"sleep") {
            if let Some(s) = supervisor_of(pid) {
                break s;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "no supervisor seen");
        std::thread::sleep(Duration::from_millis(5));
    };
    let kids = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    assert!(kids.trim().is_empty(), "the command has children: {kids:?}");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let st = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGTERM));
    let t0 = Instant::now();
    while alive(sup, None) && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!alive(sup, None), "supervisor {sup} still running after its command died");
}

/// The process is there and not a zombie (and, given `start`, started at that time: not a
/// reused pid).
fn alive(pid: i32, start: Option<&str>) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { return false };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let state = f.first().copied().unwrap_or("X");
    state != "Z" && state != "X" && start.map_or(true, |s| f.get(19).copied() == Some(s))
}

fn starttime(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19).map(str::to_string)
}

// ---------------------------------------------------------------- the launcher killed

/// DEFECT (fixed): the launcher killed (SIGKILL to its pid: the OOM killer, `kill -9 PID`, `timeout
/// -s KILL`) between `set_listener` and its exec. The gate opens at its exit as at an exec and
/// the listener is recorded, so the child runs the supervisor in the launcher's memory as the
/// kill left it: in the middle of `std::env::set_var` (std's environment lock write-held: the
/// supervisor blocks forever in `env::var_os("RUST_MIN_STACK")` when it starts its first
/// thread — a process stuck for good) or of malloc ("Fatal glibc error: malloc assertion
/// failure in sysmalloc": SIGABRT, and a core dump of the launcher's memory, `--proxy`
/// password included, where core dumps are on). Seen: 2 stuck and 5 aborts in 300 launches
/// killed after a random 0-1 ms (a Python loop); 6 stuck and 16 aborts in 3000 here. The
/// comment in spawn.rs ("no lock of libc or std was held") holds for an exec, not for an exit.
/// Suggested fix: record the listener only immediately before a raw execve system call, with
/// argv and envp (and the PATH search's candidates) built beforehand — no allocation, no lock
/// between `set_listener` and execve — and clear it right after a failed execve. (The child
/// cannot cheaply tell an exec from an exit once woken: the launcher's exit_notify comes after
/// the wake.)
///
/// Bounded: at most 3000 launches or 40 s (about 8 s here); each launcher is killed a random
/// 0-80 µs after its status shows the filter installed, most of them before their exec.
#[test]
fn review_launcher_killed_at_start_leaves_no_stuck_or_crashed_supervisor() {
    let errlog = target_dir().join(format!("review-killed-{}.err", std::process::id()));
    let t_end = Instant::now() + Duration::from_secs(40);
    // Every process of this test's launchers carries this in its environment (the supervisor
    // too: its memory is the launcher's), and nothing else does.
    let marker = std::process::id().to_string();
    let mut runs = 0;
    let mut before_exec = 0;
    let mut seed = std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    while runs < 3000 && Instant::now() < t_end {
        runs += 1;
        let err = std::fs::OpenOptions::new().create(true).append(true).open(&errlog).unwrap();
        let mut c = supervised();
        c.args(["sleep", "5"]).env("REVIEW_KILLED_AT_START", &marker).stdin(Stdio::null()).stdout(Stdio::null()).stderr(err).process_group(0);
        let mut child = c.spawn().unwrap();
        let pid = child.id() as i32;
        // Spin until the launcher is under its filter (`Seccomp: 2` in its status: the clone
        // child exists and the listener is about to be recorded), then a random 0-80 µs more:
        // the launcher is then in set_var, Command::new or the exec.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let extra = Duration::from_micros(seed % 80);
        let t0 = Instant::now();
        let mut filtered = false;
        while t0.elapsed() < Duration::from_millis(200) {
            match std::fs::read_to_string(format!("/proc/{pid}/status")) {
                Ok(s) if s.lines().any(|l| l.starts_with("Seccomp:") && l.ends_with('2')) => {
                    filtered = true;
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if filtered {
            let t1 = Instant::now();
            while t1.elapsed() < extra {}
        }
        let pre = filtered && std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.starts_with(b"sleep"));
        // The launcher alone (as the OOM killer, `kill -9 PID` or `timeout -s KILL` do): a kill
        // of its group would take the clone child, still in that group, with it.
        // SAFETY: kill(2) on our own child, not yet waited for.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        before_exec += pre as u32;
        let _ = child.wait();
    }
    // Supervisors are nobody's children (init's, or a subreaper's) and end at once when their
    // launcher is gone without an exec, or when their command is: give them 3 s. Any process
    // still carrying the marker then is a stuck supervisor.
    let needle = format!("REVIEW_KILLED_AT_START={marker}");
    let marked = || -> Vec<(i32, String)> {
        std::fs::read_dir("/proc")
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                    .filter(|p| std::fs::read(format!("/proc/{p}/environ")).is_ok_and(|e| e.split(|&b| b == 0).any(|kv| kv == needle.as_bytes())))
                    .filter_map(|p| Some((p, starttime(p)?)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let sups = marked();
    let t0 = Instant::now();
    let stuck = loop {
        let stuck: Vec<i32> = marked().iter().filter(|(p, st)| alive(*p, Some(st))).map(|(p, _)| *p).collect();
        if stuck.is_empty() || t0.elapsed() > Duration::from_secs(3) {
            break stuck;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let detail: Vec<String> = stuck
        .iter()
        .map(|p| {
            let wchan = std::fs::read_to_string(format!("/proc/{p}/wchan")).unwrap_or_default();
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            format!("{p} {} wchan={wchan}", String::from_utf8_lossy(&cmd).replace('\0', " ").trim())
        })
        .collect();
    for p in &stuck {
        // SAFETY: kill(2) on a supervisor this test started, still alive with the start time
        // recorded above (not a reused pid).
        unsafe { libc::kill(*p, libc::SIGKILL) };
    }
    eprintln!("{runs} launches, {} marked processes alive right after the last kill, {before_exec} killed before the exec", sups.len());
    let errs = std::fs::read_to_string(&errlog).unwrap_or_default();
    let _ = std::fs::remove_file(&errlog);
    let crashes = errs.lines().filter(|l| l.contains("Fatal glibc error") || l.contains("panicked")).count();
    assert!(
        stuck.is_empty() && crashes == 0,
        "{runs} launches killed at start ({} marked processes right after): {} supervisors stuck after 3 s: {detail:?}; {crashes} crashes on stderr:\n{}",
        sups.len(),
        stuck.len(),
        errs.lines().take(5).collect::<Vec<_>>().join("\n")
    );
}

// ---------------------------------------------------------------- the filter

/// The rule written plainly: the former program (x32 bit tested first, then one Jeq per
/// syscall) as a function.
fn plain_rule(nr: u32, arch: u32, args: [u64; 6]) -> u32 {
    use filter::*;
    let mark = (tsproxy_core::sys::SECCOMP_MARK >> 32) as u32;
    let hi = |i: usize| (args[i] >> 32) as u32;
    let lo = |i: usize| args[i] as u32;
    if arch != AUDIT_ARCH_X86_64 || nr & X32_SYSCALL_BIT != 0 {
        return DENY_ABI;
    }
    match nr as i64 {
        libc::SYS_connect | libc::SYS_sendmsg => {
            if hi(2) == mark {
                RET_ALLOW
            } else {
                RET_NOTIFY
            }
        }
        libc::SYS_sendto => {
            if hi(5) == mark || (lo(4) == 0 && hi(4) == 0) {
                RET_ALLOW
            } else {
                RET_NOTIFY
            }
        }
        libc::SYS_sendmmsg => RET_NOTIFY,
        libc::SYS_io_uring_setup | libc::SYS_io_uring_enter | libc::SYS_io_uring_register => DENY_IO_URING,
        _ => RET_ALLOW,
    }
}

/// Classic BPF as the kernel runs it: filter.rs's own emulator.
fn run_bpf(prog: &[libc::sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
    filter::emulate(prog, nr, arch, args).0
}

/// Guard (passes): the range-test program gives every syscall number, under every ABI, the
/// verdict of the plain rule — all 2^32 numbers, not a sample. Exhaustive by construction:
/// the program compares nr only against its own constants (Jeq/Jgt/Jge) and tests one bit
/// (0x40000000), so its verdict is constant between consecutive points of {k-1, k, k+1 for
/// every constant k} ∪ {multiples of 2^30 and the numbers just below}; checking all those
/// points and one inside every gap covers every number. Also: x32 numbers 512..=547 and
/// 0..1024 with the x32 bit, i386 (and arch 0), with argument vectors that make each socket
/// call notify or pass (mark, NULL address).
#[test]
fn review_filter_verdicts_equal_the_plain_rule_for_every_number() {
    let prog = filter::filter().unwrap();
    let mut ks: Vec<u32> = Vec::new();
    for i in &prog {
        if matches!(i.code, 0x15 | 0x25 | 0x35) {
            ks.push(i.k);
        }
    }
    let mut pts: Vec<u32> = Vec::new();
    for k in ks {
        pts.extend([k.wrapping_sub(1), k, k.wrapping_add(1)]);
    }
    for q in 0..4u64 {
        pts.push((q << 30) as u32);
        pts.push(((q << 30) as u32).wrapping_sub(1));
    }
    pts.extend([0, u32::MAX]);
    pts.sort_unstable();
    pts.dedup();
    let mut all = pts.clone();
    for w in pts.windows(2) {
        if w[1] - w[0] > 1 {
            all.push(w[0] + (w[1] - w[0]) / 2);
        }
    }
    all.extend(0..1024);
    all.extend((512..=547).map(|n| n | filter::X32_SYSCALL_BIT));
    all.extend((0..1024).map(|n| n | filter::X32_SYSCALL_BIT));
    let m = tsproxy_core::sys::SECCOMP_MARK;
    let argsets: [[u64; 6]; 6] = [
        [3, 0x1000, 16, 0, 0x1000, 16],
        [3, 0x1000, 16 | m, 0, 0x1000, 16 | m],
        [3, 0x1000, m, 0, 0, 0],
        [3, 1, 1, 0, 0, 0],
        [3, 1, 1, 0, 0x7fff_0000_0000, 16],
        [u64::MAX; 6],
    ];
    const AUDIT_ARCH_I386: u32 = 0x4000_0003;
    let mut n = 0u64;
    for &nr in &all {
        for args in argsets {
            for arch in [filter::AUDIT_ARCH_X86_64, AUDIT_ARCH_I386, 0] {
                assert_eq!(run_bpf(&prog, nr, arch, args), plain_rule(nr, arch, args), "nr {nr:#x} arch {arch:#x} args {args:x?}");
                n += 1;
            }
        }
    }
    assert!(n > 10_000, "{n}");
}

/// The same comparison by brute force, every one of the 2^32 numbers under x86_64 with
/// arguments that make the socket calls notify: minutes in a debug build, so ignored; run
/// `cargo test --release --test launcher_review -- --ignored brute_force` (64 s here).
#[test]
#[ignore]
fn review_filter_verdicts_equal_the_plain_rule_brute_force() {
    let prog = filter::filter().unwrap();
    let args = [3, 0x1000, 16, 0, 0x1000, 16];
    let mut nr = 0u32;
    loop {
        assert_eq!(run_bpf(&prog, nr, filter::AUDIT_ARCH_X86_64, args), plain_rule(nr, filter::AUDIT_ARCH_X86_64, args), "nr {nr:#x}");
        if nr == u32::MAX {
            break;
        }
        nr += 1;
    }
}

// ---------------------------------------------------------------- the static launcher

/// Guard (passes): the static launcher run through a symlink from another directory, with
/// the library next to the real binary itself a symlink (the library path is no longer
/// canonicalized): the library is found next to the real binary, preloaded once, and a
/// second copy of the same path in LD_PRELOAD is not added. (Observation, not asserted: an
/// LD_PRELOAD holding the library's canonical path gets the symlink path prepended — two
/// names of one file; glibc loads it once.)
#[test]
fn review_symlinked_launcher_and_library() {
    let dir = target_dir().join(format!("review-links-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("elsewhere")).unwrap();
    std::fs::copy(launcher(), dir.join("bin/tsproxy")).unwrap();
    std::os::unix::fs::symlink(lib(), dir.join("bin/libtsproxy.so")).unwrap();
    std::os::unix::fs::symlink(dir.join("bin/tsproxy"), dir.join("elsewhere/tsproxy")).unwrap();
    let want = dir.join("bin/libtsproxy.so");
    let out = Command::new(dir.join("elsewhere/tsproxy"))
        .args(["--supervisor=on", "sh", "-c", "echo \"$LD_PRELOAD\"; grep -c libtsproxy /proc/self/maps >/dev/null && echo mapped"])
        .env("LD_PRELOAD", &want)
        .env_remove("TSPROXY_PROXY")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(s.lines().next(), Some(want.to_str().unwrap()), "{}", text(&out));
    assert!(s.contains("mapped"), "{}", text(&out));
}

/// Guard (passes): `tsproxy env` and `tsproxy doctor` work from the static launcher (no
/// std start-up, no dynamic loader of its own): env prints the library's path, doctor runs
/// its checks to the end (its exit status reflects the missing tailscaled, not a crash).
#[test]
fn review_env_and_doctor_from_the_static_launcher() {
    let out = Command::new(launcher()).args(["env", "--shell", "sh"]).env_remove("LD_PRELOAD").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&*lib().to_string_lossy()), "{}", text(&out));
    let mut c = Command::new(launcher());
    c.args(["doctor", "--json"]).env("TSPROXY_PROXY", net().socks.url()).env_remove("LD_PRELOAD");
    let r = bounded(c, 20);
    assert!(!r.timed_out && r.signal().is_none() && matches!(r.code(), Some(0 | 1)), "{}", r.text());
    assert!(r.stdout.trim_start().starts_with('{') && r.stdout.contains("supervisor"), "{}", r.text());
}

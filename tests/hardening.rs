//! Hardening regressions (no-root tier): one `#[test]` per known defect, each failing on the
//! build that has the defect. Every child runs under a time bound (killed after N seconds: a
//! hang is a failure, never a hung suite). Network: 127.0.0.1 / ::1 only.
mod common;

use common::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- bounded runs

/// The outcome of a child run under a time bound.
struct Run {
    status: Option<ExitStatus>,
    timed_out: bool,
    secs: f64,
    stdout: String,
    stderr: String,
}

impl Run {
    fn kv(&self) -> HashMap<String, String> {
        self.stdout.lines().filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect()
    }
    fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
    fn signal(&self) -> Option<i32> {
        self.status.and_then(|s| s.signal())
    }
    fn text(&self) -> String {
        format!(
            "status={:?} timed_out={} secs={:.2}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.timed_out, self.secs, self.stdout, self.stderr
        )
    }
    /// Exited normally with status 0 (not killed by a signal or by the time bound).
    fn ok(&self) -> bool {
        !self.timed_out && self.code() == Some(0)
    }
}

/// Run `c` in its own process group; after `secs` kill the group (SIGKILL) and mark the run
/// as timed out. Output is collected for at most 3 s after the child ends (a grandchild that
/// keeps the pipes open cannot hang the test).
fn run(mut c: Command, secs: u64) -> Run {
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let t0 = Instant::now();
    let mut child = c.spawn().expect("spawn");
    let pid = child.id() as i32;
    let collect = |mut r: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut v = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                v.extend_from_slice(&buf[..n]);
                let _ = tx.send(v.clone());
            }
            let _ = tx.send(v);
        });
        rx
    };
    let out = collect(Box::new(child.stdout.take().unwrap()));
    let err = collect(Box::new(child.stderr.take().unwrap()));
    let deadline = t0 + Duration::from_secs(secs);
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() >= deadline {
            timed_out = true;
            // SAFETY: kill(2) on the process group of the child we started.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            break child.wait().ok();
        }
        thread::sleep(Duration::from_millis(10));
    };
    let secs_taken = t0.elapsed().as_secs_f64();
    // SAFETY: as above; whatever of the group is left (a forked child) goes too.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let drain = |rx: mpsc::Receiver<Vec<u8>>| {
        let end = Instant::now() + Duration::from_secs(3);
        let mut last = Vec::new();
        loop {
            match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
                Ok(v) => last = v,
                Err(_) => break,
            }
        }
        String::from_utf8_lossy(&last).into_owned()
    };
    let stdout = drain(out);
    let mut stderr = drain(err);
    if timed_out {
        stderr.push_str(&format!("\n[hardening: killed after {secs} s]\n"));
    }
    Run { status, timed_out, secs: secs_taken, stdout, stderr }
}

const CLEAN_ENV: [&str; 15] = [
    "TSPROXY_PROXY", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy", "TSPROXY_ROUTES", "TSPROXY_DOMAINS", "TSPROXY_LOG",
    "TSPROXY_LOG_FILE", "http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "TSPROXY_CONNECT_TIMEOUT", "TSPROXY_SUPERVISOR",
];

/// How a program gets the library.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// LD_PRELOAD=libtsproxy.so
    Preload,
    /// tsproxy --supervisor=off
    LauncherOff,
    /// tsproxy (supervisor auto)
    Launcher,
}

/// `prog` under the library, with `proxy` as the upstream.
fn under(via: Via, proxy: &str, prog: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = match via {
        Via::Preload => {
            let mut c = preloaded(prog);
            c.env("TSPROXY_PROXY", proxy);
            c
        }
        Via::LauncherOff | Via::Launcher => {
            let mut c = Command::new(launcher());
            c.env_remove("LD_PRELOAD").args(["--proxy", proxy]);
            if matches!(via, Via::LauncherOff) {
                c.arg("--supervisor=off");
            }
            c.arg("--").arg(prog);
            c
        }
    };
    for k in CLEAN_ENV {
        if k != "TSPROXY_PROXY" || !matches!(via, Via::Preload) {
            c.env_remove(k);
        }
    }
    c
}

/// Fail with one line per failed run and the full output of the first.
fn verdict(what: &str, total: usize, failures: &[(String, String)]) {
    if let Some((_, first)) = failures.first() {
        let lines: Vec<&str> = failures.iter().map(|(l, _)| l.as_str()).collect();
        panic!("{} of {total} {what} failed:\n{}\n--- first failure in full:\n{first}", failures.len(), lines.join("\n"));
    }
}

fn socks_url() -> String {
    net().socks.url()
}

/// A SOCKS5 "proxy" that accepts connections and never answers (read and hold).
fn silent_proxy() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            thread::spawn(move || {
                let mut s = s;
                let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
                let mut b = [0u8; 512];
                while matches!(s.read(&mut b), Ok(n) if n > 0) {}
            });
        }
    });
    a
}

// ---------------------------------------------------------------- 1. epoll tokens

/// Defect 1: a thread blocked in an epoll wait it entered while nothing was pending woke up
/// with the library's token (0x74737078_000000NN) as data. Fixed: the program only ever sees
/// its own data (0x1122334455667788), EPOLLOUT once the tunnel is up, and a request/reply
/// works — under every wait flavour, registration order, set moves, nested sets, and with
/// another thread blocked in poll/select on other fds; bare LD_PRELOAD and the launcher.
#[test]
fn epoll_tokens_never_reach_the_program() {
    let h = harness("h_epolltoken");
    let mut failures = Vec::new();
    for via in [Via::Preload, Via::LauncherOff, Via::Launcher] {
        for mode in ["wait", "pwait", "pwait2", "before", "move", "nested", "poll", "select"] {
            for round in 0..3 {
                let mut c = under(via, &socks_url(), &h);
                c.args([mode, "100.64.0.2", "80"]);
                let r = run(c, 15);
                let k = r.kv();
                let mut why = Vec::new();
                if !r.ok() {
                    why.push("exit".to_string());
                }
                if let Some(d) = k.get("bad_data") {
                    why.push(format!("bad_data={d}"));
                }
                let we = k.get("w_events").and_then(|v| u32::from_str_radix(v.trim_start_matches("0x"), 16).ok()).unwrap_or(0);
                if mode == "poll" || mode == "select" {
                    // W's wait on its pipe: one fd ready, only POLLIN.
                    if k.get("w_ret").map(String::as_str) != Some("1") || we != libc::POLLIN as u32 {
                        why.push(format!("w_ret={:?} w_events={we:#x}", k.get("w_ret")));
                    }
                    let ce = k.get("c_events").and_then(|v| u32::from_str_radix(v.trim_start_matches("0x"), 16).ok()).unwrap_or(0);
                    if ce & libc::EPOLLOUT as u32 == 0 {
                        why.push(format!("c_events={ce:#x}"));
                    }
                } else if we & libc::EPOLLOUT as u32 == 0 {
                    why.push(format!("w_events={we:#x} (no EPOLLOUT)"));
                }
                if mode == "move" && k.get("other_events").map(String::as_str) != Some("0") {
                    why.push(format!("set A not silent after DEL: {:?}", k.get("other_events")));
                }
                if k.get("reply").map(String::as_str) != Some("HTTP/1.0 200 OK") {
                    why.push(format!("reply={:?}", k.get("reply")));
                }
                if !why.is_empty() {
                    failures.push((format!("{via:?} {mode} #{round}: {}", why.join(", ")), r.text()));
                }
            }
        }
    }
    verdict("runs", 72, &failures);
}

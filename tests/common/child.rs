//! Children under a time bound: run a command with its output collected, kill it (its
//! process group and every descendant) at the bound or when it is stopped. A hang is a
//! failure, never a hung suite; a grandchild holding the pipes open cannot hang a test.
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A child run under a time bound.
pub struct Run {
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub secs: f64,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn kv(&self) -> HashMap<String, String> {
        self.stdout.lines().filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string()))).collect()
    }
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
    pub fn signal(&self) -> Option<i32> {
        self.status.and_then(|s| s.signal())
    }
    pub fn text(&self) -> String {
        format!("status={:?} timed_out={} secs={:.2}\n--- stdout\n{}--- stderr\n{}", self.status, self.timed_out, self.secs, self.stdout, self.stderr)
    }
    /// Exited normally with status 0 (not killed by a signal or by the time bound).
    pub fn ok(&self) -> bool {
        !self.timed_out && self.code() == Some(0)
    }
}

pub fn collect(mut r: Box<dyn Read + Send>) -> mpsc::Receiver<Vec<u8>> {
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
}

/// The last snapshot of a collector, waiting at most 3 s (a grandchild holding the pipe open
/// cannot hang the test).
pub fn drain(rx: mpsc::Receiver<Vec<u8>>) -> String {
    let end = Instant::now() + Duration::from_secs(3);
    let mut last = Vec::new();
    while let Ok(v) = rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
        last = v;
    }
    String::from_utf8_lossy(&last).into_owned()
}

pub fn kill_group(pid: u32) {
    // Every descendant first: `ip netns exec` forks, and what it runs may have a process group
    // of its own, so killing the group alone can orphan a server (which then holds the pipes
    // and any lock the test process inherited).
    for d in descendants(pid) {
        // SAFETY: kill(2) on a process found under our own child; a pid reused meanwhile
        // would be another descendant-free process of the test's uid at worst.
        unsafe { libc::kill(d as i32, libc::SIGKILL) };
    }
    // SAFETY: kill(2) on the process group of a child we started (process_group(0)).
    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
}

/// The processes below `pid` (children, their children...), from /proc/*/stat; bounded.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten().take(1 << 16) {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else { continue };
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            let Some(ppid) = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)).and_then(|v| v.parse::<u32>().ok()) else { continue };
            parent_of.push((p, ppid));
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() && out.len() < 4096 {
        let p = out[i];
        out.extend(parent_of.iter().filter(|&&(_, pp)| pp == p).map(|&(c, _)| c));
        i += 1;
    }
    out.remove(0);
    out
}

/// Wait for `child` until `deadline`, then kill its process group.
pub fn reap(child: &mut Child, deadline: Instant) -> (Option<ExitStatus>, bool) {
    let pid = child.id();
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() >= deadline {
            timed_out = true;
            kill_group(pid);
            break child.wait().ok();
        }
        thread::sleep(Duration::from_millis(10));
    };
    // Whatever of the group is left (a forked child) goes too.
    kill_group(pid);
    (status, timed_out)
}

/// Run `c` (in its own process group, stdin from /dev/null) for at most `secs`.
pub fn bounded(mut c: Command, secs: u64) -> Run {
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let t0 = Instant::now();
    let mut child = c.spawn().expect("spawn");
    let out = collect(Box::new(child.stdout.take().unwrap()));
    let err = collect(Box::new(child.stderr.take().unwrap()));
    let (status, timed_out) = reap(&mut child, t0 + Duration::from_secs(secs));
    let secs_taken = t0.elapsed().as_secs_f64();
    let stdout = drain(out);
    let mut stderr = drain(err);
    if timed_out {
        stderr.push_str(&format!("\n[killed after {secs} s]\n"));
    }
    Run { status, timed_out, secs: secs_taken, stdout, stderr }
}

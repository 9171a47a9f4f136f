//! The root tier's world for the adversarial tests (tests/adversarial.rs): the namespaces of
//! tests/netns/topology.sh, a leak meter and a DNS meter **per uid**, and bounded runs of an
//! attack program as that uid — without tsproxy, under a bare `LD_PRELOAD`, or under the
//! launcher.
//!
//! Why per uid: the global `leak`/`dns` counters of topology.sh count every process in the
//! workspace, so traffic of another test (or a leak of another program) could hide or fake a
//! result. [`Meter::fresh`] gives a test its own numeric uid (62001, 62002, ...; no passwd
//! entry) and inserts, *before* the global rules of chain `out` in table `inet tsproxy`
//! (namespace tsp-ws):
//!
//! ```text
//! ip  daddr 100.64.0.0/10      meta skuid N counter name leak_uN reject
//! ip6 daddr fd7a:115c:a1e0::/48 meta skuid N counter name leak_uN reject
//! ip  daddr 10.200.0.2 udp dport 53 meta skuid N counter name dns_uN reject
//! ip  daddr 10.200.0.2 tcp dport 53 meta skuid N counter name dns_uN reject
//! ```
//!
//! A packet of uid N is rejected by its own rule first, so the global counters that netns.rs
//! asserts on never see the adversarial tier's controls. The reject (ICMP port unreachable)
//! makes a lookup that reaches the system resolver fail at once instead of after the
//! resolver's timeout.
//!
//! The pattern of a test (see tests/adversarial.rs):
//!
//! ```ignore
//! let Some(m) = Meter::fresh() else { return };          // not root / no tools: skipped
//! let c = m.attack(Via::Plain, &[prog, "udp0", "100.64.0.2", "9"]).run();
//! assert!(c.leaked > 0, "control: the attack leaks without tsproxy: {}", c.text());
//! let r = m.attack(Via::Preload, &[prog, "udp0", "100.64.0.2", "9"]).run();
//! assert_eq!(r.leaked, 0, "{}", r.text());
//! ```
//!
//! Every run is bounded ([`Attack::secs`], default 20 s; a hang is a failure) and runs in
//! namespace tsp-ws with an empty environment plus `PATH` and what the test adds.
//!
//! `TSPROXY_ADV_BUILD=<dir>` runs the tier against the `libtsproxy.so` and `tsproxy` of another
//! build (e.g. the target/debug of an older commit): how to see each test fail without its fix.
pub use super::child::{bounded, Run};
use super::child::{collect, drain, kill_group, reap};
use super::{target_dir, text};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

pub const TOPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/netns/topology.sh");
/// topology.sh's run directory: proxies' and peers' logs.
pub const RUN_DIR: &str = "/run/tsproxy-test";
/// The first uid [`Meter::fresh`] hands out.
pub const FIRST_UID: u32 = 62001;

/// The library under test: this build's, or `$TSPROXY_ADV_BUILD/libtsproxy.so` — set that to
/// the target directory of another build (an older commit, say) to run the tier against it
/// and see which items it fails.
pub fn lib() -> PathBuf {
    match std::env::var_os("TSPROXY_ADV_BUILD") {
        Some(d) => PathBuf::from(d).join("libtsproxy.so"),
        None => super::lib(),
    }
}

/// The launcher under test (see [`lib`]).
pub fn launcher() -> PathBuf {
    match std::env::var_os("TSPROXY_ADV_BUILD") {
        Some(d) => PathBuf::from(d).join("tsproxy"),
        None => super::launcher(),
    }
}

/// TSPROXY_REQUIRE_NETNS=1: a missing piece of the root tier is a failure, not a skip.
pub fn required() -> bool {
    std::env::var("TSPROXY_REQUIRE_NETNS").as_deref() == Ok("1")
}

/// Is `tool` on PATH?
pub fn have(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().map(|o| o.status.success()).unwrap_or(false)
}

/// Root, `tools` on PATH, and topology.sh up: why not, if not.
pub fn root_world(tools: &[&str]) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root".into());
    }
    for tool in tools {
        if !have(tool) {
            return Err(format!("{tool} not installed"));
        }
    }
    let out = Command::new("bash").arg(TOPO).arg("up").output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("topology.sh up failed:\n{}", text(&out)));
    }
    Ok(())
}

/// A tier's verdict on `root_world`: run (true), skip with a line (false), or fail when the
/// root tier is required.
pub fn tier_ready(r: &Result<(), String>, tier: &str) -> bool {
    match r {
        Ok(()) => true,
        Err(why) if required() => panic!("root tier required: {why}"),
        Err(why) => {
            eprintln!("{tier} tier skipped: {why} (set TSPROXY_REQUIRE_NETNS=1 to make this an error)");
            false
        }
    }
}

/// Root, the tools, and topology.sh up (once per test process). False (skip) when something
/// is missing, unless TSPROXY_REQUIRE_NETNS=1, where that is a failure.
pub fn ready() -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let r = READY.get_or_init(|| root_world(&["ip", "nft", "microsocks", "danted", "tinyproxy", "curl", "python3", "setpriv", "unshare", "chroot", "ps"]));
    tier_ready(r, "adversarial")
}

/// A named counter of table inet tsproxy in tsp-ws (packets).
pub fn counter(name: &str) -> u64 {
    let out = Command::new("ip").args(["netns", "exec", "tsp-ws", "nft", "list", "counter", "inet", "tsproxy", name]).output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    s.split("packets ").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("counter {name}: {s}"))
}

/// A test's own uid with its own leak and DNS counters.
pub struct Meter {
    pub uid: u32,
}

impl Meter {
    /// The next unused uid, its nft counters and rules installed. None: the root tier is not
    /// available (skip; a failure under TSPROXY_REQUIRE_NETNS=1).
    pub fn fresh() -> Option<Meter> {
        static NEXT: AtomicU32 = AtomicU32::new(FIRST_UID);
        if !ready() {
            return None;
        }
        let uid = NEXT.fetch_add(1, Ordering::Relaxed);
        // `insert` puts a rule at the head of the chain: the last inserted is the first
        // evaluated. Every rule matches only this uid, so the order among tests is irrelevant.
        let batch = format!(
            "add counter inet tsproxy leak_u{uid}\n\
             add counter inet tsproxy dns_u{uid}\n\
             insert rule inet tsproxy out ip daddr 10.200.0.2 tcp dport 53 meta skuid {uid} counter name dns_u{uid} reject\n\
             insert rule inet tsproxy out ip daddr 10.200.0.2 udp dport 53 meta skuid {uid} counter name dns_u{uid} reject\n\
             insert rule inet tsproxy out ip6 daddr fd7a:115c:a1e0::/48 meta skuid {uid} counter name leak_u{uid} reject\n\
             insert rule inet tsproxy out ip daddr 100.64.0.0/10 meta skuid {uid} counter name leak_u{uid} reject\n"
        );
        let mut c = Command::new("ip").args(["netns", "exec", "tsp-ws", "nft", "-f", "-"]).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        c.stdin.take().unwrap().write_all(batch.as_bytes()).unwrap();
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "installing the meter of uid {uid}: {}", text(&out));
        Some(Meter { uid })
    }

    /// Packets this uid sent to a tailnet range (all rejected).
    pub fn leak(&self) -> u64 {
        counter(&format!("leak_u{}", self.uid))
    }

    /// Packets this uid sent to the workspace's system resolver (all rejected).
    pub fn dns(&self) -> u64 {
        counter(&format!("dns_u{}", self.uid))
    }

    /// `argv` (program and arguments) as this uid, run as `via` says. Configure, then
    /// [`Attack::run`] (bounded, meters read around it) or [`Attack::spawn`].
    pub fn attack<S: AsRef<str>>(&self, via: Via, argv: &[S]) -> Attack<'_> {
        Attack {
            meter: self,
            via,
            argv: argv.iter().map(|s| s.as_ref().to_string()).collect(),
            env: Vec::new(),
            launcher_args: vec!["--supervisor=on".into()],
            net_raw: false,
            secs: 20,
        }
    }
}

/// How an attack program runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The program alone: the control, which must leak when the attack is real.
    Plain,
    /// `LD_PRELOAD=libtsproxy.so` and nothing else (no supervisor).
    Preload,
    /// The launcher `tsproxy --supervisor=on` (library and supervisor); see
    /// [`Attack::launcher_args`].
    Launcher,
}

/// One configured run of an attack program; see [`Meter::attack`].
pub struct Attack<'a> {
    meter: &'a Meter,
    via: Via,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    launcher_args: Vec<String>,
    net_raw: bool,
    secs: u64,
}

impl Attack<'_> {
    /// Add an environment variable (the run starts from an empty environment plus PATH).
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    /// The launcher's options before the command (default `--supervisor=on`).
    pub fn launcher_args(mut self, args: &[&str]) -> Self {
        self.launcher_args = args.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Give the uid CAP_NET_RAW (inheritable + ambient, so it survives exec without making
    /// the process secure-execution, and the launcher's no_new_privs keeps it): raw sockets
    /// stay attributed to the test's uid, where the per-uid meter sees them.
    pub fn net_raw(mut self) -> Self {
        self.net_raw = true;
        self
    }

    /// The time bound (default 20 s). Past it the whole process group is killed and the run
    /// counts as timed out.
    pub fn secs(mut self, s: u64) -> Self {
        self.secs = s;
        self
    }

    fn command(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", "tsp-ws", "setpriv"]);
        c.arg(format!("--reuid={}", self.meter.uid)).arg(format!("--regid={}", self.meter.uid)).arg("--clear-groups");
        if self.net_raw {
            c.args(["--inh-caps", "+net_raw", "--ambient-caps", "+net_raw"]);
        }
        // `env -i` after setpriv: neither ip nor setpriv ever loads the library.
        c.args(["--", "env", "-i"]);
        c.arg(format!("PATH={}", std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())));
        c.arg("HOME=/");
        if self.via == Via::Preload {
            c.arg(format!("LD_PRELOAD={}", lib().display()));
        }
        for (k, v) in &self.env {
            c.arg(format!("{k}={v}"));
        }
        if self.via == Via::Launcher {
            c.arg(launcher()).args(&self.launcher_args);
        }
        c.args(&self.argv);
        c.process_group(0);
        c
    }

    /// Run to the end (or the time bound); the uid's meters are read before and after.
    pub fn run(self) -> Outcome {
        let (l0, d0) = (self.meter.leak(), self.meter.dns());
        let run = bounded(self.command(), self.secs);
        let (leaked, dns) = (self.meter.leak().saturating_sub(l0), self.meter.dns().saturating_sub(d0));
        Outcome { uid: self.meter.uid, via: self.via, argv: self.argv, run, leaked, dns }
    }

    /// Start it with stdin and stdout piped, for a conversation (see [`Running`]).
    pub fn spawn(self) -> Running {
        let mut c = self.command();
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let err = collect(Box::new(child.stderr.take().unwrap()));
        Running { child, stdin, stdout, err, deadline: Instant::now() + Duration::from_secs(self.secs) }
    }
}

/// The outcome of an [`Attack::run`].
pub struct Outcome {
    pub uid: u32,
    pub via: Via,
    pub argv: Vec<String>,
    pub run: Run,
    /// Packets this uid sent to tailnet ranges during the run.
    pub leaked: u64,
    /// Packets this uid sent to the system resolver during the run.
    pub dns: u64,
}

impl Outcome {
    /// The control: without tsproxy this attack must reach the leak meter, else the test
    /// around it proves nothing. Logged for the record.
    #[track_caller]
    pub fn expect_leak(self) -> Self {
        eprintln!("[adv] {}: leaked={} dns={}", self.label(), self.leaked, self.dns);
        assert!(self.leaked > 0, "control: without tsproxy this attack must leak (else the test proves nothing): {}", self.text());
        self
    }

    /// The control for names: this lookup must reach the system resolver without tsproxy.
    #[track_caller]
    pub fn expect_dns(self) -> Self {
        eprintln!("[adv] {}: leaked={} dns={}", self.label(), self.leaked, self.dns);
        assert!(self.dns > 0, "control: without tsproxy this lookup must reach the system resolver: {}", self.text());
        self
    }

    /// Under tsproxy: no packet to a tailnet range and no query to the system resolver from
    /// this uid during the run, and the run ended by itself.
    #[track_caller]
    pub fn expect_clean(self) -> Self {
        eprintln!("[adv] {}: leaked={} dns={}", self.label(), self.leaked, self.dns);
        assert!(!self.run.timed_out, "hung: {}", self.text());
        assert_eq!((self.leaked, self.dns), (0, 0), "leak meter / DNS meter moved: {}", self.text());
        self
    }

    /// As [`Outcome::expect_clean`] for the leak meter only (the run may ask the resolver:
    /// names that are not tailnet names go to libc).
    #[track_caller]
    pub fn expect_no_leak(self) -> Self {
        eprintln!("[adv] {}: leaked={} dns={}", self.label(), self.leaked, self.dns);
        assert!(!self.run.timed_out, "hung: {}", self.text());
        assert_eq!(self.leaked, 0, "leak meter moved: {}", self.text());
        self
    }

    fn label(&self) -> String {
        let prog = self.argv.first().map(|p| p.rsplit('/').next().unwrap_or(p)).unwrap_or("");
        // Arguments escaped (names with control characters) and cut (inline scripts).
        let args: Vec<String> = self
            .argv
            .iter()
            .skip(1)
            .map(|a| {
                let e = a.escape_debug().to_string();
                if e.chars().count() > 80 {
                    format!("{}...", e.chars().take(60).collect::<String>())
                } else {
                    e
                }
            })
            .collect();
        format!("uid {} {:?} {prog} {}", self.uid, self.via, args.join(" "))
    }

    pub fn kv(&self) -> HashMap<String, String> {
        self.run.kv()
    }
    /// The value of `key=` in stdout ("" when absent).
    pub fn get(&self, key: &str) -> String {
        self.kv().remove(key).unwrap_or_default()
    }
    pub fn text(&self) -> String {
        format!("uid {} {:?} {:?}: leaked={} dns={}\n{}", self.uid, self.via, self.argv, self.leaked, self.dns, self.run.text())
    }
}

/// A spawned attack: read its lines, write to it, then [`Running::finish`].
pub struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    err: mpsc::Receiver<Vec<u8>>,
    deadline: Instant,
}

impl Running {
    /// The next line of stdout (without the newline); "" at EOF. Bounded by the run's time
    /// bound: past it the group is killed, which ends the read.
    pub fn line(&mut self) -> String {
        let pid = self.child.id();
        let left = self.deadline.saturating_duration_since(Instant::now());
        let (tx, rx) = mpsc::channel::<()>();
        let watchdog = thread::spawn(move || {
            if rx.recv_timeout(left).is_err() {
                kill_group(pid);
            }
        });
        let mut l = String::new();
        let _ = self.stdout.read_line(&mut l);
        let _ = tx.send(());
        let _ = watchdog.join();
        l.trim_end_matches('\n').to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Write to its stdin.
    pub fn send(&mut self, s: &str) {
        if let Some(i) = self.stdin.as_mut() {
            let _ = i.write_all(s.as_bytes());
            let _ = i.flush();
        }
    }

    /// Kill it now (a server the test started) and collect the rest of its output.
    pub fn stop(mut self) -> Run {
        kill_group(self.child.id());
        let _ = self.child.wait();
        let stdout = drain(collect(Box::new(self.stdout)));
        Run { status: None, timed_out: false, secs: 0.0, stdout, stderr: drain(self.err) }
    }

    /// Close stdin, wait for the end (or the time bound), collect the rest of stdout and
    /// stderr.
    pub fn finish(mut self) -> Run {
        drop(self.stdin.take());
        let t0 = Instant::now();
        let (status, timed_out) = reap(&mut self.child, self.deadline);
        let stdout = drain(collect(Box::new(self.stdout)));
        let mut stderr = drain(self.err);
        if timed_out {
            stderr.push_str("\n[adversarial: killed at the time bound]\n");
        }
        Run { status, timed_out, secs: t0.elapsed().as_secs_f64(), stdout, stderr }
    }
}

// ---------------------------------------------------------------- attack programs

/// The root tier needs this tool: false (skip) when missing, a failure under
/// TSPROXY_REQUIRE_NETNS=1.
pub fn tool(name: &str) -> bool {
    if have(name) {
        return true;
    }
    assert!(!required(), "{name} is required by the adversarial tier (TSPROXY_REQUIRE_NETNS=1)");
    eprintln!("adversarial test skipped: {name} not installed");
    false
}

/// c-harness/NAME.c compiled once per test process with `cc` and `extra` (e.g. `-luring`,
/// `-static`) into target/<profile>/c-harness/OUT, or with `musl-gcc -static` when `musl`.
/// None (skip) when the compiler is missing.
pub fn build(name: &str, out: &str, musl: bool, extra: &[&str]) -> Option<PathBuf> {
    static LOCK: Mutex<()> = Mutex::new(());
    let cc = if musl { "musl-gcc" } else { "cc" };
    if !tool(cc) {
        return None;
    }
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("c-harness").join(format!("{name}.c"));
    let dir = target_dir().join("c-harness");
    std::fs::create_dir_all(&dir).unwrap();
    let dst = dir.join(out);
    let fresh = dst.metadata().and_then(|o| Ok(o.modified()? >= src.metadata()?.modified()?)).unwrap_or(false);
    if !fresh {
        let tmp = dir.join(format!(".{out}.{}", std::process::id()));
        let mut c = Command::new(cc);
        c.args(["-O2", "-Wall", "-o"]).arg(&tmp).arg(&src);
        if musl {
            c.arg("-static");
        }
        let o = c.args(extra).output().expect(cc);
        assert!(o.status.success(), "{cc} {name}.c {extra:?}: {}", String::from_utf8_lossy(&o.stderr));
        std::fs::rename(&tmp, &dst).unwrap();
    }
    Some(dst)
}

/// A path as &str (the test programs live under the workspace, always UTF-8 here).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

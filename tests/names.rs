//! Root tier, issue 11: tailnet names work in every process and every resolver.
//!
//! - One meaning of a placeholder across the processes of one user: a process that never
//!   resolved a name connects to the placeholder another (unrelated, already exited) process
//!   printed, under the launcher or a bare `LD_PRELOAD`; another uid gets `ECONNREFUSED` for it;
//!   the per-user registry lives in `/run/user/<euid>/tsproxy-names` (a 0700 directory of the
//!   euid) or else `/tmp/tsproxy-<euid>/names`, and a squatted `/tmp/tsproxy-<euid>` is not used.
//! - Both families: `AF_UNSPEC` gives an IPv4 (240.0.0.0/5) and an IPv6 (100::/64) placeholder;
//!   `curl -6` and `ssh -6` (a real sshd on peer-1) by name; a failed tunnel is not dialled a
//!   second time for the other family's placeholder, and a happy-eyeballs client opens one
//!   tunnel (nft counters on the SYNs the proxy sends to a peer).
//! - DNS spoken by the program itself to the system resolver: dig (UDP and TCP), node's
//!   `dns.resolve4`, python grpcio with its default c-ares resolver, aria2c, dnspython, a static
//!   musl program under the launcher. The system resolver is real (tests/netns/dns_server.py,
//!   one address per test, every question logged): a tailnet name must never reach it, any
//!   other name must (controls), and the answer must come back from it. c-harness/dns_ask.c
//!   asks one question each way a DNS client does (unconnected `sendto`, connected UDP, TCP),
//!   dynamic under the library and static under the supervisor.
//! - Headless Chromium (resolves in one process, connects from another) by name and FQDN.
//!
//! Every child is bounded in time (killed with its descendants). Every test ends with the leak
//! meter (a direct packet to a tailnet range) and the `dns` meter (the workspace's default
//! resolver) at 0. Needs root and the tools of scripts/test-deps.sh: without them the tests say
//! so and pass, unless TSPROXY_REQUIRE_NETNS=1 (`make test` as root), where that fails.
mod common;

use common::child::{bounded, collect, kill_group, Run};
use common::*;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

const RUN_DIR: &str = "/run/tsproxy-test";
const PEER: &str = "hello from peer";
const PEER_REPLY: &str = "HTTP/1.0 200 OK";
/// The single-label tailnet names the proxies' hosts file knows (topology.sh).
const TAILNET: [&str; 5] = ["peer-1", "peer6", "refuser", "blackhole", "slow-peer"];
/// A uid that is not ours (root's) for the cross-user tests.
const OTHER_UID: &str = "65534";

// ---------------------------------------------------------------- the world

use common::world::{have, required, root_world, tier_ready};

/// Root, the base tools, and topology.sh up (once per test process).
fn ready() -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let r =
        READY.get_or_init(|| root_world(&["ip", "nft", "microsocks", "danted", "tinyproxy", "curl", "python3", "node", "setpriv", "unshare", "getent", "cc"]));
    tier_ready(r, "names")
}

/// A tool one test needs (scripts/test-deps.sh installs it): false (skip) when missing, a
/// failure under TSPROXY_REQUIRE_NETNS=1.
fn tool(name: &str) -> bool {
    if have(name) {
        return true;
    }
    assert!(!required(), "{name} is required (TSPROXY_REQUIRE_NETNS=1): run scripts/test-deps.sh");
    eprintln!("names test skipped: {name} not installed");
    false
}

fn counter(name: &str) -> u64 {
    let out = Command::new("ip").args(["netns", "exec", "tsp-ws", "nft", "list", "counter", "inet", "tsproxy", name]).output().unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    s.split("packets ").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("counter {name}: {s}"))
}

fn no_leak() {
    assert_eq!(counter("leak"), 0, "a direct packet reached a tailnet range");
    assert_eq!(counter("dns"), 0, "a name reached the workspace's default resolver (10.200.0.2)");
}

/// Where a script runs: always the workspace namespace (tsp-ws).
#[derive(Clone, Copy)]
enum Ns {
    /// As the workspace is: resolv.conf names 10.200.0.2, where nothing answers (`dns` meter).
    Ws,
    /// In a mount namespace of its own whose /etc/resolv.conf names the real DNS server
    /// 10.200.0.N ([`Resolver`]).
    Dns(u8),
    /// In a mount namespace of its own with an empty /tmp and /run/user (tmpfs): the names
    /// registries of this run only, and the real /tmp never touched.
    PrivateTmp,
}

/// Run a shell script in tsp-ws, killed (with every descendant) after `secs`. The environment
/// is empty but for PATH, HOME, LANG, `env`, and: $TSP the launcher, $LIB libtsproxy.so, $TCP
/// c-harness/tcpclient (dynamic), $TCPS the same linked statically with musl (if built).
fn sh(ns: Ns, script: &str, env: &[(&str, &str)], secs: u64) -> Run {
    let mut full = String::new();
    let mut c = Command::new("ip");
    c.args(["netns", "exec", "tsp-ws"]);
    match ns {
        Ns::Ws => {}
        Ns::Dns(n) => {
            c.args(["unshare", "-m", "--propagation", "private"]);
            full.push_str(&format!("mount --bind '{}' /etc/resolv.conf || exit 97\n", resolv_conf(n).display()));
        }
        Ns::PrivateTmp => {
            c.args(["unshare", "-m", "--propagation", "private"]);
            full.push_str("mount -t tmpfs -o mode=1777 tmpfs /tmp || exit 97\n");
            full.push_str("if [ -d /run/user ]; then mount -t tmpfs -o mode=755 tmpfs /run/user || exit 97; fi\n");
        }
    }
    full.push_str(script);
    c.args(["sh", "-c", &full]).env_clear();
    for k in ["PATH", "HOME", "LANG", "PYENV_ROOT"] {
        if let Ok(v) = std::env::var(k) {
            c.env(k, v);
        }
    }
    c.env("TSP", launcher()).env("LIB", lib()).env("TCP", harness("tcpclient"));
    if let Some(p) = musl_tcpclient() {
        c.env("TCPS", p);
    }
    c.envs(env.iter().copied());
    bounded(c, secs)
}

fn kv(r: &Run, k: &str) -> String {
    r.kv().get(k).cloned().unwrap_or_default()
}

/// c-harness/tcpclient.c linked with `musl-gcc -static` (musl's own resolver: unconnected
/// `sendto` to port 53), once per test process. None when musl-gcc is missing.
fn musl_tcpclient() -> Option<PathBuf> {
    static P: OnceLock<Option<PathBuf>> = OnceLock::new();
    P.get_or_init(|| musl("tcpclient")).clone()
}

/// c-harness/NAME.c linked with `musl-gcc -static` into target/<profile>/c-harness/NAME-musl.
fn musl(name: &str) -> Option<PathBuf> {
    if !have("musl-gcc") {
        return None;
    }
    let out = target_dir().join("c-harness").join(format!("{name}-musl"));
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let tmp = out.with_extension(format!("tmp{}", std::process::id()));
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("c-harness/{name}.c"));
    let o = Command::new("musl-gcc").args(["-static", "-O2", "-Wall", "-o"]).arg(&tmp).arg(&src).output().expect("musl-gcc");
    assert!(o.status.success(), "musl-gcc -static {name}.c: {}", String::from_utf8_lossy(&o.stderr));
    std::fs::rename(&tmp, &out).unwrap();
    Some(out)
}

// ---------------------------------------------------------------- the real resolver

/// The real DNS server at 10.200.0.N (N = 3 or 11..=20; topology.sh): one address per test, so
/// a test reads only the questions its own programs asked.
struct Resolver(u8);

fn resolv_conf(n: u8) -> PathBuf {
    let dir = target_dir().join("names-resolv");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("resolv.{n}"));
    // One attempt per server and a 2 s timeout: a lookup that gets no answer ends in a few
    // seconds (tests bound every child anyway).
    std::fs::write(&p, format!("nameserver 10.200.0.{n}\noptions timeout:2 attempts:2\n")).unwrap();
    p
}

impl Resolver {
    fn addr(&self) -> String {
        format!("10.200.0.{}", self.0)
    }
    /// Every question name this address was asked (lower case, no trailing dot), in order.
    fn asked(&self) -> Vec<String> {
        let log = std::fs::read_to_string(format!("{RUN_DIR}/dns-real.log")).unwrap_or_default();
        let me = self.addr();
        log.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() == 4 && f[0] == me).then(|| f[3].trim_end_matches('.').to_ascii_lowercase())
            })
            .collect()
    }
    /// The issue's DNS meter: a tailnet name must never reach the real server. Pushes a
    /// failure naming every one that did (the test's other failures are reported with it).
    fn no_tailnet_name(&self, fails: &mut Vec<String>) {
        let bad: Vec<String> = self.asked().into_iter().filter(|n| is_tailnet(n)).collect();
        if !bad.is_empty() {
            fails.push(format!("tailnet names reached the real DNS server {}: {bad:?}", self.addr()));
        }
    }
    /// Control: `name` was asked of the real server (it answered, or the program would not have
    /// the public address).
    fn was_asked(&self, name: &str) -> bool {
        self.asked().iter().any(|n| n == name)
    }
}

/// A tailnet name, or a name under one: `*.ts.net`, a short tailnet name, and anything whose
/// last label is one (Chromium asks `_8080._https.peer-1` HTTPS for http://peer-1:8080/: a
/// question about the tailnet host, which the real server must not see either).
fn is_tailnet(n: &str) -> bool {
    let last = n.rsplit('.').next().unwrap_or(n);
    TAILNET.contains(&last) || n == "ts.net" || n.ends_with(".ts.net")
}

// ---------------------------------------------------------------- placeholders

fn v4_placeholder(s: &str) -> bool {
    s.parse::<Ipv4Addr>().is_ok_and(|a| a.octets()[0] & 0xf8 == 240)
}

fn v6_placeholder(s: &str) -> bool {
    s.parse::<Ipv6Addr>().is_ok_and(|a| a.segments()[..4] == [0x100, 0, 0, 0])
}

/// The distinct addresses of `getent ahosts*` output (first field of each line).
fn getent_addrs(out: &str) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for a in out.lines().filter_map(|l| l.split_whitespace().next()) {
        if !v.iter().any(|x| x == a) {
            v.push(a.to_string());
        }
    }
    v
}

/// `getent ahostsv4|ahostsv6 NAME` under bare LD_PRELOAD, in its own process: the placeholder.
fn resolve_in_another_process(ns: Ns, db: &str, name: &str) -> String {
    let r = sh(ns, &format!("LD_PRELOAD=$LIB exec getent {db} {name}"), &[], 15);
    let addrs = getent_addrs(&r.stdout);
    assert_eq!(addrs.len(), 1, "getent {db} {name}: one address: {}", r.text());
    addrs[0].clone()
}

const GET: &str = "GET / HTTP/1.0\\n\\n";

// ---------------------------------------------------------------- 1. one meaning across processes

/// `getent hosts peer-1` in one process, `nc <that address> 8080` in another (not its child:
/// started after it exited), both ways between the launcher and a bare LD_PRELOAD, and a static
/// program under the supervisor as the second process.
#[test]
fn two_processes_getent_then_nc_and_other_connectors() {
    if !ready() || !tool("nc") {
        return;
    }
    // getent hosts asks AF_INET6 first (gethostbyname2), then AF_INET: either placeholder.
    let r = sh(Ns::Ws, "LD_PRELOAD=$LIB exec getent hosts peer-1", &[], 15);
    let addr = r.stdout.split_whitespace().next().unwrap_or_default().to_string();
    assert!(v4_placeholder(&addr) || v6_placeholder(&addr), "getent hosts peer-1: {}", r.text());
    let v4 = resolve_in_another_process(Ns::Ws, "ahostsv4", "peer-1");
    let v6 = resolve_in_another_process(Ns::Ws, "ahostsv6", "peer-1.tail1234.ts.net");
    assert!(v4_placeholder(&v4) && v6_placeholder(&v6), "{v4} {v6}");
    // No -N: microsocks (like tailscaled's SOCKS5 server) closes the whole connection when the
    // client half-closes, so nc reads until the peer closes instead.
    let nc = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | $TSP nc -w 10 \"$A\" 8080";
    let mut fails = Vec::new();
    for a in [&addr, &v4, &v6] {
        let r = sh(Ns::Ws, nc, &[("A", a)], 20);
        if !r.stdout.contains(PEER) {
            fails.push(format!("tsproxy nc {a} 8080 (resolved by another process): {}", r.text()));
        }
        let r = sh(Ns::Ws, &format!("LD_PRELOAD=$LIB exec $TCP -s '{GET}' -r \"$A\" 8080"), &[("A", a)], 20);
        if kv(&r, "reply") != PEER_REPLY {
            fails.push(format!("LD_PRELOAD tcpclient {a} 8080: {}", r.text()));
        }
        if musl_tcpclient().is_some() {
            let r = sh(Ns::Ws, &format!("exec $TSP $TCPS -s '{GET}' -r \"$A\" 8080"), &[("A", a)], 20);
            if kv(&r, "reply") != PEER_REPLY {
                fails.push(format!("static tcpclient under the launcher {a} 8080: {}", r.text()));
            }
        }
    }
    // Resolved under the launcher, connected under a bare LD_PRELOAD.
    let r = sh(Ns::Ws, "exec $TSP python3 -c \"import socket; print(socket.getaddrinfo('peer6', 8080, socket.AF_INET6)[0][4][0])\"", &[], 15);
    let p6 = r.stdout.trim().to_string();
    assert!(v6_placeholder(&p6), "{}", r.text());
    let r = sh(Ns::Ws, &format!("LD_PRELOAD=$LIB exec $TCP -6 -s '{GET}' -r \"$A\" 8080"), &[("A", &p6)], 20);
    if kv(&r, "reply") != PEER_REPLY {
        fails.push(format!("python (launcher) resolved peer6, tcpclient (LD_PRELOAD) connects {p6}: {}", r.text()));
    }
    // Control: the same connect in the process that resolved works today.
    let r = sh(Ns::Ws, &format!("LD_PRELOAD=$LIB exec $TCP -s '{GET}' -r peer-1 8080"), &[], 20);
    assert_eq!(kv(&r, "reply"), PEER_REPLY, "control, resolve and connect in one process: {}", r.text());
    assert!(fails.is_empty(), "{} cross-process connects failed:\n{}", fails.len(), fails.join("\n"));
    no_leak();
}

/// Another uid that is handed our placeholder gets ECONNREFUSED (never a direct dial, never
/// the name); the same address from a second process of our uid reaches the peer; the other
/// uid's own resolution works. In a private /tmp and /run/user: both registries are fresh.
#[test]
fn another_uid_is_refused_our_placeholder() {
    if !ready() {
        return;
    }
    let script = format!(
        r#"
A=$(LD_PRELOAD=$LIB getent ahostsv4 peer-1 | awk 'NR==1{{print $1}}')
A6=$(LD_PRELOAD=$LIB getent ahostsv6 peer-1 | awk 'NR==1{{print $1}}')
echo "addr=$A"
echo "addr6=$A6"
as_other() {{ setpriv --reuid={OTHER_UID} --regid={OTHER_UID} --clear-groups "$@"; }}
as_other env LD_PRELOAD=$LIB $TCP -s '{GET}' -r "$A" 8080 | sed 's/^/other_/'
as_other env LD_PRELOAD=$LIB $TCP -6 -s '{GET}' -r "$A6" 8080 | sed 's/^/other6_/'
as_other $TSP $TCP -s '{GET}' -r "$A" 8080 | sed 's/^/otherl_/'
LD_PRELOAD=$LIB $TCP -s '{GET}' -r "$A" 8080 | sed 's/^/same_/'
as_other env LD_PRELOAD=$LIB $TCP -s '{GET}' -r peer-1 8080 | sed 's/^/othername_/'
"#
    );
    let r = sh(Ns::PrivateTmp, &script, &[], 40);
    assert!(v4_placeholder(&kv(&r, "addr")), "{}", r.text());
    // Controls: the other uid's own resolution works, and so does (today) nothing else.
    assert_eq!(kv(&r, "othername_reply"), PEER_REPLY, "control, the other uid resolves itself: {}", r.text());
    for p in ["other_", "other6_", "otherl_"] {
        assert_eq!(kv(&r, &format!("{p}errno")), "ECONNREFUSED", "{p}: another uid connects to our placeholder: {}", r.text());
        assert_eq!(kv(&r, &format!("{p}reply")), "", "{p}: another uid reached the name: {}", r.text());
    }
    assert_eq!(kv(&r, "same_reply"), PEER_REPLY, "a second process of our uid connects to the placeholder: {}", r.text());
    no_leak();
}

/// Where the registry lives: /run/user/<euid>/tsproxy-names when that directory is the euid's
/// and 0700, else /tmp/tsproxy-<euid>/names (directory 0700, the euid's).
#[test]
fn registry_in_run_user_or_tmp() {
    if !ready() {
        return;
    }
    let script = format!(
        r#"
stat_of() {{ stat -c '%u:%a' "$1" 2>/dev/null || echo none; }}
# 1. No /run/user/0: /tmp/tsproxy-0.
LD_PRELOAD=$LIB getent ahostsv4 peer-1 >/dev/null
echo "tmp_dir=$(stat_of /tmp/tsproxy-0)"
echo "tmp_names=$(stat_of /tmp/tsproxy-0/names)"
# 2. /run/user/0, root's, 0700: used, /tmp untouched; a second process connects through it.
# (/run/user is a private tmpfs here; where the machine has none, steps 2 and 3 are skipped:
# making one would change the real /run.)
[ -d /run/user ] || {{ echo run_user=missing; exit 0; }}
rm -rf /tmp/tsproxy-0; mkdir -m 700 /run/user/0
A=$(LD_PRELOAD=$LIB getent ahostsv4 peer-1 | awk 'NR==1{{print $1}}')
echo "run_names=$(stat_of /run/user/0/tsproxy-names)"
echo "tmp_after_run=$(stat_of /tmp/tsproxy-0)"
LD_PRELOAD=$LIB $TCP -s '{GET}' -r "$A" 8080 | sed 's/^/run_/'
# 3. /run/user/0 with group access: not used.
rm -rf /run/user/0; mkdir -m 750 /run/user/0
LD_PRELOAD=$LIB getent ahostsv4 peer-1 >/dev/null
echo "run750_names=$(stat_of /run/user/0/tsproxy-names)"
echo "tmp_after_750=$(stat_of /tmp/tsproxy-0/names)"
"#
    );
    let r = sh(Ns::PrivateTmp, &script, &[], 30);
    let no_run_user = kv(&r, "run_user") == "missing";
    if no_run_user {
        eprintln!("registry_in_run_user_or_tmp: this machine has no /run/user: only /tmp checked");
    }
    let fails: Vec<&str> = [
        (kv(&r, "tmp_dir") == "0:700", "without /run/user/0: /tmp/tsproxy-0 made, root's, 0700"),
        (kv(&r, "tmp_names") != "none", "without /run/user/0: /tmp/tsproxy-0/names"),
        (kv(&r, "run_names") != "none", "/run/user/0 (root's, 0700): /run/user/0/tsproxy-names"),
        (kv(&r, "tmp_after_run") == "none", "with /run/user/0: /tmp/tsproxy-0 not made"),
        (kv(&r, "run_reply") == PEER_REPLY, "a second process connects through /run/user/0's registry"),
        (kv(&r, "run750_names") == "none", "/run/user/0 with group access (0750): not used"),
        (kv(&r, "tmp_after_750") != "none", "... /tmp/tsproxy-0/names is"),
    ]
    .into_iter()
    .enumerate()
    .filter_map(|(i, (ok, what))| (!(ok || (no_run_user && i >= 2))).then_some(what))
    .collect();
    assert!(fails.is_empty(), "registry location: {fails:#?}\n{}", r.text());
    no_leak();
}

/// /tmp/tsproxy-0 made beforehand by another uid (squatted): never used (nothing written into
/// it, a second process cannot map the placeholder), names still work within one process, and
/// a warning naming it is logged once.
#[test]
fn squatted_tmp_dir_is_not_used() {
    if !ready() {
        return;
    }
    let py = r#"
import socket
def get(h):
    s = socket.create_connection((h, 8080), timeout=10)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    d = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        d += b
    return d.split(b"\r\n\r\n", 1)[1].decode().strip()
print("a_body=" + get("peer-1"))
print("a_body6=" + get("peer6"))
print("a_fqdn=" + get("peer-1.tail1234.ts.net"))
print("addr=" + socket.getaddrinfo("peer-1", 8080, socket.AF_INET)[0][4][0])
"#;
    let script = format!(
        r#"
mkdir -m 700 /tmp/tsproxy-0 && chown {OTHER_UID}:{OTHER_UID} /tmp/tsproxy-0
# No /run/user/0 (a tmpfs /run/user): /tmp/tsproxy-0 would be the registry.
LD_PRELOAD=$LIB TSPROXY_LOG=info python3 -c "$PY" > /tmp/a.out 2> /tmp/a.err
cat /tmp/a.out
A=$(sed -n 's/^addr=//p' /tmp/a.out)
LD_PRELOAD=$LIB $TCP -s '{GET}' -r "$A" 8080 | sed 's/^/b_/'
echo "warn_lines=$(grep -c 'tsproxy-0' /tmp/a.err)"
echo "squat_owner=$(stat -c %u /tmp/tsproxy-0)"
echo "squat_entries=$(ls -A /tmp/tsproxy-0 | wc -l)"
echo "--- a.err"; head -c 4000 /tmp/a.err
"#
    );
    let r = sh(Ns::PrivateTmp, &script, &[("PY", py)], 40);
    // Within one process names work (today too).
    assert_eq!((kv(&r, "a_body").as_str(), kv(&r, "a_body6").as_str(), kv(&r, "a_fqdn").as_str()), (PEER, PEER, PEER), "{}", r.text());
    assert!(v4_placeholder(&kv(&r, "addr")), "{}", r.text());
    assert_eq!(kv(&r, "squat_owner"), OTHER_UID, "{}", r.text());
    assert_eq!(kv(&r, "squat_entries"), "0", "something was written into the squatted directory: {}", r.text());
    assert_eq!(kv(&r, "b_errno"), "ECONNREFUSED", "a second process through a squatted registry: {}", r.text());
    assert_eq!(kv(&r, "warn_lines"), "1", "one warning naming /tmp/tsproxy-0 (TSPROXY_LOG=info): {}", r.text());
    no_leak();
}

// ---------------------------------------------------------------- 2. both families

#[test]
fn both_families_getent_ahosts_curl_6_ssh_6() {
    if !ready() {
        return;
    }
    let mut fails = Vec::new();
    for name in ["peer-1", "peer-1.tail1234.ts.net"] {
        let r = sh(Ns::Ws, &format!("LD_PRELOAD=$LIB exec getent ahosts {name}"), &[], 15);
        let a = getent_addrs(&r.stdout);
        if !(a.len() == 2 && a.iter().any(|x| v4_placeholder(x)) && a.iter().any(|x| v6_placeholder(x))) {
            fails.push(format!("getent ahosts {name}: one IPv4 and one IPv6 placeholder: {a:?}\n{}", r.text()));
        }
    }
    for (flag, url) in
        [("-6", "http://peer-1:8080/"), ("-6", "http://peer-1.tail1234.ts.net:8080/"), ("-4", "http://peer-1:8080/"), ("", "http://peer-1:8080/")]
    {
        let r = sh(Ns::Ws, &format!("exec $TSP curl {flag} -sS --max-time 10 {url}"), &[], 20);
        if r.stdout.trim() != PEER {
            fails.push(format!("tsproxy curl {flag} {url}: {}", r.text()));
        }
    }
    if tool("ssh") && tool("ssh-keygen") && std::path::Path::new(&format!("{RUN_DIR}/sshd.pid")).exists() {
        // A throwaway client key, authorized for root on the peer's sshd.
        let dir = target_dir().join("names-ssh");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("id_ed25519");
        let o = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key).output().unwrap();
        assert!(o.status.success(), "ssh-keygen: {}", text(&o));
        let mut keys = std::fs::read_to_string(format!("{RUN_DIR}/ssh_authorized_keys")).unwrap_or_default();
        keys.push_str(&std::fs::read_to_string(key.with_extension("pub")).unwrap());
        std::fs::write(format!("{RUN_DIR}/ssh_authorized_keys"), keys).unwrap();
        let ssh = "exec $TSP ssh $F -F /dev/null -i \"$KEY\" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
                   -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=10 -o LogLevel=ERROR root@\"$H\" 'ip -o addr show dev lo'";
        let k = key.to_string_lossy().into_owned();
        // By IP first: the control that sshd and the key work (tunnelled by tsproxy today).
        for (f, h, control) in [("-6", "fd7a:115c:a1e0::2", true), ("-6", "peer-1", false), ("-6", "peer-1.tail1234.ts.net", false), ("-4", "peer-1", false)] {
            let r = sh(Ns::Ws, ssh, &[("F", f), ("H", h), ("KEY", &k)], 25);
            // The command ran on the peer: its loopback holds the tailnet addresses.
            let ok = r.ok() && r.stdout.contains("100.64.0.2/32") && r.stdout.contains("fd7a:115c:a1e0::2/128");
            if control {
                assert!(ok, "control, ssh {f} {h}: {}", r.text());
            } else if !ok {
                fails.push(format!("tsproxy ssh {f} {h}: {}", r.text()));
            }
        }
    }
    assert!(fails.is_empty(), "{} failed:\n{}", fails.len(), fails.join("\n"));
    no_leak();
}

/// Parsed `cN=RESULT SECS ADDR` lines of [`TWO_CONNECTS`].
fn connect_lines(r: &Run) -> Vec<(String, f64, String)> {
    (0..2)
        .filter_map(|i| {
            let v = kv(r, &format!("c{i}"));
            let f: Vec<&str> = v.split_whitespace().collect();
            (f.len() == 3).then(|| (f[0].to_string(), f[1].parse().unwrap_or(f64::NAN), f[2].to_string()))
        })
        .collect()
}

/// Connect to HOST:PORT once per family in ORDER ("4", "46", "64"), blocking sockets, and say
/// what each connect got, how long it took, and the placeholder it used.
const TWO_CONNECTS: &str = r#"
import errno, socket, sys, time
host, port, order = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for i, f in enumerate(order):
    fam = socket.AF_INET if f == "4" else socket.AF_INET6
    a = socket.getaddrinfo(host, port, fam, socket.SOCK_STREAM)[0][4]
    s = socket.socket(fam, socket.SOCK_STREAM)
    t = time.monotonic()
    try:
        s.connect(a)
        r = "ok"
    except OSError as e:
        r = errno.errorcode.get(e.errno, "errno%s" % e.errno)
    s.close()
    print("c%d=%s %.3f %s" % (i, r, time.monotonic() - t, a[0]), flush=True)
"#;

/// The two placeholders of a name lead to one tunnel: a connect that failed through one
/// family's placeholder makes the next connect to the other family's placeholder of the same
/// name:port fail at once with the same errno, without a second dial by the proxy; a
/// happy-eyeballs client (curl, node) opens one tunnel. Dials are counted by nft on the SYNs the
/// proxies' uid sends to the peer (counters refuser_dial, slow_dial, peer1_8081_dial). Only this
/// test uses refuser, blackhole, slow-peer and peer-1:8081.
#[test]
fn one_tunnel_per_name_and_the_second_family_learns_the_failure() {
    if !ready() {
        return;
    }
    let _peer1_8081 = PEER1_8081.lock().unwrap_or_else(|e| e.into_inner());
    let two = |host: &str, port: &str, order: &str, env: &[(&str, &str)]| {
        let mut e = vec![("PY", TWO_CONNECTS), ("H", host), ("P", port), ("O", order)];
        e.extend_from_slice(env);
        sh(Ns::Ws, "exec $TSP python3 -c \"$PY\" \"$H\" \"$P\" \"$O\"", &e, 30)
    };
    let mut fails = Vec::new();
    // Control: one connect to a refusing peer is one dial (one SYN: the peer answers RST).
    let before = counter("refuser_dial");
    let r = two("refuser", "8080", "4", &[]);
    let c = connect_lines(&r);
    assert_eq!(c.first().map(|c| c.0.as_str()), Some("ECONNREFUSED"), "{}", r.text());
    assert_eq!(counter("refuser_dial") - before, 1, "control: one connect, one dial: {}", r.text());
    for (port, order) in [("8081", "46"), ("8082", "64")] {
        let before = counter("refuser_dial");
        let r = two("refuser", port, order, &[]);
        let c = connect_lines(&r);
        let dials = counter("refuser_dial") - before;
        let ok = c.len() == 2
            && c[0].0 == "ECONNREFUSED"
            && c[1].0 == c[0].0
            && c[1].1 < 0.5
            && v4_placeholder(&c[usize::from(order == "64")].2)
            && v6_placeholder(&c[usize::from(order == "46")].2);
        if !ok || dials != 1 {
            fails.push(format!("refuser:{port} families {order}: both refused, the second at once, one dial (got {dials} dials): {}", r.text()));
        }
    }
    // A peer that never answers: the first connect ends at TSPROXY_CONNECT_TIMEOUT, the second
    // (other family, same name:port) must not wait that long again.
    let r = two("blackhole", "8080", "46", &[("TSPROXY_CONNECT_TIMEOUT", "1.5")]);
    let c = connect_lines(&r);
    assert!(c.first().is_some_and(|c| c.0 != "ok" && (1.2..4.0).contains(&c.1)), "control, blackhole times out: {}", r.text());
    if !(c.len() == 2 && c[1].0 == c[0].0 && c[1].1 < 0.5) {
        fails.push(format!("blackhole:8080 v4 then v6: the second fails at once with the same errno: {}", r.text()));
    }
    // Happy eyeballs against a slow peer (every dial takes ~1 s: the first SYN is dropped, so
    // one dial is exactly 2 SYNs). curl races the second family against the first (after
    // 200 ms): tsproxy holds the second until the first ends, so one tunnel. node does not race:
    // it closes an attempt after 250 ms (autoSelectFamilyAttemptTimeout) and connects the next
    // address: the closed attempt is kept and the next adopts its tunnel, so one tunnel too
    // (see node_autoselectfamily_closes_a_slow_attempt_and_the_next_adopts_its_tunnel).
    for (what, script) in [
        ("curl", "exec $TSP curl -sS --max-time 10 http://slow-peer:8080/"),
        (
            "node",
            "exec $TSP node -e \"require('http').get('http://slow-peer:8080/', r => { let d = ''; r.on('data', c => d += c); r.on('end', () => console.log(d.trim())); }).on('error', e => console.log('ERR ' + e.code))\"",
        ),
    ] {
        let before = counter("slow_dial");
        let r = sh(Ns::Ws, script, &[], 20);
        let syns = counter("slow_dial") - before;
        assert_eq!(r.stdout.trim(), PEER, "{what} slow-peer: {}", r.text());
        if syns != 2 {
            fails.push(format!("{what} http://slow-peer:8080/: one tunnel is 2 SYNs, got {syns}"));
        }
    }
    // And a fast peer by name: one dial for one request.
    let before = counter("peer1_8081_dial");
    let r = sh(Ns::Ws, "exec $TSP curl -sS --max-time 10 http://peer-1:8081/", &[], 20);
    assert_eq!(r.stdout.trim(), PEER, "{}", r.text());
    let dials = counter("peer1_8081_dial") - before;
    if dials != 1 {
        fails.push(format!("curl http://peer-1:8081/: one dial, got {dials}"));
    }
    assert!(fails.is_empty(), "{} failed:\n{}", fails.len(), fails.join("\n"));
    no_leak();
}

/// The tests that count dials of peer-1:8081 (exact counts), one at a time.
static PEER1_8081: Mutex<()> = Mutex::new(());

/// topology.sh's opt-in slow dial of one address and port (its first SYN dropped: ~1 s), with
/// counter `slow_syn`, removed when dropped (also when the test fails).
struct SlowDial;
impl SlowDial {
    fn on(addr: &str, port: &str) -> SlowDial {
        let g = SlowDial;
        let out = Command::new("bash").args([concat!(env!("CARGO_MANIFEST_DIR"), "/tests/netns/topology.sh"), "slow", addr, port]).output().unwrap();
        assert!(out.status.success(), "topology.sh slow: {}", String::from_utf8_lossy(&out.stderr));
        g
    }
}
impl Drop for SlowDial {
    fn drop(&mut self) {
        let _ = Command::new("bash").args([concat!(env!("CARGO_MANIFEST_DIR"), "/tests/netns/topology.sh"), "noslow"]).output();
    }
}

/// node (>= 20) with `autoSelectFamily` on (its default): `net.connect` to HOST:PORT, or
/// `http.get` (MODE), printing what node says about its attempts (the `connectionAttempt*`
/// events), the peer's reply, the peer address node reports and the time taken. LOOKUP (an
/// IPv4 address): a lookup that gives it as IPv4 and as a v4-mapped IPv6 address (the control
/// without the library: two families, one server).
const NODE_ATTEMPTS: &str = r#"
const net = require('net'), http = require('http');
const [mode, host, port, lookup] = process.argv.slice(1);
const t0 = Date.now(), ev = [];
const opts = { host, port: +port };
if (lookup) opts.lookup = (h, o, cb) => o.all ? cb(null, [{ address: lookup, family: 4 }, { address: '::ffff:' + lookup, family: 6 }]) : cb(null, lookup, 4);
let remote = '';
const watch = s => {
  s.on('connectionAttempt', ip => ev.push('try ' + ip));
  s.on('connectionAttemptTimeout', ip => ev.push('timeout ' + ip));
  s.on('connectionAttemptFailed', (ip, p, f, e) => ev.push('failed ' + ip + ' ' + (e && e.code)));
  s.on('connect', () => { remote = s.remoteAddress + ' ' + s.remoteFamily; });
};
const done = (status, body) => {
  console.log('status=' + status);
  console.log('body=' + body.trim());
  console.log('remote=' + remote);
  console.log('events=' + ev.join(','));
  console.log('secs=' + ((Date.now() - t0) / 1000).toFixed(3));
};
if (mode === 'net') {
  const s = net.connect(opts);
  watch(s);
  s.on('connect', () => s.write('GET / HTTP/1.0\r\nHost: ' + host + '\r\n\r\n'));
  let d = '';
  s.on('data', c => d += c);
  s.on('end', () => done(d.split('\r\n')[0], d.split('\r\n\r\n').slice(1).join('')));
  s.on('error', e => done('ERR ' + e.code, ''));
} else {
  const req = http.get({ ...opts, path: '/', agent: false }, r => { let d = ''; r.on('data', c => d += c); r.on('end', () => done(r.statusCode, d)); });
  req.on('socket', watch);
  req.on('error', e => done('ERR ' + e.code, ''));
}
"#;

fn slow_syn() -> u64 {
    counter("slow_syn")
}

/// By hand: a connect through the IPv4 placeholder closed
/// after 100 ms (kept), then: nothing (the kept socket is closed after 1 s), a blocking
/// connect through the IPv6 placeholder (adopts, waits), a fork while one is kept (the child's
/// copy is closed) and a nonblocking IPv6 connect in the parent (adopts). Sockets counted in
/// /proc/self/fd.
const ADOPT_PY: &str = r#"
import errno, os, select, socket, sys, time
host, port = sys.argv[1], int(sys.argv[2])
v4 = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)[0][4]
v6 = socket.getaddrinfo(host, port, socket.AF_INET6, socket.SOCK_STREAM)[0][4]
def fds():
    out = set()
    for f in os.listdir("/proc/self/fd"):
        try:
            if os.readlink("/proc/self/fd/" + f).startswith("socket:"):
                out.add(f)
        except OSError:
            pass
    return out
def attempt():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    r = s.connect_ex(v4)
    time.sleep(0.1)
    s.close()
    return r
def get(s):
    s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
    d = b""
    while True:
        c = s.recv(4096)
        if not c:
            break
        d += c
    return d.split(b"\r\n")[0].decode()
# 1. expiry: a kept socket nobody adopts is closed after the grace period.
base = fds()
r = attempt()
time.sleep(0.05)
kept = len(fds() - base)
time.sleep(1.3)
print("expiry=%s kept=%d after=%d" % (errno.errorcode.get(r, r), kept, len(fds() - base)), flush=True)
# 2. a blocking connect adopts and waits for the end.
attempt()
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
t = time.monotonic()
s.connect(v6)
print("blocking=%s %.3f peer=%s v6=%s" % (get(s), time.monotonic() - t, s.getpeername()[0], v6[0]), flush=True)
s.close()
# 3. fork while a socket is kept: the child's copy is closed; the parent adopts.
base = fds()
attempt()
time.sleep(0.05)
pid = os.fork()
if pid == 0:
    print("child_extra=%d" % len(fds() - base), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setblocking(False)
r = s.connect_ex(v6)
select.select([], [s], [], 5)
err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
s.setblocking(True)
print("fork=%s %s %s" % (errno.errorcode.get(r, r), err, get(s)), flush=True)
s.close()
time.sleep(1.2)
print("end_extra=%d" % len(fds() - base), flush=True)
"#;

/// node does not race the two families: it closes an attempt that has not connected after
/// 250 ms (`autoSelectFamilyAttemptTimeout`) and connects the next address. With the proxy's
/// dial of the peer taking ~1 s (the first SYN dropped on the tailnet side, topology.sh's
/// `slow`), the IPv4 placeholder's attempt is closed in flight and the IPv6 placeholder's
/// connect adopts its tunnel: ONE dial at the proxy (2 SYNs), for `net.connect` and for
/// `http.get` by name; node reports both attempts and the IPv6 placeholder as the peer. The
/// control without the library (the same slow dial to a public address given to node as IPv4
/// and as v4-mapped IPv6) shows node's own behaviour: two connections, the first torn down
/// after one SYN (3 SYNs).
#[test]
fn node_autoselectfamily_closes_a_slow_attempt_and_the_next_adopts_its_tunnel() {
    if !ready() {
        return;
    }
    let _peer1_8081 = PEER1_8081.lock().unwrap_or_else(|e| e.into_inner());
    let v = Command::new("node")
        .args([
            "-p",
            "process.versions.node + ' ' + require('net').getDefaultAutoSelectFamily() + ' ' + require('net').getDefaultAutoSelectFamilyAttemptTimeout()",
        ])
        .output()
        .unwrap();
    let v = String::from_utf8_lossy(&v.stdout).trim().to_string();
    let f: Vec<&str> = v.split_whitespace().collect();
    if f.get(1) != Some(&"true") || f.get(2) != Some(&"250") {
        assert!(!required(), "node {v}: autoSelectFamily must be on by default (node >= 20)");
        eprintln!("names test skipped: node {v} has no autoSelectFamily by default");
        return;
    }
    let node = |how: &str, mode: &str, host: &str, port: &str, lookup: &str| {
        sh(
            Ns::Ws,
            &format!("exec {how} node -e \"$JS\" \"$M\" \"$H\" \"$P\" \"$L\""),
            &[("JS", NODE_ATTEMPTS), ("M", mode), ("H", host), ("P", port), ("L", lookup)],
            20,
        )
    };
    let mut fails = Vec::new();
    {
        let _slow = SlowDial::on("100.64.0.2", "8081");
        // Control: the slow dial is real — one request through the proxy by IP takes ~1 s and
        // one dial (2 SYNs).
        let before = slow_syn();
        let r = sh(Ns::Ws, "exec $TSP curl -sS --max-time 10 -w ' secs=%{time_total}' http://100.64.0.2:8081/", &[], 20);
        let secs: f64 = r.stdout.rsplit("secs=").next().and_then(|s| s.trim().parse().ok()).unwrap_or(0.0);
        assert!(r.stdout.starts_with(PEER) && secs > 0.8, "control: a slow dial: {}", r.text());
        assert_eq!(slow_syn() - before, 2, "control: one dial is 2 SYNs: {}", r.text());
        for mode in ["net", "http"] {
            let before = slow_syn();
            let r = node("$TSP", mode, "peer-1", "8081", "");
            let syns = slow_syn() - before;
            let ev = kv(&r, "events");
            let e: Vec<&str> = ev.split(',').collect();
            let attempts_ok = e.len() == 3
                && e[0].strip_prefix("try ").is_some_and(v4_placeholder)
                && e[1] == e[0].replace("try ", "timeout ")
                && e[2].strip_prefix("try ").is_some_and(v6_placeholder);
            let remote = kv(&r, "remote");
            let body_ok = kv(&r, "body") == PEER && (kv(&r, "status") == "200" || kv(&r, "status").starts_with(PEER_REPLY));
            let remote_ok = remote.strip_suffix(" IPv6").is_some_and(v6_placeholder) && e.get(2).is_some_and(|t| t.ends_with(remote.trim_end_matches(" IPv6")));
            eprintln!("node {mode} peer-1:8081 (slow dial): {syns} SYNs, {}", r.text());
            if !(attempts_ok && body_ok && remote_ok && syns == 2) {
                fails.push(format!(
                    "node {mode} peer-1:8081: v4 attempt timed out by node, v6 adopted its tunnel: one dial (2 SYNs, got {syns}), the page, the v6 placeholder as peer: {}",
                    r.text()
                ));
            }
        }
        // The same by hand (python): expiry, a blocking adopter, fork while kept. Each part is
        // one dial (2 SYNs); without adoption parts 2 and 3 would dial twice.
        let before = slow_syn();
        let r = sh(Ns::Ws, "exec $TSP python3 -c \"$PY\" peer-1 8081", &[("PY", ADOPT_PY)], 20);
        let syns = slow_syn() - before;
        let blocking = kv(&r, "blocking");
        let b: Vec<&str> = blocking.split_whitespace().collect();
        let ok = kv(&r, "expiry") == "EINPROGRESS kept=1 after=0"
            && b.len() == 6
            && b[..3] == ["HTTP/1.0", "200", "OK"]
            && b[4].strip_prefix("peer=").is_some_and(v6_placeholder)
            && b[4].strip_prefix("peer=") == b[5].strip_prefix("v6=")
            && kv(&r, "child_extra") == "0"
            && kv(&r, "fork") == "EINPROGRESS 0 HTTP/1.0 200 OK"
            && kv(&r, "end_extra") == "0";
        eprintln!("python, kept/expired/blocking/fork: {syns} SYNs, {}", r.text());
        if !(ok && syns == 6) {
            fails.push(format!("python: kept 1 socket then closed it; a blocking and a post-fork connect adopted; 3 dials (6 SYNs, got {syns}): {}", r.text()));
        }
    }
    // Control: node's own behaviour without the library, the same slow dial (a public server
    // of our own on 198.51.100.10:8090, given to node as IPv4 and as v4-mapped IPv6).
    let mut c = Command::new("ip");
    c.args(["netns", "exec", "tsp-tn", "python3", "-m", "http.server", "--bind", "198.51.100.10", "--directory", &format!("{RUN_DIR}/www"), "8090"]);
    c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).process_group(0);
    let _server = Server(c.spawn().unwrap());
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        Command::new("ip")
            .args(["netns", "exec", "tsp-ws", "bash", "-c", "exec 3<>/dev/tcp/198.51.100.10/8090"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(up, "the control server on 198.51.100.10:8090 did not come up");
    {
        let _slow = SlowDial::on("198.51.100.10", "8090");
        let before = slow_syn();
        let r = node("", "net", "control.example", "8090", "198.51.100.10");
        let syns = slow_syn() - before;
        let ev = kv(&r, "events");
        eprintln!("control, node without the library (slow dial): {syns} SYNs, {}", r.text());
        // (The first attempt's `connectionAttempt` is emitted before the listener is on: the
        // lookup answers synchronously.)
        let want = "timeout 198.51.100.10,try ::ffff:198.51.100.10";
        if !(ev.ends_with(want) && kv(&r, "body") == PEER && syns == 3) {
            fails.push(format!(
                "control, node alone: two connections, the first closed after 250 ms (1 SYN + 2 SYNs = 3, got {syns}), events {want}: {}",
                r.text()
            ));
        }
    }
    assert!(fails.is_empty(), "{} failed:\n{}", fails.len(), fails.join("\n"));
    no_leak();
}

// ---------------------------------------------------------------- 3. DNS spoken by the program

/// dig asks the system resolver itself (UDP, and TCP with +tcp): under a bare LD_PRELOAD a
/// tailnet name is answered with the placeholders getaddrinfo gives (A and AAAA) and never
/// reaches the server; a public name is answered by the server.
#[test]
fn dig_udp_and_tcp_through_the_library() {
    if !ready() || !tool("dig") {
        return;
    }
    let res = Resolver(11);
    let dig = |args: &str| sh(Ns::Dns(11), &format!("LD_PRELOAD=$LIB exec dig +time=3 +tries=1 +short @$NS {args}"), &[("NS", &res.addr())], 20);
    // Control: a public name reaches the real server and its answer comes back (UDP and TCP).
    for proto in ["", "+tcp"] {
        let r = dig(&format!("{proto} public.example A"));
        assert_eq!(r.stdout.trim(), "198.51.100.10", "control, dig {proto} public.example: {}", r.text());
    }
    assert!(res.was_asked("public.example"), "control: the server logged public.example: {:?}", res.asked());
    let want4 = resolve_in_another_process(Ns::Ws, "ahostsv4", "peer-1");
    let want6 = resolve_in_another_process(Ns::Ws, "ahostsv6", "peer-1");
    let fqdn4 = resolve_in_another_process(Ns::Ws, "ahostsv4", "peer-1.tail1234.ts.net");
    let mut fails = Vec::new();
    for proto in ["", "+tcp"] {
        for (name, ty, want) in [("peer-1", "A", &want4), ("peer-1", "AAAA", &want6), ("peer-1.tail1234.ts.net", "A", &fqdn4)] {
            let r = dig(&format!("{proto} {name} {ty}"));
            let got = r.stdout.trim();
            if got != want.as_str() {
                fails.push(format!("dig {proto} {name} {ty}: {want} (as getaddrinfo gives): {}", r.text()));
            }
        }
    }
    // What dig got reaches the name from another process.
    let r = dig("peer-1 A");
    let a = r.stdout.trim().to_string();
    if v4_placeholder(&a) {
        let r = sh(Ns::Ws, "exec $TSP curl -sS --max-time 10 \"http://$A:8080/\"", &[("A", &a)], 20);
        if r.stdout.trim() != PEER {
            fails.push(format!("curl http://{a}:8080/ (dig's answer, another process): {}", r.text()));
        }
    }
    res.no_tailnet_name(&mut fails);
    assert!(fails.is_empty(), "{} failed:\n{}", fails.len(), fails.join("\n"));
    no_leak();
}

/// node's `dns.resolve4`/`resolve6` (c-ares, to the system resolver) then a connect to the
/// answer, under the launcher and under a bare LD_PRELOAD; a public name from the real server.
#[test]
fn node_dns_resolve4_then_connect() {
    if !ready() {
        return;
    }
    let js = r#"
const dns = require('dns').promises, net = require('net');
setTimeout(() => { console.log('timeout=1'); process.exit(3); }, 20000).unref();
function get(addr) {
  return new Promise(done => {
    const s = net.connect(8080, addr, () => s.write('GET / HTTP/1.0\r\n\r\n'));
    let d = '';
    s.on('data', c => d += c);
    s.on('end', () => done((d.split('\r\n\r\n')[1] || '').trim()));
    s.on('error', e => done('ERR ' + e.code));
  });
}
async function ask(k, f) {
  try { const a = await f(); console.log(k + '=' + a.join(',')); return a; }
  catch (e) { console.log(k + '=ERR ' + e.code); return null; }
}
(async () => {
  const pub = await ask('public', () => dns.resolve4(process.env.PUB));
  const a = await ask('a', () => dns.resolve4('peer-1'));
  if (a) console.log('body=' + await get(a[0]));
  const f = await ask('fqdn', () => dns.resolve4('peer-1.tail1234.ts.net'));
  if (f) console.log('fqdnbody=' + await get(f[0]));
  const a6 = await ask('aaaa', () => dns.resolve6('peer-1'));
  if (a6) console.log('body6=' + await get(a6[0]));
})();
"#;
    let res = Resolver(12);
    let mut fails = Vec::new();
    for (how, pub_name) in [("$TSP node", "node-launcher.public.example"), ("env LD_PRELOAD=$LIB node", "node-preload.public.example")] {
        let r = sh(Ns::Dns(12), &format!("exec {how} -e \"$JS\""), &[("JS", js), ("PUB", pub_name)], 30);
        assert_eq!(kv(&r, "public"), "198.51.100.10", "control, {how}: resolve4 of a public name: {}", r.text());
        assert!(res.was_asked(pub_name), "control: the server logged {pub_name}: {:?}", res.asked());
        let ok = v4_placeholder(&kv(&r, "a"))
            && kv(&r, "body") == PEER
            && v4_placeholder(&kv(&r, "fqdn"))
            && kv(&r, "fqdnbody") == PEER
            && v6_placeholder(&kv(&r, "aaaa"))
            && kv(&r, "body6") == PEER;
        if !ok {
            fails.push(format!("{how}: resolve4/resolve6 of tailnet names, then connect: {}", r.text()));
        }
    }
    res.no_tailnet_name(&mut fails);
    assert!(fails.is_empty(), "{} failed:\n{}", fails.len(), fails.join("\n"));
    no_leak();
}

/// A python venv under the target dir with grpcio and dnspython (pip), once per test process.
/// None (skip) when pip fails, unless TSPROXY_REQUIRE_GRPC=1.
fn venv_python() -> Option<PathBuf> {
    static P: Mutex<Option<Option<PathBuf>>> = Mutex::new(None);
    let mut g = P.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = g.as_ref() {
        return p.clone();
    }
    let venv = target_dir().join("names-venv");
    let py = venv.join("bin/python");
    let has = |py: &PathBuf| Command::new(py).args(["-c", "import grpc, dns.resolver"]).output().is_ok_and(|o| o.status.success());
    let mut why = None;
    if !has(&py) {
        let mut c = Command::new("python3");
        c.args(["-m", "venv"]).arg(&venv);
        let r = bounded(c, 120);
        if r.ok() {
            let mut c = Command::new(&py);
            c.args(["-m", "pip", "install", "-q", "grpcio", "dnspython"]);
            let r = bounded(c, 600);
            if !r.ok() {
                why = Some(r.text());
            }
        } else {
            why = Some(r.text());
        }
    }
    let out = if has(&py) {
        Some(py)
    } else {
        let why = why.unwrap_or_default();
        assert!(std::env::var("TSPROXY_REQUIRE_GRPC").as_deref() != Ok("1"), "grpcio and dnspython are required (TSPROXY_REQUIRE_GRPC=1):\n{why}");
        eprintln!("names test skipped: grpcio/dnspython could not be installed:\n{why}");
        None
    };
    *g = Some(out.clone());
    out
}

/// A child (and its descendants) killed when dropped.
struct Server(std::process::Child);
impl Drop for Server {
    fn drop(&mut self) {
        kill_group(self.0.id());
        let _ = self.0.wait();
    }
}

const GRPC_SERVER: &str = r#"
import grpc
from concurrent import futures
def echo(req, ctx):
    return b"pong:" + req
h = grpc.method_handlers_generic_handler("t.T", {"Echo": grpc.unary_unary_rpc_method_handler(echo)})
s = grpc.server(futures.ThreadPoolExecutor(4))
s.add_generic_rpc_handlers((h,))
port = s.add_insecure_port("100.64.0.2:0")
s.start()
print(port, flush=True)
s.wait_for_termination(120)
"#;

const GRPC_CLIENT: &str = r#"
import grpc, sys
for target in sys.argv[1:]:
    try:
        with grpc.insecure_channel(target) as ch:
            r = ch.unary_unary("/t.T/Echo")(b"ping", timeout=10)
        print("%s=%s" % (target, r.decode()))
    except Exception as e:
        print("%s=ERR %s" % (target, repr(e).replace("\n", " ")[:300]))
"#;

/// python grpcio with its default resolver (c-ares: GRPC_DNS_RESOLVER unset) to a gRPC server
/// on peer-1 (100.64.0.2, in the tailnet namespace), by short name and FQDN; by IP (control).
#[test]
fn grpc_default_resolver_by_name() {
    if !ready() {
        return;
    }
    let Some(py) = venv_python() else { return };
    let mut c = Command::new("ip");
    c.args(["netns", "exec", "tsp-tn"]).arg(&py).args(["-c", GRPC_SERVER]);
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut server = Server(c.spawn().unwrap());
    let lines = collect(Box::new(server.0.stdout.take().unwrap()));
    let port = lines
        .recv_timeout(Duration::from_secs(30))
        .ok()
        .and_then(|v| String::from_utf8_lossy(&v).trim().parse::<u16>().ok())
        .unwrap_or_else(|| panic!("the gRPC server on 100.64.0.2 did not start"));
    let res = Resolver(13);
    let targets = [format!("100.64.0.2:{port}"), format!("peer-1:{port}"), format!("peer-1.tail1234.ts.net:{port}")];
    let r = sh(
        Ns::Dns(13),
        "exec $TSP \"$PY\" -c \"$CLIENT\" \"$T0\" \"$T1\" \"$T2\"",
        &[("PY", &py.to_string_lossy()), ("CLIENT", GRPC_CLIENT), ("T0", &targets[0]), ("T1", &targets[1]), ("T2", &targets[2])],
        60,
    );
    drop(server);
    assert_eq!(kv(&r, &targets[0]), "pong:ping", "control, by IP: {}", r.text());
    let mut fails = Vec::new();
    for t in &targets[1..] {
        if kv(&r, t) != "pong:ping" {
            fails.push(format!("{t}: {}", kv(&r, t)));
        }
    }
    res.no_tailnet_name(&mut fails);
    assert!(fails.is_empty(), "grpcio (c-ares) by name failed for {fails:?}: {}\nthe server was asked: {:?}", r.text(), res.asked());
    no_leak();
}

/// aria2c (c-ares, async DNS) by name and FQDN under the launcher; by IP (control).
#[test]
fn aria2c_by_name() {
    if !ready() || !tool("aria2c") {
        return;
    }
    let res = Resolver(14);
    let script = r#"D=$(mktemp -d /tmp/tsp-aria2.XXXXXX) || exit 96
$TSP aria2c -q --max-tries=1 --connect-timeout=10 --timeout=10 --allow-overwrite=true --summary-interval=0 -d "$D" -o page "$URL"
rc=$?
cat "$D/page" 2>/dev/null
rm -rf "$D"
exit $rc"#;
    let mut fails = Vec::new();
    for (url, control) in [("http://100.64.0.2:8080/", true), ("http://peer-1:8080/", false), ("http://peer-1.tail1234.ts.net:8080/", false)] {
        let r = sh(Ns::Dns(14), script, &[("URL", url)], 30);
        if control {
            assert_eq!(r.stdout.trim(), PEER, "control, aria2c {url}: {}", r.text());
        } else if r.stdout.trim() != PEER {
            fails.push(format!("aria2c {url}: {}", r.text()));
        }
    }
    res.no_tailnet_name(&mut fails);
    assert!(fails.is_empty(), "{} failed:\n{}", fails.len(), fails.join("\n"));
    no_leak();
}

/// dnspython's stub resolver (its own UDP and TCP, resolv.conf's server) under a bare
/// LD_PRELOAD: tailnet names answered with placeholders, a public name by the real server.
#[test]
fn dnspython_resolves_tailnet_names() {
    if !ready() {
        return;
    }
    let Some(py) = venv_python() else { return };
    let script = r#"
import dns.resolver, sys
r = dns.resolver.Resolver()
r.lifetime = 8
for name, ty in [("py.public.example", "A"), ("peer-1", "A"), ("peer-1", "AAAA"), ("peer-1.tail1234.ts.net", "A")]:
    for tcp in (False, True):
        k = "%s_%s_%s" % (name, ty, "tcp" if tcp else "udp")
        try:
            print(k + "=" + ",".join(x.to_text() for x in r.resolve(name, ty, tcp=tcp)))
        except Exception as e:
            print(k + "=ERR " + type(e).__name__)
"#;
    let res = Resolver(15);
    let r = sh(Ns::Dns(15), "LD_PRELOAD=$LIB exec \"$PY\" -c \"$S\"", &[("PY", &py.to_string_lossy()), ("S", script)], 60);
    for p in ["udp", "tcp"] {
        assert_eq!(kv(&r, &format!("py.public.example_A_{p}")), "198.51.100.10", "control ({p}): {}", r.text());
    }
    assert!(res.was_asked("py.public.example"), "control: {:?}", res.asked());
    let want4 = resolve_in_another_process(Ns::Ws, "ahostsv4", "peer-1");
    let want6 = resolve_in_another_process(Ns::Ws, "ahostsv6", "peer-1");
    let mut fails = Vec::new();
    for p in ["udp", "tcp"] {
        for (k, ok) in [
            (format!("peer-1_A_{p}"), kv(&r, &format!("peer-1_A_{p}")) == want4),
            (format!("peer-1_AAAA_{p}"), kv(&r, &format!("peer-1_AAAA_{p}")) == want6),
            (format!("peer-1.tail1234.ts.net_A_{p}"), v4_placeholder(&kv(&r, &format!("peer-1.tail1234.ts.net_A_{p}")))),
        ] {
            if !ok {
                fails.push(format!("{k}={}", kv(&r, &k)));
            }
        }
    }
    res.no_tailnet_name(&mut fails);
    assert!(fails.is_empty(), "dnspython (want {want4} / {want6}): {fails:?}\n{}", r.text());
    no_leak();
}

/// A static musl program under the launcher: musl's getaddrinfo sends its own queries (an
/// unconnected sendto to port 53); the supervisor sends a tailnet question to its responder
/// instead (the destination rewritten in the program's memory, so musl takes the answer as the
/// server's), which answers with the placeholder; the program connects to it and talks to the
/// peer's service through the proxy. A public name still goes to the real server, whose answer
/// musl takes.
#[test]
fn static_musl_getaddrinfo_connect_under_the_launcher() {
    if !ready() || !tool("musl-gcc") {
        return;
    }
    let res = Resolver(16);
    let run = |args: &str| sh(Ns::Dns(16), &format!("exec $TSP $TCPS -s '{GET}' -r {args} 8080"), &[], 30);
    // Controls: by IP, and a public name answered by the real server and dialled directly.
    let r = run("100.64.0.2");
    assert_eq!(kv(&r, "reply"), PEER_REPLY, "control, by IP: {}", r.text());
    let before = counter("public_direct");
    let r = run("public.example");
    assert_eq!(kv(&r, "reply"), PEER_REPLY, "control, public.example from the real server: {}", r.text());
    assert!(res.was_asked("public.example"), "control: {:?}", res.asked());
    assert!(counter("public_direct") > before, "the public server was dialled directly");
    let mut fails = Vec::new();
    for (args, v6) in [("peer-1", None), ("peer-1.tail1234.ts.net", None), ("-6 peer-1", Some(true)), ("-4 peer6", Some(false))] {
        let r = run(args);
        // The address getaddrinfo gave (getpeername of a tunnelled socket names the proxy).
        let resolved = kv(&r, "resolved");
        let ip = resolved.rsplit_once(':').map_or(resolved.as_str(), |(h, _)| h).trim_matches(['[', ']']);
        let family_ok = match v6 {
            None => v4_placeholder(ip) || v6_placeholder(ip),
            Some(true) => v6_placeholder(ip),
            Some(false) => v4_placeholder(ip),
        };
        if kv(&r, "reply") != PEER_REPLY || !family_ok {
            fails.push(format!("static musl tcpclient {args} 8080: the peer's reply through a placeholder: {}", r.text()));
        }
    }
    // After a tailnet question, the program's address variable holds the responder's address:
    // a public question sent there (from the same socket, and from another) is carried to the
    // real server, and its answer comes back from the address sent to (musl's check).
    if let Some(ds) = musl("dns_send") {
        let r = sh(Ns::Dns(16), "exec $TSP \"$P\" then peer-1 musl-then.public.example $NS 53", &[("P", &ds.to_string_lossy()), ("NS", &res.addr())], 20);
        let (r0, r1, r2) = (kv(&r, "reply0"), kv(&r, "reply1"), kv(&r, "reply2"));
        let ok = r0.starts_with("id:4242 rcode:0 an:1 from:127.0.0.1:")
            && r0.contains(" addr:240.")
            && r0.ends_with(" same:1")
            && [(&r1, "4244"), (&r2, "4245")]
                .iter()
                .all(|(r, id)| r.starts_with(&format!("id:{id} rcode:0 an:1 from:127.0.0.1:")) && r.ends_with(" addr:198.51.100.10 same:1"));
        if !ok || res.asked().iter().filter(|n| *n == "musl-then.public.example").count() != 2 {
            fails.push(format!("a public question to the rewritten address, twice, answered by the real server: {}\nasked: {:?}", r.text(), res.asked()));
        }
    }
    res.no_tailnet_name(&mut fails);
    assert!(fails.is_empty(), "{} failed:\n{}", fails.len(), fails.join("\n"));
    no_leak();
}

/// One question asked by a program's own DNS client (c-harness/dns_ask.c) to the system
/// resolver: an unconnected `sendto` (musl, dnspython), a connected UDP socket (c-ares, libuv,
/// dig) and TCP, dynamic under a bare LD_PRELOAD and static (musl) under the launcher. A
/// tailnet name is answered with the placeholder getaddrinfo gives, the reply from the address
/// asked (a stub resolver drops any other) with the query's ID; a public name is the real
/// server's answer (control).
#[test]
fn own_dns_client_udp_connected_udp_and_tcp() {
    if !ready() || !tool("musl-gcc") {
        return;
    }
    let Some(st) = musl("dns_ask") else { return };
    let dy = harness("dns_ask");
    let res = Resolver(18);
    let want4 = resolve_in_another_process(Ns::Ws, "ahostsv4", "peer-1");
    let want6 = resolve_in_another_process(Ns::Ws, "ahostsv6", "peer-1");
    let mut fails = Vec::new();
    for (via, prog) in [("env LD_PRELOAD=$LIB", &dy), ("$TSP", &st)] {
        for mode in ["udp", "cudp", "tcp"] {
            for (ty, name, want) in [("A", "public.example", "198.51.100.10"), ("A", "peer-1", want4.as_str()), ("AAAA", "peer-1", want6.as_str())] {
                let r = sh(Ns::Dns(18), &format!("exec {via} \"$P\" {mode} {ty} {name} $NS 53"), &[("P", &prog.to_string_lossy()), ("NS", &res.addr())], 20);
                // A static program's question for a tailnet name on an unconnected socket went
                // to the supervisor's responder (its destination rewritten in the program's
                // memory to 127.0.0.1:<responder>): the reply comes from there, the address the
                // program's variable now holds; anything else from the server asked.
                let static_unconnected = via == "$TSP" && mode == "udp" && name != "public.example";
                let from = kv(&r, "from");
                let from_ok = mode != "udp"
                    || if static_unconnected { from.starts_with("127.0.0.1:") && from != "127.0.0.1:53" } else { from == format!("{}:53", res.addr()) };
                let ok = kv(&r, "errno") == "0" && kv(&r, "rcode") == "0" && kv(&r, "id_ok") == "1" && kv(&r, "an") == want && from_ok;
                let what = format!("{via} {} {mode} {ty} {name}", prog.file_name().unwrap().to_string_lossy());
                if name == "public.example" {
                    assert!(ok, "control, {what}: the real server's answer: {}", r.text());
                } else if !ok {
                    fails.push(format!("{what}: want {want}, from {}:53: {}", res.addr(), r.text()));
                }
            }
        }
    }
    assert!(res.was_asked("public.example"), "control: {:?}", res.asked());
    res.no_tailnet_name(&mut fails);
    assert!(fails.is_empty(), "{} failed:\n{}", fails.len(), fails.join("\n"));
    no_leak();
}

// ---------------------------------------------------------------- 4. Chromium

/// Headless Chromium under the launcher (it resolves in the browser process or with its own
/// DNS client, and connects from its network service process) by short name and FQDN; by IP
/// (control, works today).
#[test]
fn chromium_headless_by_name_and_fqdn() {
    if !ready() || !tool("chromium") {
        return;
    }
    let res = Resolver(17);
    let script = r#"D=$(mktemp -d /tmp/tsp-chromium.XXXXXX) || exit 96
$TSP chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$D" --dump-dom "$URL"
rc=$?
rm -rf "$D"
exit $rc"#;
    let mut fails = Vec::new();
    for (url, control) in [("http://100.64.0.2:8080/", true), ("http://peer-1:8080/", false), ("http://peer-1.tail1234.ts.net:8080/", false)] {
        let r = sh(Ns::Dns(17), script, &[("URL", url)], 40);
        if control {
            assert!(r.stdout.contains(PEER), "control, chromium {url}: {}", r.text());
        } else if !r.stdout.contains(PEER) {
            let tail: String = r.stderr.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
            fails.push(format!(
                "chromium --dump-dom {url}: status={:?} timed_out={} secs={:.1}\nstdout: {}\nstderr (end): {tail}",
                r.status,
                r.timed_out,
                r.secs,
                r.stdout.trim()
            ));
        }
    }
    res.no_tailnet_name(&mut fails);
    assert!(fails.is_empty(), "{} failed:\n{}", fails.len(), fails.join("\n"));
    no_leak();
}

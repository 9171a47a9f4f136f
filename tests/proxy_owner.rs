//! Another local user squatting the proxy's port (README, Threat model: "Another local user
//! gains nothing"). While the real proxy is not listening (before tailscaled starts, during a
//! restart), uid 65534 listens on the loopback port the program's `TSPROXY_PROXY` names. Before
//! tsproxy writes the greeting, the password or the destination there, it asks the kernel
//! (sock_diag) who owns the proxy's end: another user gets zero bytes and the program
//! `ECONNREFUSED`, as if the proxy were down. Root only (the squatter is another uid);
//! 127.0.0.1 of the root namespace only, no topology; every child under a time bound.
mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The system's interpreter by its path: a pyenv shim first on PATH is a bash script that
/// uid 65534 may not read, and that looks up the home directory through NSS without HOME.
const PYTHON: &str = "/usr/bin/python3";

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let r = unsafe { libc::geteuid() } == 0;
    if !r {
        eprintln!("skipped: needs root (the squatter is uid 65534)");
    }
    r
}

/// A SOCKS5 server that records every byte it receives (one `got HEX` line per read) and
/// answers enough of the protocol (method, auth, a REP 0x05 refusal) for a client to send all
/// it would send to a real proxy.
const RECORDER: &str = r#"
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if len(sys.argv) > 1 and sys.argv[1] == 'defer':
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 5)
s.bind(('127.0.0.1', 0))
s.listen(64)
print('port', s.getsockname()[1], flush=True)
def h(c):
    c.settimeout(5)
    try:
        d = c.recv(4096)
        if not d:
            print('empty', flush=True); return
        print('got', d.hex(), flush=True)
        if d[:1] == b'\x05':
            m = 2 if 2 in d[2:2 + d[1]] else 0
            c.sendall(bytes([5, m]))
            if m == 2:
                d = c.recv(4096); print('got', d.hex(), flush=True); c.sendall(b'\x01\x00')
            d = c.recv(4096); print('got', d.hex(), flush=True)
            c.sendall(b'\x05\x05\x00\x01' + bytes(6))
        while True:
            d = c.recv(4096)
            if not d: break
            print('got', d.hex(), flush=True)
    except Exception as e:
        print('err', e, flush=True)
    finally:
        c.close()
while True:
    c, _ = s.accept()
    print('accepted', flush=True)
    threading.Thread(target=h, args=(c,), daemon=True).start()
"#;

struct Recorder {
    child: Child,
    port: u16,
    lines: mpsc::Receiver<String>,
}

impl Recorder {
    /// Start the recorder as `uid` (None: as root, the test's own user).
    fn start(uid: Option<u32>) -> Recorder {
        Recorder::start_with(uid, false)
    }

    /// With `defer`, TCP_DEFER_ACCEPT: a connection stays a request socket (which sock_diag
    /// reports as uid 0) until its first byte arrives.
    fn start_with(uid: Option<u32>, defer: bool) -> Recorder {
        let mut c = match uid {
            Some(u) => {
                let mut c = Command::new("setpriv");
                c.args([format!("--reuid={u}"), format!("--regid={u}"), "--clear-groups".into(), "timeout".into(), "60".into(), PYTHON.into()]);
                c
            }
            None => {
                let mut c = Command::new("timeout");
                c.args(["60", PYTHON]);
                c
            }
        };
        // A process group of its own, killed whole on drop: `timeout` forks the recorder, and
        // killing `timeout` alone left it running (holding the pipes and any lock the test
        // process inherited, /run/tsproxy-netns.lock under `flock`).
        let mut child = c
            .args(["-c", RECORDER])
            .args(defer.then_some("defer"))
            .env_remove("LD_PRELOAD")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let first = rx.recv_timeout(Duration::from_secs(10)).expect("recorder did not start");
        let port = first.strip_prefix("port ").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("recorder said {first:?}"));
        Recorder { child, port, lines: rx }
    }

    /// Everything received so far (after a short settle), as one hex string, and the lines.
    fn received(&self) -> (String, Vec<String>) {
        let mut lines = Vec::new();
        let end = Instant::now() + Duration::from_millis(300);
        while let Ok(l) = self.lines.recv_timeout(end.saturating_duration_since(Instant::now())) {
            lines.push(l);
        }
        let hex: String = lines.iter().filter_map(|l| l.strip_prefix("got ")).collect();
        (hex, lines)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // SAFETY: kill has no memory preconditions; the group is the recorder's own (above).
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hex(s: &[u8]) -> String {
    s.iter().map(|b| format!("{b:02x}")).collect()
}

fn url(port: u16) -> String {
    format!("socks5://alice:s3cret@127.0.0.1:{port}")
}

/// tcpclient under bare LD_PRELOAD connecting to a tailnet address through `proxy`.
fn preloaded_client(proxy: &str, owner: Option<&str>) -> Output {
    let mut c = Command::new("timeout");
    c.args(["30"]).arg(harness("tcpclient")).args(["100.64.0.2", "80"]);
    for k in TSPROXY_ENV {
        c.env_remove(k);
    }
    c.env("LD_PRELOAD", lib()).env("TSPROXY_PROXY", proxy).env("TSPROXY_CONNECT_TIMEOUT", "5");
    if let Some(o) = owner {
        c.env("TSPROXY_PROXY_OWNER", o);
    }
    c.output().unwrap()
}

/// The static tcpclient under the launcher (the supervisor dials), to a tailnet name.
fn supervised_client(proxy: &str, owner: Option<&str>) -> Option<Output> {
    let prog = static_tcpclient()?;
    let mut c = Command::new("timeout");
    c.args(["30"]).arg(launcher()).args(["--supervisor=on", "--proxy", proxy]).arg(prog).args(["100.64.0.2", "80"]);
    for k in TSPROXY_ENV {
        c.env_remove(k);
    }
    c.env_remove("LD_PRELOAD").env("TSPROXY_CONNECT_TIMEOUT", "5");
    if let Some(o) = owner {
        c.env("TSPROXY_PROXY_OWNER", o);
    }
    Some(c.output().unwrap())
}

fn refused(out: &Output, how: &str) {
    let k = kv(out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(k.get("connect").map(String::as_str), Some("fail"), "{how}: {}", text(out));
    assert_eq!(k.get("errno").map(String::as_str), Some("ECONNREFUSED"), "{how}: {}", text(out));
    assert!(err.contains("uid 65534") && err.contains("TSPROXY_PROXY_OWNER=65534"), "{how}: the log names the owner and the key: {err}");
    assert!(!err.contains("s3cret"), "{how}: the password in a log line: {err}");
    assert_eq!(err.matches("belongs to uid 65534").count(), 1, "{how}: one error line per process: {err}");
}

/// The attack: uid 65534 on the port, the program (root) with a password. Nothing reaches it.
#[test]
fn another_users_listener_gets_nothing() {
    if !root() {
        return;
    }
    let r = Recorder::start(Some(65534));
    let out = preloaded_client(&url(r.port), None);
    let (got, lines) = r.received();
    assert_eq!(got, "", "uid 65534 received bytes (LD_PRELOAD): {lines:?}\n{}", text(&out));
    refused(&out, "LD_PRELOAD");

    if let Some(out) = supervised_client(&url(r.port), None) {
        let (got, lines) = r.received();
        assert_eq!(got, "", "uid 65534 received bytes (supervisor): {lines:?}\n{}", text(&out));
        refused(&out, "supervisor");
    } else {
        eprintln!("static tcpclient unavailable: the supervisor half skipped");
    }
}

/// The squatter defers accept (TCP_DEFER_ACCEPT): its end is a request socket, which the
/// kernel reports as owned by uid 0. Not taken for root: the listener's owner decides.
#[test]
fn a_request_socket_is_not_taken_for_root() {
    if !root() {
        return;
    }
    let r = Recorder::start_with(Some(65534), true);
    let out = preloaded_client(&url(r.port), None);
    let (got, lines) = r.received();
    assert_eq!(got, "", "uid 65534 received bytes: {lines:?}\n{}", text(&out));
    refused(&out, "deferred accept");
}

/// Controls: the same recorder as root, or as 65534 with TSPROXY_PROXY_OWNER=65534 or any,
/// gets the greeting and the credentials (so the test above can fail).
#[test]
fn trusted_listeners_get_the_handshake() {
    if !root() {
        return;
    }
    let greeting = hex(&[5, 2, 0, 2]);
    let auth = hex(b"\x01\x05alice\x06s3cret");
    for (uid, owner) in [(None, None), (Some(65534), Some("65534")), (Some(65534), Some("1000, 65534")), (Some(65534), Some("any"))] {
        let r = Recorder::start(uid);
        let out = preloaded_client(&url(r.port), owner);
        let (got, lines) = r.received();
        assert!(got.starts_with(&format!("{greeting}{auth}")), "uid {uid:?} owner {owner:?}: {lines:?}\n{}", text(&out));
        assert_eq!(kv(&out).get("errno").map(String::as_str), Some("ECONNREFUSED"), "REP 0x05: {}", text(&out));
        if let Some(out) = supervised_client(&url(r.port), owner) {
            let (got, lines) = r.received();
            assert!(got.starts_with(&format!("{greeting}{auth}")), "supervisor, uid {uid:?} owner {owner:?}: {lines:?}\n{}", text(&out));
        }
    }
}

/// A bad value is a configuration error (the launcher exits 2 naming the key).
#[test]
fn owner_names_are_refused_with_the_key() {
    let out = Command::new(launcher()).args(["--proxy", "socks5://127.0.0.1:9", "true"]).env("TSPROXY_PROXY_OWNER", "tsproxy-px").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TSPROXY_PROXY_OWNER"), "{}", text(&out));
}

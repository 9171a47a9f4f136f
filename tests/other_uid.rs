//! Another local user against a running tsproxy (README, Threat model: "Another local user
//! gains nothing"). Root only: the program runs as root under the launcher, the other user is
//! uid 65534 (nobody), as a shared machine has them. Network: 127.0.0.1 only; every child
//! under a time bound.
mod common;

use common::world::build;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let r = unsafe { libc::geteuid() } == 0;
    if !r {
        eprintln!("skipped: needs root (the other user is uid 65534)");
    }
    r
}

/// The supervisor's DNS responder (`TSPROXY_SUPERVISOR_DNS` in the command's environment).
fn responder_port(pid: u32) -> u16 {
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    env.split(|&b| b == 0)
        .find_map(|kv| kv.strip_prefix(b"TSPROXY_SUPERVISOR_DNS="))
        .and_then(|v| std::str::from_utf8(v).ok()?.rsplit(':').next()?.parse().ok())
        .expect("TSPROXY_SUPERVISOR_DNS")
}

/// A static program under the launcher with `args` (stdin and stdout piped), and its lines.
fn victim(prog: &Path, args: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new("timeout")
        .args(["60", launcher().to_str().unwrap(), "--supervisor=on", "--proxy", "socks5://127.0.0.1:9"])
        .arg(prog)
        .args(args)
        .env_remove("LD_PRELOAD")
        .env_remove("TSPROXY_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for l in out.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    (child, rx)
}

/// The command's pid: `timeout` is the launcher's parent, and the launcher execs the command.
fn command_pid(timeout: &std::process::Child) -> i32 {
    let kids = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", timeout.id())).unwrap();
    kids.split_whitespace().next().unwrap().parse().unwrap()
}

/// `prog` as uid 65534, no environment (std drops the supplementary groups too when root sets
/// a uid).
fn as_nobody(prog: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(prog);
    c.args(args).env_clear().uid(65534).gid(65534);
    c
}

/// The supervisor's TCP DNS responder: the port of the TCP socket it listens on.
fn tcp_responder_port(sup: i32) -> u16 {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{sup}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok()?.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string))
        .collect();
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
    tcp.lines()
        .skip(1)
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let listening = f.get(3) == Some(&"0A") && inodes.iter().any(|i| f.get(9) == Some(&i.as_str()));
            listening.then(|| u16::from_str_radix(f[1].rsplit(':').next()?, 16).ok()).flatten()
        })
        .expect("the supervisor's TCP listener")
}

/// The supervisor's DNS-over-TCP responder listens on 127.0.0.1, where anyone can connect.
/// A static program asks `peer-1` over TCP (redirected there), then, while uid 65534 connects
/// to the responder in a loop (about 1000 a second, sending nothing), `peer-2`. Before, every
/// connection got a thread that waited up to 100 ms for its route, at most 32 at once: the
/// flood kept all 32 busy and the program's connection was closed unanswered (rcode=none).
/// Now a connection without a route is closed at accept, and the program is answered.
#[test]
fn another_user_connecting_in_a_loop_does_not_starve_the_tcp_responder() {
    if !root() {
        return;
    }
    let Some(prog) = build("u_dns_stale", "u_dns_stale-static", true, &[]) else { return };
    let Some(other) = build("u_dns_stale", "u_dns_stale", false, &[]) else { return };
    let (mut v, rx) = victim(&prog, &["tcpask", "peer-1", "peer-2"]);
    let first = rx.recv_timeout(Duration::from_secs(20)).expect("the program's first lookup");
    assert_eq!(first, "name=peer-1 rcode=0");
    let sup = supervisor_of(command_pid(&v)).expect("the supervisor");
    let port = tcp_responder_port(sup);
    let flood = std::thread::spawn(move || child::bounded(as_nobody(&other, &["flood", &port.to_string(), "6"]), 20));
    std::thread::sleep(Duration::from_secs(1));
    v.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    let second = rx.recv_timeout(Duration::from_secs(20)).expect("the program's second lookup");
    let f = flood.join().unwrap();
    assert!(f.kv().get("connects").and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| n > 1000), "the flood: {}", f.text());
    assert_eq!(second, "name=peer-2 rcode=0", "the program's question during the other user's flood");
    let _ = v.kill();
    let _ = v.wait();
}

/// A static program resolves `peer-1` through the responder (its UDP socket redirected there),
/// closes the socket, and waits. Uid 65534 binds the closed socket's address — free now, any
/// user may — and asks the responder 2100 new tailnet names from it. Before the responder
/// checked that a route's socket is still the program's, it took uid 65534 for the program:
/// 2047 names answered (the program's whole quota of 2048, the rest written into root's name
/// registry), and the program's next lookup, `peer-2`, got SERVFAIL. Now: no reply, and
/// `peer-2` is answered.
#[test]
fn another_user_on_a_closed_redirected_socket_is_not_the_program() {
    if !root() {
        return;
    }
    let Some(prog) = build("u_dns_stale", "u_dns_stale-static", true, &[]) else { return };
    let Some(squat) = build("u_dns_stale", "u_dns_stale", false, &[]) else { return };
    let (mut victim, rx) = victim(&prog, &["ask", "peer-1", "peer-2"]);
    let first = rx.recv_timeout(Duration::from_secs(20)).expect("the program's first lookup");
    assert!(first.starts_with("name=peer-1 rcode=0 "), "{first}");
    let port: u16 = first.rsplit("port=").next().unwrap().parse().unwrap();
    let resp = responder_port(command_pid(&victim) as u32);
    let c = as_nobody(&squat, &["squat", &port.to_string(), &resp.to_string(), "2100"]);
    let r = child::bounded(c, 60);
    assert_eq!(r.kv().get("bound").map(String::as_str), Some("1"), "{}", r.text());
    assert_eq!(r.kv().get("replies").map(String::as_str), Some("0"), "the responder answered uid 65534 as the program: {}", r.text());

    victim.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    let second = rx.recv_timeout(Duration::from_secs(20)).expect("the program's second lookup");
    assert!(second.starts_with("name=peer-2 rcode=0 "), "the program's own lookup after the other user's: {second}");
    let _ = victim.kill();
    let _ = victim.wait();
}

/// `TSPROXY_LOG_FILE` in a directory every user may write (sticky, like /tmp), set by root —
/// in its environment or in /etc/tsproxy.conf for every process of the machine. Uid 65534 gets
/// there first: (1) a symlink of its own to a file of root's: root's lines must not be
/// appended to that file; (2) a file of its own, open to everyone: root's lines (the
/// destinations the program dials) must not go there. Both go to stderr instead, with one
/// line saying why. (Before: both were written, where the kernel's fs.protected_symlinks and
/// fs.protected_regular are 0, as on the test VM.) Control: a path of root's own is written.
#[test]
fn another_users_symlink_or_file_at_the_log_path_gets_nothing() {
    if !root() {
        return;
    }
    let dir = target_dir().join(format!("other-uid-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let secret = dir.join("roots-file");
    std::fs::write(&secret, "root's own content\n").unwrap();
    let client = harness("tcpclient");
    let dead = closed_port();
    // A tailnet dial through a dead proxy: one error line.
    let dial = |log: &Path| {
        let mut c = preloaded(&client);
        c.args(["100.64.0.2", "80"]).env("TSPROXY_PROXY", format!("socks5://{dead}")).env("TSPROXY_LOG_FILE", log).env_remove("TSPROXY_LOG");
        child::bounded(c, 20)
    };
    let nobody = |args: &[&str]| {
        let r = child::bounded(as_nobody(Path::new("/bin/sh"), &["-c", &args.join(" ")]), 10);
        assert!(r.ok(), "{}", r.text());
    };

    let link = dir.join("via-link.log");
    nobody(&["ln", "-s", secret.to_str().unwrap(), link.to_str().unwrap()]);
    let r = dial(&link);
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root's own content\n", "root appended to its file through uid 65534's symlink: {}", r.text());
    assert!(r.stderr.contains("cannot open TSPROXY_LOG_FILE") && r.stderr.contains("proxy"), "the line on stderr instead: {}", r.text());

    let open = dir.join("open.log");
    nobody(&["umask 0;", ": >", open.to_str().unwrap()]);
    let r = dial(&open);
    assert_eq!(std::fs::read_to_string(&open).unwrap(), "", "root's log line in uid 65534's file: {}", r.text());
    assert!(r.stderr.contains("proxy"), "the line on stderr instead: {}", r.text());

    let own = dir.join("own.log");
    let r = dial(&own);
    assert!(std::fs::read_to_string(&own).unwrap().contains("proxy"), "control: root's own log file: {}", r.text());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bare LD_PRELOAD: a tailnet question written to a DNS-over-TCP connection is answered by the
/// library through a one-shot loopback listener (src/dns/wire_tcp.rs, `swap`) whose port any
/// user sees in /proc/net/tcp. Another user who connected to it first was taken for the
/// program's own connection: it received the answer (the tailnet name the program asked, and
/// its placeholder) and the program's lookup failed (ECONNRESET). strace's syscall delay
/// (300 ms before every connect) widens the window so the other user wins every time; without
/// the fix, 3 of 3.
#[test]
fn another_user_racing_the_dns_over_tcp_answer_gets_nothing() {
    if !root() || !common::world::tool("strace") {
        return;
    }
    // The "server" the program connects to: a listener on a loopback address of its own that
    // accepts and never answers (the library answers tailnet questions; nothing is sent here).
    let Ok(server) = std::net::TcpListener::bind("127.83.0.1:53") else {
        eprintln!("skipped: 127.83.0.1:53 is taken");
        return;
    };
    const EVIL: &str = r#"
import socket, sys, time
def listens():
    out = set()
    for line in open('/proc/net/tcp').read().splitlines()[1:]:
        f = line.split()
        if f[3] == '0A' and f[1].startswith('0100007F') and f[7] == '0':
            out.add(int(f[1].split(':')[1], 16))
    return out
base = listens()
print('ready', flush=True)
got, end = 0, time.time() + 20
while time.time() < end and got < 3:
    for p in listens() - base:
        try:
            c = socket.create_connection(('127.0.0.1', p), timeout=1)
            c.settimeout(1)
            print('evil got %r' % c.recv(600), flush=True)
            got += 1
        except OSError:
            pass
    time.sleep(0.003)
"#;
    const VICTIM: &str = r#"
import socket, struct
for i in (1, 2, 3):
    m = b'\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x06peer-%d\x00\x00\x01\x00\x01' % i
    s = socket.create_connection(('127.83.0.1', 53), timeout=5)
    try:
        s.sendall(struct.pack('>H', len(m)) + m)
        r = s.recv(600)
        print('victim peer-%d rcode=%s' % (i, r[5] & 15 if len(r) > 5 else None), flush=True)
    except OSError as e:
        print('victim peer-%d %s' % (i, e), flush=True)
    s.close()
"#;
    let mut evil = as_nobody(Path::new("/usr/bin/python3"), &["-S", "-c", EVIL]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(evil.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("ready"));
    let victim = Command::new("timeout")
        .args([
            "30",
            "strace",
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=connect",
            "-e",
            "inject=connect:delay_enter=300000",
            "/usr/bin/python3",
            "-S",
            "-c",
            VICTIM,
        ])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LD_PRELOAD", lib())
        .env("TSPROXY_LOG", "off")
        .output()
        .unwrap();
    let _ = evil.kill();
    let _ = evil.wait();
    drop(server);
    let heard: Vec<String> = lines.map_while(Result::ok).collect();
    let said = String::from_utf8_lossy(&victim.stdout);
    let all = format!("victim:\n{said}{}\nother user:\n{}", String::from_utf8_lossy(&victim.stderr), heard.join("\n"));
    // The program's three lookups answered (rcode 0), as with nobody else on the machine.
    assert_eq!(said.lines().filter(|l| l.ends_with("rcode=0")).count(), 3, "{all}");
    // The other user connected (it saw the listener) and got nothing, the names least of all.
    assert!(!heard.is_empty(), "the other user never saw a listener, so this proves nothing: {all}");
    assert!(heard.iter().all(|l| l == "evil got b''"), "{all}");
}

//! Another local user against a running tsproxy (README, Threat model: "Another local user
//! gains nothing"). Root only: the program runs as root under the launcher, the other user is
//! uid 65534 (nobody), as a shared machine has them. Network: 127.0.0.1 only; every child
//! under a time bound.
mod common;

use common::world::build;
use common::*;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
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
    let mut victim = Command::new("timeout")
        .args(["60", launcher().to_str().unwrap(), "--supervisor=on", "--proxy", "socks5://127.0.0.1:9"])
        .arg(&prog)
        .args(["ask", "peer-1", "peer-2"])
        .env_remove("LD_PRELOAD")
        .env_remove("TSPROXY_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = BufReader::new(victim.stdout.take().unwrap());
    std::thread::spawn(move || {
        for l in out.lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(20)).expect("the program's first lookup");
    assert!(first.starts_with("name=peer-1 rcode=0 "), "{first}");
    let port: u16 = first.rsplit("port=").next().unwrap().parse().unwrap();
    // `timeout` is the launcher's parent; the command is its child (the launcher's pid).
    let cmd = std::fs::read_to_string(format!("/proc/{}/task/{}/children", victim.id(), victim.id())).unwrap();
    let resp = responder_port(cmd.split_whitespace().next().unwrap().parse().unwrap());

    let mut c = Command::new(&squat);
    // std drops the supplementary groups too when root sets a uid (setgroups(0)).
    c.args(["squat", &port.to_string(), &resp.to_string(), "2100"]).env_clear().uid(65534).gid(65534);
    let r = child::bounded(c, 60);
    assert_eq!(r.kv().get("bound").map(String::as_str), Some("1"), "{}", r.text());
    assert_eq!(r.kv().get("replies").map(String::as_str), Some("0"), "the responder answered uid 65534 as the program: {}", r.text());

    victim.stdin.as_mut().unwrap().write_all(b"\n").unwrap();
    let second = rx.recv_timeout(Duration::from_secs(20)).expect("the program's second lookup");
    assert!(second.starts_with("name=peer-2 rcode=0 "), "the program's own lookup after the other user's: {second}");
    let _ = victim.kill();
    let _ = victim.wait();
}

//! Adversarial review of DNS spoken by programs (src/dns/wire.rs, wire_tcp.rs) and the
//! syscall() dispatcher. Each test runs c-harness/r_dns.c in its own user + network + mount
//! namespace (`unshare -r -n -m`, no root needed), where it brings lo up and plays the DNS
//! server on 127.0.0.1:53 itself. Each finding has a control run (the same program without
//! the library, or a variant the library handles) showing the check can see the difference.
//! Skipped where unprivileged user namespaces are not allowed.
mod common;

use common::*;
use std::collections::HashMap;
use std::process::Command;

fn namespaces() -> bool {
    let ok = Command::new("unshare").args(["-r", "-n", "-m", "true"]).status().is_ok_and(|s| s.success());
    if !ok {
        eprintln!("review tests skipped: unshare -r -n -m not available");
    }
    ok
}

/// r_dns ARGS in a fresh namespace, with the library preloaded or not.
fn r_dns(preload: bool, a: &[&str]) -> (HashMap<String, String>, String) {
    let prog = harness_with("r_dns", &["-lpthread"]);
    let mut c = Command::new("unshare");
    c.args(["-r", "-n", "-m", "timeout", "20"]);
    if preload {
        c.arg("env").arg(format!("LD_PRELOAD={}", lib().display()));
    }
    c.arg(prog).args(a);
    for k in TSPROXY_ENV.iter().chain(&["LD_PRELOAD"]) {
        c.env_remove(k);
    }
    let out = c.output().unwrap();
    let mut m: HashMap<String, String> = HashMap::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        for w in l.split_whitespace() {
            if let Some((k, v)) = w.split_once('=') {
                m.insert(k.to_string(), v.to_string());
            }
        }
    }
    (m, text(&out))
}

fn get<'a>(m: &'a HashMap<String, String>, k: &str) -> &'a str {
    m.get(k).map(String::as_str).unwrap_or("")
}

#[test]
fn review_a_dup_of_a_connected_dns_socket_sends_tailnet_questions_to_the_server() {
    if !namespaces() {
        return;
    }
    // Control: a public question on the duplicate reaches the server (the check sees it).
    let (m, t) = r_dns(true, &["dup_udp", "public-name.example"]);
    assert_eq!(get(&m, "server_got"), "1", "control: {t}");
    let (m, t) = r_dns(true, &["dup_udp", "peer-1"]);
    // On the original descriptor the question is answered here...
    assert_eq!(get(&m, "orig_server_got"), "0", "{t}");
    // ...but on dup(fd) (the byte table's DNS bit is copied, the table entry keyed by fd
    // number is not) it goes to the server.
    assert_eq!(get(&m, "server_got"), "0", "a tailnet question sent on dup() of a DNS socket reached the server: {t}");
}

#[test]
fn review_tcp_a_tailnet_question_after_a_public_one_in_one_write_reaches_the_server() {
    if !namespaces() {
        return;
    }
    // Control: without the library the server sees both questions.
    let (m, t) = r_dns(false, &["tcp_pipe", "public-name.example", "peer-1"]);
    assert_eq!((get(&m, "server_saw_n1"), get(&m, "server_saw_n2")), ("1", "1"), "control: {t}");
    // With it: a write that mixes a public and a tailnet question is refused whole (the
    // connection can carry the server's answer or ours, not both); nothing of it is sent.
    let (m, t) = r_dns(true, &["tcp_pipe", "public-name.example", "peer-1"]);
    assert_eq!(get(&m, "server_saw_n2"), "0", "pipelined tailnet question leaked over TCP: {t}");
    assert_eq!(get(&m, "server_saw_n1"), "0", "{t}");
    assert!(t.contains("errno=ECONNRESET"), "{t}");
}

#[test]
fn review_tcp_two_tailnet_questions_in_one_write_get_two_answers() {
    if !namespaces() {
        return;
    }
    // glibc's send_vc writes the A and AAAA questions in one writev; a pipelining client too.
    let (m, t) = r_dns(true, &["tcp_pipe", "peer-1", "peer-1"]);
    assert_eq!(get(&m, "server_saw_n1"), "0", "{t}");
    assert_eq!(get(&m, "answers"), "2", "only the first of two framed questions was answered: {t}");
}

#[test]
fn review_tcp_a_tailnet_question_written_in_two_parts_reaches_the_server() {
    if !namespaces() {
        return;
    }
    // Control: without the library the server gets the whole question (the check sees it).
    let (m, t) = r_dns(false, &["tcp_split", "peer-1"]);
    assert_eq!(get(&m, "server_saw"), "1", "control: {t}");
    let (m, t) = r_dns(true, &["tcp_split", "peer-1"]);
    assert_eq!(get(&m, "server_saw"), "0", "a tailnet question split across two writes leaked: {t}");
}

#[test]
fn review_sa_restart_signal_does_not_fail_a_blocking_recv_on_a_dns_socket() {
    if !namespaces() {
        return;
    }
    // Control: a socket the library leaves alone is restarted by the kernel.
    let (m, t) = r_dns(true, &["restart", "5353"]);
    assert_eq!((get(&m, "recv"), get(&m, "errno")), ("5", "0"), "control: {t}");
    let (m, t) = r_dns(true, &["restart", "53"]);
    assert_eq!(get(&m, "errno"), "0", "recv() on a DNS socket failed with EINTR under SA_RESTART: {t}");
    assert_ne!(get(&m, "recv"), "-1", "{t}");
}

#[test]
fn review_dup2_over_the_injector_does_not_put_an_answer_in_the_programs_stream() {
    if !namespaces() {
        return;
    }
    let (m, t) = r_dns(true, &["inj_dup2", "keep"]);
    assert_eq!((get(&m, "first_answer"), get(&m, "tcp_stream_got")), ("40", "0"), "control: {t}");
    let (m, t) = r_dns(true, &["inj_dup2"]);
    assert_ne!(get(&m, "taken"), "0", "{t}");
    assert_eq!(get(&m, "tcp_stream_got"), "0", "a DNS answer was written into the program's own TCP connection: {t}");
}

#[test]
fn review_public_queries_on_a_dns_socket_are_not_lost_while_tailnet_ones_are_answered() {
    if !namespaces() {
        return;
    }
    let (m, t) = r_dns(false, &["race", "2000"]);
    assert_eq!(get(&m, "public_got"), get(&m, "public_sent"), "control: {t}");
    let (m, t) = r_dns(true, &["race", "2000"]);
    assert_eq!(get(&m, "public_got"), get(&m, "public_sent"), "public questions sent during the reconnect window went elsewhere: {t}");
    assert_eq!(get(&m, "answers_got"), "4000", "answers lost: {t}");
}

#[test]
fn review_syscall_numbers_not_dispatched_behave_as_without_the_library() {
    if !namespaces() {
        return;
    }
    let (plain, t0) = r_dns(false, &["sys"]);
    let (m, t) = r_dns(true, &["sys"]);
    for k in ["gettid_ok", "getrandom", "close_bad", "errno_close", "unknown", "errno_unknown", "futex_wake", "connect_bad", "errno_connect"] {
        assert_eq!(get(&m, k), get(&plain, k), "{k}: {t}\n--- without the library:\n{t0}");
    }
    // A tailnet question through syscall(SYS_sendto) is answered, the reply through
    // syscall(SYS_recvfrom) shows the server, its address truncated to the 4 bytes given.
    assert_eq!((get(&m, "sys_recvfrom"), get(&m, "fromlen"), get(&m, "port")), ("40", "16", "53"), "{t}");
}

#[test]
fn review_a_v6_only_socket_asking_a_v4_server_is_refused_and_its_answer_reaches_nobody_else() {
    if !namespaces() {
        return;
    }
    // Control: a dual-stack socket gets the answer as from ::ffff:127.0.0.1:53.
    let (m, t) = r_dns(true, &["v6", "dual"]);
    assert_eq!((get(&m, "answer"), get(&m, "from")), ("40", "[::ffff:127.0.0.1]:53"), "control: {t}");
    // Without the library the kernel refuses the send (ENETUNREACH) and nothing goes anywhere.
    let (m, t) = r_dns(false, &["v6", "only"]);
    assert_eq!((get(&m, "sendto_errno"), get(&m, "other_socket_got")), ("ENETUNREACH", "0"), "control: {t}");
    let (m, t) = r_dns(true, &["v6", "only"]);
    assert_eq!(get(&m, "other_socket_got"), "0", "the answer (with the tailnet name) went to another socket holding the port in IPv4: {t}");
    assert_eq!(get(&m, "sendto_errno"), "ENETUNREACH", "{t}");
}

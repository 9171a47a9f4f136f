//! The `tsproxy` launcher as a user runs it.
mod common;

use common::*;
use std::process::Command;

fn ts(args: &[&str]) -> std::process::Output {
    Command::new(launcher()).args(args).env_remove("TSPROXY_PROXY").env_remove("TSPROXY_LOG").output().unwrap()
}

#[test]
fn exit_status_and_signals_are_the_commands() {
    assert_eq!(ts(&["sh", "-c", "exit 7"]).status.code(), Some(7));
    assert_eq!(ts(&["true"]).status.code(), Some(0));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(ts(&["sh", "-c", "kill -TERM $$"]).status.signal(), Some(15));
}

#[test]
fn command_not_found_is_127() {
    let out = ts(&["no-such-command-tsproxy-test"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("command not found"));
}

#[test]
fn bad_option_or_value_is_one_line_and_exit_2() {
    for (args, env, needle) in [
        (vec!["--bogus", "true"], None, "--bogus"),
        (vec!["--proxy", "ftp://x", "true"], None, "--proxy"),
        (vec!["--proxy"], None, "--proxy"),
        (vec!["true"], Some(("TSPROXY_LOG", "loud")), "TSPROXY_LOG"),
        (vec!["true"], Some(("TSPROXY_ROUTES", "10.0.0.0/99")), "TSPROXY_ROUTES"),
        (vec!["true"], Some(("TSPROXY_PROXY", "socks5://u:hunter2@h:0")), "TSPROXY_PROXY"),
        (vec![], None, "no command"),
    ] {
        let mut c = Command::new(launcher());
        c.args(&args);
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {}", text(&out));
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}

#[test]
fn help_and_version() {
    let out = ts(&["--help"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("usage: tsproxy"));
    let out = ts(&["--version"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("tsproxy 0."));
}

#[test]
fn preload_is_prepended_and_children_inherit_it() {
    let out = Command::new(launcher())
        .args(["sh", "-c", "echo $LD_PRELOAD; sh -c 'echo $LD_PRELOAD'"])
        .env("LD_PRELOAD", "/lib/x86_64-linux-gnu/libdl.so.2")
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 2, "{s}");
    assert!(lines[0].ends_with("libtsproxy.so:/lib/x86_64-linux-gnu/libdl.so.2"), "{s}");
    assert_eq!(lines[0], lines[1]);
}

#[test]
fn quiet_and_verbose() {
    let out = ts(&["-v", "python3", "-c", "import socket; socket.getaddrinfo('peer', 80)"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("getaddrinfo peer -> tailnet name"), "{}", text(&out));
    let dead = closed_port();
    let out = Command::new(launcher())
        .args(["-q", "--proxy", &format!("socks5://{dead}"), &harness("tcpclient").to_string_lossy(), "100.64.0.2", "1"])
        .output()
        .unwrap();
    assert_eq!(kv(&out)["errno"], "ECONNREFUSED");
    assert!(out.stderr.is_empty(), "{}", text(&out));
}

#[test]
fn supervisor_log_lines_escape_control_characters_of_names() {
    // A process of the tree registers a name with CR/LF/ESC in it (the key path of the
    // supervisor's DNS responder, as the library does), with debug logging on. Such a name is
    // not a host name, so it is never a tailnet name: it gets no placeholder (no answer, or an
    // answer without addresses), and whatever the supervisor logs stays one line per event:
    // no forged "INJECTED" line, no raw CR or escape. (The escaping itself is unit-tested in
    // core::logline.)
    let py = r#"
import os, socket
host, port = os.environ['TSPROXY_SUPERVISOR_DNS'].rsplit(':', 1)
key = os.environ['TSPROXY_SUPERVISOR_DNS_KEY'].encode()
name = b'evil\r\nINJECTED line\x1b[31m'
q = b'\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00' + bytes([len(name)]) + name + b'\x00\x00\x01\x00\x01'
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
s.sendto(b'TSK1' + key + q, (host, int(port)))
try:
    a = s.recv(512)
    print('answers', a[6] << 8 | a[7])
except socket.timeout:
    print('answers none')
"#;
    let out = Command::new(launcher()).args(["-v", "--supervisor=on", "python3", "-c", py]).env_remove("TSPROXY_PROXY").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.trim() == "answers none" || said.trim() == "answers 0", "a name with control characters got an address: {}", text(&out));
    assert!(!err.lines().any(|l| l.starts_with("INJECTED") || l.starts_with("injected")), "{}", text(&out));
    assert!(!err.contains('\x1b') && !err.contains('\r'), "{}", text(&out));
}

//! The configuration files as the library and the launcher read them (issue 13, part 2): the
//! user file `$XDG_CONFIG_HOME/tsproxy/config` (the system file `/etc/tsproxy.conf` is tested in
//! a private mount namespace by tests/system_wide.rs), the environment over the file, bad values
//! naming file, line and key and failing closed, the password warning, proxychains4.conf.
mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;

/// A fresh directory holding `tsproxy/config` with `text` (removed when dropped).
struct Home(PathBuf);

impl Home {
    fn new(tag: &str, text: &str) -> Home {
        let d = target_dir().join(format!("cfgfile-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("tsproxy")).unwrap();
        std::fs::write(d.join("tsproxy/config"), text).unwrap();
        std::fs::set_permissions(d.join("tsproxy/config"), std::fs::Permissions::from_mode(0o600)).unwrap();
        Home(d)
    }
    fn file(&self) -> PathBuf {
        self.0.join("tsproxy/config")
    }
    /// A command with a clean tsproxy environment whose user file is ours.
    fn cmd(&self, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(prog);
        for k in TSPROXY_ENV {
            c.env_remove(k);
        }
        c.env("XDG_CONFIG_HOME", &self.0).env("HOME", &self.0).env_remove("LD_PRELOAD");
        c
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn recording_socks() -> Socks {
    let http = http_peer("tailnet");
    Socks::start(None, router(http, banner_peer("tailnet")))
}

/// Fetch http://100.64.0.2/ through the library.
fn fetch(c: &mut Command) -> Output {
    c.args(["-s", "GET / HTTP/1.0\n\n", "-r", "100.64.0.2", "80"]).env("LD_PRELOAD", lib()).output().unwrap()
}

fn tcpclient() -> PathBuf {
    harness("tcpclient")
}

#[test]
fn user_file_configures_the_library_and_the_environment_overrides_it() {
    let file_proxy = recording_socks();
    let env_proxy = recording_socks();
    let h = Home::new("prec", "");
    let log = h.0.join("log");
    std::fs::write(
        h.file(),
        format!("# tsproxy user configuration\nexport TSPROXY_PROXY=\"{}\"\nTSPROXY_LOG=debug\nTSPROXY_LOG_FILE={}\n", file_proxy.url(), log.display()),
    )
    .unwrap();
    // The file alone: its proxy carries the connection and its log file gets the decision.
    let out = fetch(&mut h.cmd(tcpclient()));
    assert_eq!(kv(&out).get("reply").map(String::as_str), Some("HTTP/1.0 200 OK"), "{}", text(&out));
    assert_eq!(file_proxy.seen().len(), 1, "the file's proxy was used");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logged.contains("100.64.0.2"), "debug lines in the file's log file: {logged:?}");
    assert!(out.stderr.is_empty(), "logging went to the file, not stderr: {}", text(&out));
    // The environment overrides the file, key by key: the proxy from the environment, the
    // log settings still from the file.
    let out = fetch(h.cmd(tcpclient()).env("TSPROXY_PROXY", env_proxy.url()));
    assert_eq!(kv(&out).get("reply").map(String::as_str), Some("HTTP/1.0 200 OK"), "{}", text(&out));
    assert_eq!((file_proxy.seen().len(), env_proxy.seen().len()), (1, 1), "the environment's proxy was used");
    // Control: without the file (another XDG_CONFIG_HOME) the default proxy (127.0.0.1:1080,
    // nothing there in this tier or a real one) is tried, not ours.
    let empty = Home::new("prec-none", "");
    let _ = fetch(&mut empty.cmd(tcpclient()));
    assert_eq!(file_proxy.seen().len(), 1, "no file, no use of its proxy");
}

#[test]
fn every_key_is_accepted_in_a_file() {
    let p = recording_socks();
    let h = Home::new("keys", "");
    let pc = h.0.join("pc.conf");
    std::fs::write(&pc, "[ProxyList]\nsocks5 127.0.0.1 1\n").unwrap();
    let body = format!(
        "TSPROXY_PROXY={}\nTSPROXY_ROUTES=10.99.0.0/16\nTSPROXY_DOMAINS=corp.example\nTSPROXY_SHORT_NAMES=off\nNO_PROXY=skip.example\nTSPROXY_LOG=error\nTSPROXY_LOG_FILE={}\nTSPROXY_CONNECT_TIMEOUT=5\nTSPROXY_SOCKS_PIPELINE=on\nTSPROXY_SUPERVISOR=off\nTSPROXY_LIB={}\n",
        p.url(),
        h.0.join("log").display(),
        lib().display()
    );
    std::fs::write(h.file(), &body).unwrap();
    let out = fetch(h.cmd(launcher()).arg(tcpclient()));
    assert_eq!(kv(&out).get("reply").map(String::as_str), Some("HTTP/1.0 200 OK"), "{}", text(&out));
    assert_eq!(p.seen().len(), 1);
    // TSPROXY_DOMAINS and TSPROXY_SHORT_NAMES from the file decide what a name is.
    let py = "import socket\nfor n in ('db.corp.example', 'shortname'):\n    try:\n        socket.getaddrinfo(n, 80); print(n, 'ok')\n    except Exception as e: print(n, 'fail')";
    let out = h.cmd("python3").args(["-c", py]).env("LD_PRELOAD", lib()).env("TSPROXY_LOG", "debug").output().unwrap();
    let logged = std::fs::read_to_string(h.0.join("log")).unwrap_or_default();
    assert!(logged.contains("db.corp.example -> tailnet name"), "{logged}\n{}", text(&out));
    assert!(!logged.contains("shortname -> tailnet name"), "TSPROXY_SHORT_NAMES=off from the file: {logged}");
    // Control: the environment switching short names on makes the same name a tailnet name.
    let _ = h.cmd("python3").args(["-c", py]).env("LD_PRELOAD", lib()).env("TSPROXY_LOG", "debug").env("TSPROXY_SHORT_NAMES", "on").output().unwrap();
    let logged = std::fs::read_to_string(h.0.join("log")).unwrap_or_default();
    assert!(logged.contains("shortname -> tailnet name"), "{logged}");
    // TSPROXY_PROXYCHAINS_CONF is a key too (alone: with TSPROXY_PROXY in the same file it is
    // ambiguous, an error).
    std::fs::write(h.file(), format!("{body}TSPROXY_PROXYCHAINS_CONF={}\n", pc.display())).unwrap();
    let out = h.cmd(launcher()).arg("true").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("{}:12: ", h.file().display())), "{}", text(&out));
}

#[test]
fn bad_values_name_file_line_and_key_and_fail_closed() {
    let p = recording_socks();
    for (body, line, key) in [
        ("TSPROXY_LOG=error\nTSPROXY_ROUTES=10.0.0.0/99\n", 2, "TSPROXY_ROUTES"),
        ("\n\nTSPROXY_CONNECT_TIMEOUT=5s\n", 3, "TSPROXY_CONNECT_TIMEOUT"),
        ("TSPROXY_PROXI=socks5://h\n", 1, "TSPROXY_PROXI"),
        ("TSPROXY_PROXY=socks5://alice:Sekr1t@h:0\n", 1, "TSPROXY_PROXY"),
        ("just text\n", 1, "KEY=VALUE"),
    ] {
        let h = Home::new("bad", body);
        let out = h.cmd(launcher()).arg("true").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{body:?}: {}", text(&out));
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&format!("{}:{line}: ", h.file().display())) && err.contains(key), "{body:?}: {err}");
        assert!(!err.contains("Sekr1t"), "{err}");
        // The library: the same line in its log, and the tailnet destination refused.
        let out = fetch(h.cmd(tcpclient()).env("TSPROXY_PROXY", p.url()).env("TSPROXY_ROUTES", "").env("TSPROXY_CONNECT_TIMEOUT", ""));
        let err = String::from_utf8_lossy(&out.stderr);
        if key == "TSPROXY_PROXY" {
            // The environment's TSPROXY_PROXY overrides the file's bad one: works.
            assert_eq!(kv(&out).get("reply").map(String::as_str), Some("HTTP/1.0 200 OK"), "{}", text(&out));
            continue;
        }
        // (An empty variable counts as unset: the file's bad TSPROXY_ROUTES still stands.)
        assert_eq!(kv(&out).get("errno").map(String::as_str), Some("ECONNREFUSED"), "fail closed: {body:?}: {}", text(&out));
        assert!(err.contains(&format!("{}:{line}: ", h.file().display())), "{err}");
    }
    // Only the run whose environment overrode the bad TSPROXY_PROXY reached the proxy.
    assert_eq!(p.seen().len(), 1, "a broken configuration reached the proxy: {:?}", p.seen());
}

#[test]
fn password_in_a_file_others_can_read_is_warned_about() {
    let h = Home::new("pw", "TSPROXY_PROXY=socks5://alice:Sekr1t@127.0.0.1:1\n");
    let run = |h: &Home| h.cmd(launcher()).arg("true").output().unwrap();
    let out = run(&h);
    assert!(out.status.success() && out.stderr.is_empty(), "mode 600: no warning: {}", text(&out));
    std::fs::set_permissions(h.file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(&h);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning") && err.contains(&h.file().display().to_string()) && err.contains("readable by other users"), "{}", text(&out));
    assert!(!err.contains("Sekr1t"), "{err}");
    // tsproxy -q: nothing at all.
    let out = h.cmd(launcher()).args(["-q", "true"]).output().unwrap();
    assert!(out.stderr.is_empty(), "{}", text(&out));
    // No password, world-readable: no warning.
    std::fs::write(h.file(), "TSPROXY_PROXY=socks5://alice@127.0.0.1:1\n").unwrap();
    assert!(run(&h).stderr.is_empty());
    // The library itself never warns (it is loaded into every process).
    std::fs::write(h.file(), "TSPROXY_PROXY=socks5://alice:Sekr1t@127.0.0.1:1\n").unwrap();
    let out = h.cmd("true").env("LD_PRELOAD", lib()).output().unwrap();
    assert!(out.stderr.is_empty(), "{}", text(&out));
}

#[test]
fn proxychains_conf_is_read_when_asked() {
    let http_peer = http_peer("tailnet");
    let hp = HttpProxy::start(None, Arc::new(move |t: &str| (t == "100.64.0.2:80").then_some(http_peer)));
    let h = Home::new("pc", "");
    let pc = h.0.join("proxychains4.conf");
    std::fs::write(&pc, format!("strict_chain\nproxy_dns\n[ProxyList]\n# comment\nhttp {} {}\n", hp.addr.ip(), hp.addr.port())).unwrap();
    let out = fetch(h.cmd(launcher()).arg("--proxychains-conf").arg(&pc).arg("--supervisor=off").arg(tcpclient()));
    assert_eq!(kv(&out).get("reply").map(String::as_str), Some("HTTP/1.0 200 OK"), "{}", text(&out));
    assert_eq!(hp.seen.lock().unwrap().as_slice(), ["100.64.0.2:80"]);
    // As a key of the user file, for the library alone.
    std::fs::write(h.file(), format!("TSPROXY_PROXYCHAINS_CONF={}\n", pc.display())).unwrap();
    let out = fetch(&mut h.cmd(tcpclient()));
    assert_eq!(kv(&out).get("reply").map(String::as_str), Some("HTTP/1.0 200 OK"), "{}", text(&out));
    assert_eq!(hp.seen.lock().unwrap().len(), 2);
    // What tsproxy cannot do is refused with the file and line.
    for (body, needle) in [
        ("[ProxyList]\nsocks4 127.0.0.1 9050\n", ":2: invalid [ProxyList]=\"socks4\"".to_string()),
        ("[ProxyList]\nsocks5 127.0.0.1 1\nhttp 127.0.0.1 2\n", "does not chain".into()),
    ] {
        std::fs::write(&pc, body).unwrap();
        let out = h.cmd(launcher()).arg("--proxychains-conf").arg(&pc).arg("true").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(err.contains(&pc.display().to_string()) && err.contains(&needle), "{needle}: {err}");
    }
    let out = h.cmd(launcher()).args(["--proxychains-conf", "/nonexistent/pc.conf", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

fn have(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

#[test]
fn env_subcommand_enables_and_disables() {
    let probe = harness("privprobe");
    let h = Home::new("env", "");
    let script = |shell: &str| {
        format!(
            "eval \"$({ts} env --shell {shell})\"; {probe}; echo \"LD=$LD_PRELOAD\"; eval \"$({ts} env --unset --shell {shell})\"; {probe}; echo \"LD=${{LD_PRELOAD-unset}}\"",
            ts = launcher().display(),
            probe = probe.display()
        )
    };
    for sh in ["sh", "bash", "zsh"] {
        if !have(sh) {
            eprintln!("env: {sh} not installed, skipped");
            continue;
        }
        let out = h.cmd(sh).args(["-c", &script(sh)]).env("LD_PRELOAD", "/usr/lib/nonexistent-other.so").output().unwrap();
        let s = String::from_utf8_lossy(&out.stdout);
        let pre: Vec<&str> = s.lines().filter(|l| l.starts_with("preloaded=")).collect();
        assert_eq!(pre, ["preloaded=1", "preloaded=0"], "{sh}: {}", text(&out));
        let ld: Vec<&str> = s.lines().filter(|l| l.starts_with("LD=")).collect();
        assert_eq!(ld[0], format!("LD={}:/usr/lib/nonexistent-other.so", lib().canonicalize().unwrap().display()), "{sh}");
        assert_eq!(ld[1], "LD=/usr/lib/nonexistent-other.so", "--unset keeps the other entries: {sh}");
    }
    if have("fish") {
        let fish = format!(
            "{ts} env --shell fish | source; {probe}; {ts} env --unset --shell fish | source; {probe}; set -q LD_PRELOAD; and echo set; or echo unset",
            ts = launcher().display(),
            probe = probe.display()
        );
        let out = h.cmd("fish").args(["-c", &fish]).output().unwrap();
        let s = String::from_utf8_lossy(&out.stdout);
        let pre: Vec<&str> = s.lines().filter(|l| l.starts_with("preloaded=") || *l == "set" || *l == "unset").collect();
        assert_eq!(pre, ["preloaded=1", "preloaded=0", "unset"], "{}", text(&out));
    } else {
        eprintln!("env: fish not installed, its lines are unit-tested only");
    }
    // --proxy is exported, quoted: a value with a quote and a $ survives eval unexpanded.
    let out = h.cmd(launcher()).args(["env", "--shell", "sh", "--proxy", "socks5://u:it's$HOME@127.0.0.1:1"]).output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout).into_owned();
    let out = h.cmd("sh").args(["-c", &format!("{lines}\nprintf '%s' \"$TSPROXY_PROXY\"")]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "socks5://u:it's$HOME@127.0.0.1:1");
    // `tsproxy env CMD`: not the env program; a clear error pointing at `--`.
    let out = h.cmd(launcher()).args(["env", "FOO=1", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tsproxy -- env"), "{}", text(&out));
    let out = h.cmd(launcher()).args(["--", "env"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("LD_PRELOAD="), "{}", text(&out));
}

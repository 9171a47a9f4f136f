//! A tailnet name never reaches a DNS server in a datagram a program sends itself with
//! `sendto`/`sendmsg`/`sendmmsg` to port 53 (no `connect`): a static musl program's
//! `getaddrinfo` under the launcher (the supervisor: the question goes to its responder instead,
//! the destination rewritten in the program's memory, and the lookup gets the placeholders), and
//! a program speaking DNS itself (as dig, c-ares, libuv do) under the library, the launcher, or
//! both.
//!
//! Port 53 is privileged, so each run is in its own user + network + mount namespace
//! (`unshare -r -n -m`, no root needed where unprivileged user namespaces are allowed): there
//! `/etc/resolv.conf` is bind-mounted to say `nameserver 127.0.0.1` and c-harness/dns_sink.c
//! listens on 127.0.0.1:53, standing in for the system resolver, and reports every datagram it
//! got. A tailnet question must never arrive; any other must arrive unchanged. Without
//! namespaces the tests are skipped, unless TSPROXY_REQUIRE_STATIC=1 (`make test` as root).
mod common;

use common::*;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use tsproxy_core::dns;

fn required(what: &str, ok: bool) -> bool {
    if !ok && std::env::var("TSPROXY_REQUIRE_STATIC").as_deref() == Ok("1") {
        panic!("{what} is required (TSPROXY_REQUIRE_STATIC=1)");
    }
    if !ok {
        eprintln!("dns_leak tests skipped: {what} not available");
    }
    ok
}

/// Can this machine make a user + network + mount namespace and bind-mount in it?
fn namespaces() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let ok = Command::new("unshare")
            .args(["-r", "-n", "-m", "sh", "-c", "mount --bind /etc/hostname /etc/hostname && echo yes"])
            .output()
            .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"yes"));
        required("unshare -r -n -m (unprivileged user namespaces)", ok)
    })
}

/// c-harness/dns_send.c linked statically against musl (musl-gcc), once per test process.
fn musl_send() -> Option<PathBuf> {
    static P: OnceLock<Option<PathBuf>> = OnceLock::new();
    P.get_or_init(|| {
        let have = Command::new("sh").args(["-c", "command -v musl-gcc"]).output().is_ok_and(|o| o.status.success());
        if !required("musl-gcc (musl-tools)", have) {
            return None;
        }
        let out = target_dir().join("c-harness").join("dns_send-musl");
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let tmp = out.with_extension(format!("tmp{}", std::process::id()));
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("c-harness/dns_send.c");
        let o = Command::new("musl-gcc").args(["-static", "-O2", "-Wall", "-o"]).arg(&tmp).arg(&src).output().expect("musl-gcc");
        assert!(o.status.success(), "musl-gcc -static dns_send.c: {}", String::from_utf8_lossy(&o.stderr));
        std::fs::rename(&tmp, &out).unwrap();
        Some(out)
    })
    .clone()
}

/// The namespace script: resolv.conf, the sink on 127.0.0.1:53, the client ("$@"), STOP.
const NS_SCRIPT: &str = r#"set -e
mount --bind "$TSP_RESOLV" /etc/resolv.conf
"$TSP_SINK" 53 > "$TSP_OUT" 2>&1 &
i=0
until grep -q '^ready=' "$TSP_OUT" 2>/dev/null; do
    i=$((i + 1)); [ $i -lt 500 ] || { echo "sink did not start"; cat "$TSP_OUT"; exit 91; }
    sleep 0.01
done
"$@" || echo "client_status=$?"
"$TSP_SINK" stop 53
wait
"#;

/// What a client run saw, and what the stand-in resolver received.
struct Run {
    out: Output,
    got: Vec<Vec<u8>>,
}

impl Run {
    fn kv(&self, k: &str) -> String {
        kv(&self.out).get(k).cloned().unwrap_or_default()
    }

    /// Every question name the resolver was asked.
    fn asked(&self) -> Vec<String> {
        self.got.iter().flat_map(|d| dns::questions(d).map(|q| q.name)).collect()
    }

    fn text(&self) -> String {
        format!("{}\n--- the resolver got: {:?}", text(&self.out), self.asked())
    }
}

/// One second, one attempt: musl's lookup of a name nobody answers ends after its timeout.
const RESOLV: &str = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n";

/// Run `cmd` in a fresh namespace with the stand-in resolver (see the module docs).
fn in_ns(cmd: &[&OsStr]) -> Run {
    in_ns_with(RESOLV, cmd)
}

/// [`in_ns`] with this resolv.conf.
fn in_ns_with(resolv_conf: &str, cmd: &[&OsStr]) -> Run {
    let dir = std::env::temp_dir().join(format!("tsp-dnsleak-{}-{:?}", std::process::id(), std::thread::current().id()).replace(['(', ')'], ""));
    std::fs::create_dir_all(&dir).unwrap();
    let resolv = dir.join("resolv.conf");
    std::fs::write(&resolv, resolv_conf).unwrap();
    let sink_out = dir.join("sink.out");
    let mut c = Command::new("unshare");
    c.args(["-r", "-n", "-m", "sh", "-c", NS_SCRIPT, "sh"]).args(cmd);
    c.env("TSP_RESOLV", &resolv).env("TSP_SINK", harness("dns_sink")).env("TSP_OUT", &sink_out);
    for k in TSPROXY_ENV.iter().chain(&["LD_PRELOAD"]) {
        c.env_remove(k);
    }
    let out = c.output().unwrap();
    let sink = std::fs::read_to_string(&sink_out).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(sink.contains("count="), "the stand-in resolver did not finish:\n{sink}\n{}", text(&out));
    let got = sink.lines().filter_map(|l| l.strip_prefix("dgram=")).map(unhex).collect();
    Run { out, got }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap()).collect()
}

fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

fn args(v: &[OsString]) -> Vec<&OsStr> {
    v.iter().map(|s| s.as_os_str()).collect()
}

/// How the program runs.
#[derive(Clone, Copy, Debug)]
enum Under {
    /// The launcher with the supervisor on (and the library, which a static program ignores).
    Launcher,
    /// Only LD_PRELOAD=libtsproxy.so.
    Library,
}

fn command(under: Under, prog: &Path, rest: &[&str]) -> Vec<OsString> {
    let mut v = match under {
        Under::Launcher => vec![launcher().into_os_string(), "--supervisor=on".into()],
        Under::Library => vec!["env".into(), format!("LD_PRELOAD={}", lib().display()).into()],
    };
    v.push(prog.into());
    v.extend(os(rest));
    v
}

/// sendto, sendmsg (two iovecs) and sendmmsg (two messages) of a hand-built query: a tailnet
/// question never arrives, and the program gets tsproxy's answer (a plain query: the
/// placeholder; anything else: SERVFAIL) as a stub accepts it, from the very address its
/// variable holds after the send (`same:1`). A dynamic program (the library acts): from the
/// server's address, 127.0.0.1:53. A static one under the supervisor: the destination was
/// rewritten in its memory to the supervisor's responder (127.0.0.1, another port), which
/// answers. A public name arrives byte for byte.
fn datagrams(under: Under, prog: &Path) {
    let rewritten = prog.file_name().is_some_and(|f| f.to_string_lossy().contains("musl"));
    for how in ["sendto", "sendmsg", "sendmmsg"] {
        // A short name, a MagicDNS name in mixed case, a TSPROXY_DOMAINS name, an SRV name under
        // ts.net, and a tailnet name as the second question of two.
        for name in ["peer-1", "Peer-1.Tail1234.TS.net", "db.corp.example", "_http._tcp.peer-1.tail1234.ts.net", "public-name.example,peer-2"] {
            let cmd = command(under, prog, &[how, name, "127.0.0.1", "53"]);
            let mut c = args(&cmd);
            // TSPROXY_DOMAINS reaches the program through env(1) inside the namespace.
            let env = OsString::from("TSPROXY_DOMAINS=corp.example");
            c.insert(0, OsStr::new("env"));
            c.insert(1, &env);
            let r = in_ns(&c);
            assert!(r.got.is_empty(), "{under:?} {how} {name}: a tailnet question reached the resolver: {}", r.text());
            assert_eq!(r.kv("errno"), "0", "{under:?} {how} {name}: answered, as sent: {}", r.text());
            let reply = r.kv("reply0");
            assert!(reply.starts_with("id:4242 ") && reply.ends_with(" same:1"), "{under:?} {how} {name}: an answer the program accepts: {}", r.text());
            if rewritten {
                assert!(
                    reply.contains(" from:127.0.0.1:") && !reply.contains(" from:127.0.0.1:53 "),
                    "{under:?} {how} {name}: from the responder, the destination rewritten: {}",
                    r.text()
                );
            } else {
                assert!(reply.contains(" from:127.0.0.1:53 "), "{under:?} {how} {name}: the answer comes as the server's: {}", r.text());
            }
            // A plain query for one tailnet host name: its placeholder (A: 240/8). An SRV name
            // or a second question: SERVFAIL.
            let plain = !name.contains(',') && !name.starts_with('_');
            if plain {
                assert!(reply.contains("rcode:0 an:1 ") && reply.contains("addr:240."), "{under:?} {how} {name}: {}", r.text());
            } else {
                assert!(reply.contains("rcode:2 an:0 "), "{under:?} {how} {name}: SERVFAIL expected: {}", r.text());
            }
            if how == "sendmmsg" && plain {
                let r1 = r.kv("reply1");
                assert!(r1.starts_with("id:4243 ") && r1.contains("addr:100::"), "{under:?} {how} {name}: AAAA: {}", r.text());
            }
        }
        let r = in_ns(&args(&command(under, prog, &[how, "public-name.example", "127.0.0.1", "53"])));
        assert_eq!(r.kv("errno"), "0", "{under:?} {how}: {}", r.text());
        let sent = unhex(&r.kv("query"));
        let want = if how == "sendmmsg" { 2 } else { 1 };
        assert_eq!(r.got.len(), want, "{under:?} {how}: {}", r.text());
        assert_eq!(r.got[0], sent, "{under:?} {how}: not unchanged");
        assert_eq!(r.asked(), vec!["public-name.example".to_string(); want], "{under:?} {how}");
    }
}

/// The addresses `dns_send gai` printed.
fn gai_addrs(r: &Run) -> Vec<String> {
    String::from_utf8_lossy(&r.out.stdout).lines().filter_map(|l| l.strip_prefix("addr=")).map(str::to_string).collect()
}

#[test]
fn static_musl_getaddrinfo_of_a_tailnet_name_never_reaches_the_resolver() {
    let Some(prog) = musl_send() else { return };
    if !namespaces() {
        return;
    }
    // musl asks A and AAAA with sendto from one socket to every nameserver: one IPv4 server
    // (an AF_INET socket), and an IPv4 and an IPv6 server (an AF_INET6 socket, the IPv4 server
    // v4-mapped). Either way the questions go to the supervisor's responder, rewritten, and
    // musl takes its answers: the placeholders of both families.
    for resolv in [RESOLV, "nameserver 127.0.0.1\nnameserver ::1\noptions timeout:1 attempts:1\n"] {
        for name in ["peer-1", "peer-1.tail1234.ts.net"] {
            let r = in_ns_with(resolv, &args(&command(Under::Launcher, &prog, &["gai", name])));
            let addrs = gai_addrs(&r);
            let v4 = addrs.iter().any(|a| a.parse::<std::net::Ipv4Addr>().is_ok_and(|a| a.octets()[0] & 0xf8 == 240));
            let v6 = addrs.iter().any(|a| a.parse::<std::net::Ipv6Addr>().is_ok_and(|a| a.segments()[..4] == [0x100, 0, 0, 0]));
            assert!(r.kv("gai") == "0" && v4 && v6, "{name} ({resolv:?}): both placeholders: {}", r.text());
            assert!(r.got.is_empty(), "{name}: musl's queries reached the resolver: {}", r.text());
        }
    }
    // After a tailnet question the program's address variable holds the responder's address:
    // a public question sent there, from the same socket and from another, is carried to the
    // server unchanged (here nobody answers it); the tailnet one never.
    let r = in_ns(&args(&command(Under::Launcher, &prog, &["then", "peer-1", "public-name.example", "127.0.0.1", "53"])));
    assert!(r.kv("reply0").contains(" addr:240.") && r.kv("reply0").ends_with(" same:1"), "{}", r.text());
    let ids: Vec<u16> = r.got.iter().filter(|d| d.len() > 2).map(|d| u16::from_be_bytes([d[0], d[1]])).collect();
    assert_eq!((r.asked(), ids), (vec!["public-name.example".to_string(); 2], vec![0x4244, 0x4245]), "{}", r.text());
    // Any other name is asked as before (nobody answers here: musl then gives up).
    let r = in_ns(&args(&command(Under::Launcher, &prog, &["gai", "public-name.example"])));
    assert!(!r.got.is_empty() && r.asked().iter().all(|n| n == "public-name.example"), "{}", r.text());
    assert_ne!(r.kv("gai"), "0", "nobody answers public-name.example here: {}", r.text());
}

#[test]
fn static_musl_dns_datagrams_under_the_supervisor() {
    let Some(prog) = musl_send() else { return };
    if namespaces() {
        datagrams(Under::Launcher, &prog);
    }
}

#[test]
fn dynamic_dns_datagrams_under_the_library() {
    if namespaces() {
        datagrams(Under::Library, &harness("dns_send"));
    }
}

#[test]
fn a_program_whose_own_filter_kills_process_vm_readv_is_not_killed_by_the_check() {
    // systemd services (SystemCallFilter= without @debug) and sandboxes kill on
    // process_vm_readv; resolved and dnsmasq send DNS with sendto/sendmsg all the same.
    if !namespaces() {
        return;
    }
    let prog = harness("dns_send");
    for how in ["sendto", "sendmsg", "sendmmsg"] {
        for (name, refused) in [("peer-1", true), ("public-name.example", false)] {
            let cmd = command(Under::Library, &prog, &[how, name, "127.0.0.1", "53"]);
            let mut c = args(&cmd);
            let env = OsString::from("DNS_SEND_KILL_VM_READV=1");
            c.insert(0, OsStr::new("env"));
            c.insert(1, &env);
            let r = in_ns(&c);
            assert_eq!(r.kv("filter"), "kill_process_vm_readv", "{how} {name}: {}", r.text());
            // Not killed; the tailnet question answered here (never sent), the other sent.
            assert_eq!(r.kv("errno"), "0", "{how} {name}: killed or wrong: {}", r.text());
            assert_eq!(r.got.is_empty(), refused, "{how} {name}: {}", r.text());
            if refused {
                assert!(r.kv("reply0").contains("addr:240."), "{how} {name}: {}", r.text());
            }
        }
    }
}

#[test]
fn dynamic_dns_datagrams_under_the_launcher() {
    // The library sends what it lets through with a marked raw syscall the supervisor's filter
    // does not stop: the library's own check is what holds here.
    if namespaces() {
        datagrams(Under::Launcher, &harness("dns_send"));
    }
}

#[test]
fn the_supervisors_responder_never_forwards_a_tailnet_question() {
    // A UDP connect to port 53 is redirected to the supervisor's responder, which forwards what
    // is not a tailnet name to the server asked. A tailnet name in a second question (the
    // responder answers plain one-question queries) is answered SERVFAIL, never forwarded.
    let Some(prog) = musl_send() else { return };
    if !namespaces() {
        return;
    }
    for names in ["public-name.example,peer-9", "public-name.example,_x._tcp.peer-9.tail1234.ts.net"] {
        let r = in_ns(&args(&command(Under::Launcher, &prog, &["connect", names, "127.0.0.1", "53"])));
        assert_eq!(r.kv("rcode"), "2", "{names}: {}", r.text());
        assert!(r.got.is_empty(), "{names}: forwarded: {}", r.text());
    }
    // A plain tailnet question is answered (by the responder: the server hears nothing), a
    // public one forwarded unchanged.
    let r = in_ns(&args(&command(Under::Launcher, &prog, &["connect", "peer-9", "127.0.0.1", "53"])));
    assert_eq!((r.kv("rcode").as_str(), r.got.len()), ("0", 0), "{}", r.text());
    let r = in_ns(&args(&command(Under::Launcher, &prog, &["connect", "public-name.example", "127.0.0.1", "53"])));
    assert_eq!(r.got, vec![unhex(&r.kv("query"))], "{}", r.text());
}

//! No-root tier: the resolver APIs beside getaddrinfo — `res_query`/`res_search`/
//! `res_querydomain`, their `res_n*` and pre-2.34 `__res_*` forms, `res_send`, and
//! `getaddrinfo_a` — answer tailnet names themselves and never send them to the system resolver;
//! other names still reach it.
//!
//! The proof that nothing leaks is a DNS meter (c-harness/dns_meter.c) that *is* the system
//! resolver: each program runs in a user + network + mount namespace (`unshare -r -m -n`, no root
//! needed) whose /etc/resolv.conf says `nameserver 127.0.0.1` and `search corp.example`, where
//! the meter listens on port 53, answers, and lists every question it got. The meter is not
//! preloaded; the program under test is.
mod common;

use common::*;
use std::collections::HashMap;
use std::process::{Command, Output};

/// Can this machine make the namespaces (unprivileged user namespaces, `ip`, `mount`)?
fn namespaces() -> bool {
    let ok = Command::new("unshare")
        .args(["-r", "-m", "-n", "sh", "-c", "ip link set lo up && mount -t tmpfs none /mnt"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var_os("TSPROXY_REQUIRE_NETNS").is_none(), "TSPROXY_REQUIRE_NETNS is set but `unshare -r -m -n` does not work here");
        eprintln!("SKIPPED: `unshare -r -m -n` (unprivileged user namespaces) is not available");
    }
    ok
}

/// Run `prog args` with the library preloaded, under the DNS meter, in a fresh namespace.
fn metered(prog: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let rc = target_dir().join(format!("resolv-{}-{}.conf", std::process::id(), prog.file_name().unwrap().to_string_lossy()));
    std::fs::write(&rc, "nameserver 127.0.0.1\nsearch corp.example\noptions timeout:1 attempts:1\n").unwrap();
    let mut c = preloaded("unshare");
    c.env_remove("LD_PRELOAD").env("METER_PRELOAD", lib());
    for (k, v) in env {
        c.env(k, v);
    }
    c.args(["-r", "-m", "-n", "sh", "-c", r#"ip link set lo up && mount --bind "$0" /etc/resolv.conf && exec "$@""#]);
    c.arg(&rc).arg(harness("dns_meter")).arg(prog).args(args);
    let out = c.output().unwrap();
    let _ = std::fs::remove_file(&rc);
    out
}

/// `key=ret=1 h=2 addr=x` -> {"ret": "1", "h": "2", "addr": "x"}
fn fields(v: &str) -> HashMap<String, String> {
    v.split_whitespace().filter_map(|f| f.split_once('=')).map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

fn meter_names(k: &HashMap<String, String>) -> Vec<String> {
    k.get("meter_names").map(|s| s.split(',').filter(|n| !n.is_empty()).map(String::from).collect()).unwrap_or_default()
}

#[test]
fn res_query_family_answers_tailnet_names_and_never_asks_the_resolver() {
    if !namespaces() {
        return;
    }
    let prog = harness_with("h_res", &["-lresolv"]);
    let out = metered(&prog, &[], &[("TSPROXY_DOMAINS", "corp.example")]);
    let k = kv(&out);
    let t = text(&out);
    assert_eq!(k.get("done").map(String::as_str), Some("1"), "{t}");
    let f = |key: &str| fields(k.get(key).unwrap_or_else(|| panic!("{key} missing: {t}")));
    let v4 = |key: &str| {
        let m = f(key);
        assert!(m["ret"].parse::<i32>().unwrap() > 0 && m["addr"].starts_with("240."), "{key}: IPv4 placeholder expected: {t}");
        m
    };
    let v6 = |key: &str| {
        let m = f(key);
        assert!(m["ret"].parse::<i32>().unwrap() > 0 && m["addr"].starts_with("100::"), "{key}: IPv6 placeholder expected: {t}");
        m
    };
    let nodata = |key: &str| {
        let m = f(key);
        assert_eq!((m["ret"].as_str(), m["h"].as_str(), m["rcode"].as_str(), m["an"].as_str()), ("-1", "4", "0", "0"), "{key}: NODATA expected: {t}");
        m
    };
    let glibc = |key: &str| {
        let m = f(key);
        assert_eq!(m["addr"], "192.0.2.7", "{key}: the system resolver's answer expected: {t}");
        m
    };

    // Tailnet names: answered with the placeholders getaddrinfo gives, A and AAAA; other types
    // and classes: NOERROR without data (h_errno NO_DATA, also in the resolver state).
    let a = v4("query_a");
    v6("query_aaaa");
    assert_eq!(nodata("query_mx")["rh"], "4", "_res.res_h_errno: {t}");
    nodata("query_chaos");
    // h_errno after a success is what glibc leaves after its own success.
    assert_eq!(a["h"], glibc("query_plain")["h"], "{t}");
    assert_eq!(v4("search_short")["h"], glibc("search_plain")["h"], "{t}");
    // nxhost.prod is not a tailnet name, but the search list makes nxhost.prod.corp.example
    // of it, which is: glibc asks for nxhost.prod (NXDOMAIN), tsproxy answers the rest.
    v4("search_composed");
    v4("querydomain");
    glibc("querydomain_plain");
    v4("nquery");
    assert_eq!(nodata("nquery_mx")["rh"], "4", "statp->res_h_errno: {t}");
    v6("nsearch");
    v4("nquerydomain");
    v4("send");
    assert_eq!(k["send_id"], "1", "the answer carries the query's id: {t}");
    v4("nsend");
    glibc("send_plain");

    // Truncation and tiny buffers: the same as glibc's own answers.
    assert_eq!(f("trunc")["ret"], "30", "{t}");
    assert_eq!(f("trunc")["intact"], "1", "nothing written past anslen: {t}");
    assert_eq!(f("trunc_plain")["ret"], "35", "{t}");
    // A buffer too short for the question: glibc returns what fits, with EMSGSIZE in errno.
    let (cut, cut_plain) = (f("cut"), f("cut_plain"));
    assert_eq!((cut["ret"].as_str(), cut["errno"].as_str()), ("20", "90"), "{t}");
    assert_eq!(cut, cut_plain, "{t}");
    let (tiny, tiny_plain) = (f("tiny"), f("tiny_plain"));
    assert_eq!((tiny["ret"].as_str(), tiny["h"].as_str(), tiny["untouched"].as_str()), ("-1", "2", "1"), "{t}");
    assert_eq!((tiny["h"].as_str(), tiny["errno"].as_str()), (tiny_plain["h"].as_str(), tiny_plain["errno"].as_str()), "{t}");

    // Programs linked before glibc 2.34 bind the __res_* names.
    if cfg!(target_arch = "x86_64") {
        for key in ["old_query", "old_search", "old_querydomain", "old_nquery", "old_nsearch", "old_nquerydomain", "old_send", "old_nsend"] {
            v4(key);
        }
    }

    // Tailnet questions that are not plain host-name queries: SERVFAIL ("try again", as the
    // supervisor's responder answers them), never the system resolver; an escaped spelling of
    // a tailnet host name is that name.
    let servfail = |key: &str| {
        let m = f(key);
        assert_eq!(m["rcode"], "2", "{key}: SERVFAIL expected: {t}");
        m
    };
    for key in ["query_srv", "search_txt", "nquerydomain_srv"] {
        let m = servfail(key);
        assert_eq!((m["ret"].as_str(), m["h"].as_str()), ("-1", "2"), "{key}: TRY_AGAIN expected: {t}");
    }
    assert_eq!(f("nquerydomain_srv")["rh"], "2", "{t}");
    v4("query_escaped");
    for key in ["send_srv", "send_two", "send_notify"] {
        assert!(servfail(key)["ret"].parse::<i32>().unwrap() > 0, "{key}: res_send returns the response: {t}");
    }
    nodata("query_srv_plain");

    // The system resolver heard only the names that are not tailnet names, each once.
    let names = meter_names(&k);
    let want = [
        "web.example/1",            // query_plain
        "nxhost.prod/1",            // search_composed, as is (not its tailnet expansion)
        "web.example/1",            // search_plain
        "web.example/1",            // querydomain_plain
        "web.example/1",            // send_plain
        "web.example/1",            // trunc_plain
        "web.example/1",            // cut_plain
        "_sip._udp.web.example/33", // query_srv_plain
    ];
    assert_eq!(names, want, "{t}");
}

#[test]
fn getaddrinfo_a_answers_tailnet_names_and_delegates_the_rest() {
    if !namespaces() {
        return;
    }
    let out = metered(&harness("h_gai_a"), &[], &[]);
    let k = kv(&out);
    let t = text(&out);
    assert_eq!(k.get("done").map(String::as_str), Some("1"), "{t}");
    let words = |key: &str| -> Vec<String> { k.get(key).unwrap_or_else(|| panic!("{key} missing: {t}")).split_whitespace().map(String::from).collect() };
    let ph = |s: &str| s.starts_with("240.");

    // GAI_WAIT, mixed list: tailnet names get placeholders, the rest glibc's answers.
    let w = words("wait_mixed");
    assert_eq!(w[0], "ret=0", "{t}");
    assert!(ph(&w[1]) && w[2] == "192.0.2.7" && ph(&w[3]) && w[4] == "127.0.0.1", "{t}");
    // Our requests are finished requests for gai_cancel/gai_suspend too.
    assert_eq!(k["cancel_done"], (-103).to_string(), "EAI_ALLDONE: {t}");
    assert_eq!(k["suspend_done"], (-103).to_string(), "EAI_ALLDONE: {t}");

    // Notifications: exactly one, when every request is done, as glibc sends them.
    let s = words("signal_only");
    assert_eq!(&s[..4], ["ret=0", "count=1", "asyncnl=1", "val=42"], "{t}");
    assert!(ph(&s[4]) && ph(&s[5]), "{t}");
    let s = words("signal_mixed");
    assert_eq!(&s[..3], ["ret=0", "count=1", "val=43"], "{t}");
    assert!(ph(&s[3]) && s[4] == "192.0.2.7", "{t}");
    let s = words("thread_only");
    assert_eq!(&s[..3], ["ret=0", "calls=1", "seen=0"], "{t}");
    assert!(ph(&s[3]), "{t}");
    let s = words("thread_mixed");
    assert_eq!(&s[..3], ["ret=0", "calls=1", "seen=0,0,0"], "{t}");
    assert!(s[3] == "192.0.2.7" && ph(&s[4]) && s[5] == "127.0.0.1", "{t}");
    let s = words("nowait_null");
    assert!(s[0] == "ret=0" && ph(&s[1]) && s[2] == "192.0.2.7", "{t}");
    let s = words("nowait_none");
    assert!(s[0] == "ret=0" && s[1] == "err=0" && ph(&s[2]), "done before the call returns: {t}");
    assert_eq!(k["suspend_alldone"], (-103).to_string(), "{t}");
    // A bad mode is glibc's EAI_SYSTEM/EINVAL, and nothing was answered.
    assert_eq!(words("bad_mode"), ["ret=-11", "errno=22", "untouched=1"], "{t}");
    if cfg!(target_arch = "x86_64") {
        let s = words("old_wait");
        assert!(s[0] == "ret=0" && ph(&s[1]) && s[2] == "127.0.0.1", "getaddrinfo_a@GLIBC_2.2.5: {t}");
    }

    // The system resolver heard web.example (four lists had it) and nothing else.
    let names = meter_names(&k);
    assert_eq!(names, ["web.example/1"; 4], "{t}");
}

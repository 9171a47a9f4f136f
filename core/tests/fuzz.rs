//! Fuzz targets for every parser that sees untrusted bytes: long property runs, `#[ignore]`d so
//! CI skips them. Run them with (the case count per target is `TSPROXY_FUZZ_CASES`):
//!
//! ```sh
//! TSPROXY_FUZZ_CASES=200000 cargo test -p tsproxy-core --release \
//!     --test fuzz --test secrets --test inet_aton_glibc -- --ignored
//! ```
//!
//! Each target mixes random bytes with mutations of valid messages (bytes flipped, inserted,
//! dropped, the message cut short), so the interesting paths past the first length check are
//! reached too. A failure is shrunk and saved under `core/tests/proptest-regressions/`.
use proptest::prelude::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener};
use tsproxy_core::config::{self, Config, LogLevel};
use tsproxy_core::tunnel::{Handshake, Resolved, Step};
use tsproxy_core::{dns, http, names, socks5, Target};

fn cases(scale: u32) -> u32 {
    let n: u32 = std::env::var("TSPROXY_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    (n / scale).max(1)
}

fn cfg(scale: u32) -> ProptestConfig {
    ProptestConfig { cases: cases(scale), max_shrink_iters: 10_000, ..ProptestConfig::default() }
}

#[derive(Clone, Debug)]
enum Edit {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    proptest::collection::vec(
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
            (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
            any::<usize>().prop_map(Edit::Remove),
            any::<usize>().prop_map(Edit::Truncate),
        ],
        0..6,
    )
}

fn mutate(mut v: Vec<u8>, es: &[Edit]) -> Vec<u8> {
    for e in es {
        let n = v.len();
        match *e {
            Edit::Set(i, b) if n > 0 => v[i % n] = b,
            Edit::Insert(i, b) => v.insert(i % (n + 1), b),
            Edit::Remove(i) if n > 0 => {
                v.remove(i % n);
            }
            Edit::Truncate(i) => v.truncate(i % (n + 1)),
            _ => {}
        }
    }
    v
}

/// Random bytes, or a mutation of one of `seeds`.
fn input(seeds: Vec<Vec<u8>>, max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..max), (proptest::sample::select(seeds), edits()).prop_map(|(s, e)| mutate(s, &e)),]
}

fn host_name() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?){0,4}"
}

/// Queries with several questions, compression pointers (backward, forward, looping), a
/// tailnet name in the second question, an SRV name under ts.net.
pub fn dns_question_seeds() -> Vec<Vec<u8>> {
    let mut two = dns::query(1, "example.com", dns::TYPE_A).unwrap();
    two[5] = 2;
    two.extend_from_slice(&[6, b'p', b'e', b'e', b'r', b'-', b'2', 0xc0, 20, 0, 1, 0, 1]);
    let mut srv = vec![0, 9, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in ["_http", "_tcp", "peer", "tail1234", "ts", "net"] {
        srv.push(l.len() as u8);
        srv.extend_from_slice(l.as_bytes());
    }
    srv.extend_from_slice(&[0, 0, 33, 0, 1]);
    vec![
        dns::query(0x1234, "peer-1", dns::TYPE_A).unwrap(),
        dns::query(7, "Peer.Tail1234.ts.net", dns::TYPE_AAAA).unwrap(),
        two,
        srv,
        vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 18, 0, 1, 0, 1, 4, b'p', b'e', b'e', b'r', 0],
        vec![0, 1, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1, b'a', 0xc0, 16, 1, b'b', 0xc0, 12, 0, 1, 0, 1],
    ]
}

/// What must hold for any bytes: no panic, bounded names, the leak rule names one of the
/// questions, an error response carries the same questions, and the responder's first-question
/// parser agrees with the wire reader.
pub fn check_dns_questions(b: &[u8], short: bool) -> Result<(), TestCaseError> {
    let qs: Vec<dns::WireQuestion> = dns::questions(b).collect();
    let qdcount = if b.len() >= 12 { u16::from_be_bytes([b[4], b[5]]) as usize } else { 0 };
    prop_assert!(qs.len() <= qdcount);
    for q in &qs {
        // 255 octets on the wire: at most 254 characters of labels and dots (U+FFFD takes 3
        // bytes in UTF-8 for 1 octet).
        prop_assert!(q.name.chars().count() <= 254, "{}", q.name.len());
        prop_assert!(!q.name.bytes().any(|c| c.is_ascii_uppercase()));
    }
    let c = Config::from_lookup(|k| match k {
        "TSPROXY_SHORT_NAMES" => Some(if short { "on" } else { "off" }.into()),
        "TSPROXY_DOMAINS" => Some("corp.example".into()),
        _ => None,
    })
    .unwrap();
    if let Some(n) = tsproxy_core::route::tailnet_question(&c, b, |n| n == "localhost") {
        prop_assert!(qs.iter().any(|q| q.name == n));
        // Or an RFC 8552 "attrleaf" name over a tailnet host (`_http._tcp.peer`: route.rs,
        // attrleaf_host): the labels after the leading underscore ones name a tailnet host.
        let mut host = n.as_str();
        while let Some(rest) = host.split_once('.').filter(|(l, _)| l.starts_with('_')).map(|(_, r)| r) {
            host = rest;
        }
        prop_assert!(c.is_under_tailnet_domain(&n) || c.is_tailnet_name(&n, |_| false) || (host != n && c.is_tailnet_name(host, |_| false)), "{n}");
    }
    // The whole-message length never panics and never points past the bytes.
    prop_assert!(dns::message_len(b).map_or(true, |n| (12..=b.len()).contains(&n)));
    if let Some(r) = dns::error_response(b, 2) {
        prop_assert!(r[2] & 0x80 != 0 && r[3] & 0x0f == 2);
        let mut all = dns::questions(b);
        let n = all.by_ref().count();
        let back: Vec<dns::WireQuestion> = dns::questions(&r).collect();
        if all.complete() {
            // The same questions, or none when a pointer led past the question section.
            prop_assert!(back == qs || back.is_empty(), "{back:?} {qs:?}");
            prop_assert_eq!(back.len() == n, back == qs);
        } else {
            prop_assert!(back.is_empty());
        }
    }
    if let Some(p) = dns::parse_query(b) {
        let first = qs.first();
        prop_assert!(first.is_some(), "parse_query read a question the wire reader did not");
        let first = first.unwrap();
        prop_assert_eq!(&first.name, &p.name);
        prop_assert_eq!(first.qtype, p.qtype);
    }
    Ok(())
}

fn socks_seeds() -> Vec<Vec<u8>> {
    vec![
        vec![5, 0, 0, 1, 127, 0, 0, 1, 0, 80],
        [&[5u8, 0, 0, 4][..], &[0; 18]].concat(),
        vec![5, 0, 0, 3, 4, b'p', b'e', b'e', b'r', 0, 22],
        vec![5, 0, 0, 3, 255],
        vec![5, 1, 0, 1, 0, 0, 0, 0, 0, 0],
    ]
}

proptest! {
    #![proptest_config(cfg(1))]

    #[test]
    #[ignore]
    fn fuzz_socks5_replies(b in input(socks_seeds(), 300), offered in any::<bool>()) {
        // What the handshake does: grow the buffer to what reply_len says, never past it.
        let mut need = 5;
        let mut have;
        loop {
            have = need.min(b.len());
            match socks5::reply_len(&b[..have]) {
                Err(e) => {
                    let _ = socks5::errno_for(e);
                    break;
                }
                Ok(n) => {
                    prop_assert!((5..=4 + 1 + 255 + 2).contains(&n));
                    prop_assert!(n >= need || have < need, "reply_len never shrinks");
                    if n > b.len() || n == need {
                        break;
                    }
                    need = n;
                }
            }
        }
        if have >= 5 {
            if let Ok(n) = socks5::reply_len(&b[..have]) {
                if b.len() >= n {
                    let r = socks5::parse_reply(&b[..n]);
                    prop_assert_eq!(r.is_ok(), b[1] == 0);
                }
            }
        }
        if b.len() >= 2 {
            if let Ok(m) = socks5::parse_method([b[0], b[1]], offered) {
                prop_assert!(m == socks5::METHOD_NONE || (offered && m == socks5::METHOD_USERPASS));
            }
            let _ = socks5::parse_auth_reply([b[0], b[1]]);
        }
    }

    #[test]
    #[ignore]
    fn fuzz_socks5_requests(name in "\\PC{0,300}", port: u16, user in "\\PC{0,300}", pass in "\\PC{0,300}") {
        match socks5::connect_request(&Target::Name(name.clone(), port)) {
            Ok(req) => {
                prop_assert!(names::is_host_name(&name));
                prop_assert_eq!(req.len(), 7 + name.len());
            }
            Err(_) => prop_assert!(!names::is_host_name(&name) || name.len() > 255),
        }
        let a = socks5::auth_request(&user, &pass);
        prop_assert!(a.len() <= 3 + 255 + 255);
    }

    #[test]
    #[ignore]
    fn fuzz_http_heads(b in input(vec![
        b"HTTP/1.1 200 Connection established\r\n\r\n".to_vec(),
        b"HTTP/1.0 500 Internal\r\nTailscale-Connect-Error: x\r\n\r\nbanner".to_vec(),
        b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n".to_vec(),
    ], 600)) {
        let end = http::head_end(&b);
        if let Some(end) = end {
            prop_assert!(end >= 4 && end <= b.len() && &b[end - 4..end] == b"\r\n\r\n");
            prop_assert!(http::head_end(&b[..end - 1]).is_none(), "the first end");
        }
        if let Some(s) = http::status(&b) {
            prop_assert!((100..=999).contains(&s));
        }
        let _ = http::errno_for(http::status(&b));
        // The handshake's incremental search (a window 3 bytes back over each new chunk) finds
        // the same end as a search of the whole buffer.
        for chunk in [1usize, 2, 3, 7, 1024] {
            let mut buf: Vec<u8> = Vec::new();
            let mut found = None;
            for piece in b.chunks(chunk) {
                let old = buf.len();
                buf.extend_from_slice(piece);
                let from = old.saturating_sub(3);
                if let Some(e) = http::head_end(&buf[from..]) {
                    found = Some(from + e);
                    break;
                }
            }
            prop_assert_eq!(found, end);
        }
    }

    #[test]
    #[ignore]
    fn fuzz_http_requests(name in "\\PC{0,80}", port: u16, user in "\\PC{0,40}", pass in "\\PC{0,40}") {
        let auth = (!user.is_empty()).then_some((user.as_str(), pass.as_str()));
        match http::connect_request(&Target::Name(name.clone(), port), auth) {
            Ok(r) => {
                prop_assert!(names::is_host_name(&name));
                let text = String::from_utf8(r).unwrap();
                // Exactly one head, its end at the end: nothing can smuggle a line in.
                prop_assert_eq!(http::head_end(text.as_bytes()), Some(text.len()));
                prop_assert_eq!(text.matches("\r\n").count(), if auth.is_some() { 4 } else { 3 });
                prop_assert_eq!(text.matches('\n').count(), text.matches("\r\n").count());
            }
            Err(_) => prop_assert!(!names::is_host_name(&name)),
        }
    }

    #[test]
    #[ignore]
    fn fuzz_dns_messages(b in input(vec![
        dns::query(0x1234, "peer-1.tail1234.ts.net", dns::TYPE_A).unwrap(),
        dns::query(7, "peer", dns::TYPE_AAAA).unwrap(),
        dns::query(9, &["a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61)].join("."), 255).unwrap(),
    ], 600), v4 in any::<[u8; 4]>(), v6 in any::<[u8; 16]>(), id: u16) {
        if let Some(q) = dns::parse_query(&b) {
            prop_assert!(q.end <= b.len() && q.end >= 12 + 1 + 4);
            prop_assert!(q.name.len() <= 255);
            prop_assert!(!q.name.split('.').any(|l| l.len() > 63));
            prop_assert_eq!(q.name.to_ascii_lowercase(), q.name.clone());
            for addr in [None, Some(IpAddr::from(v4)), Some(IpAddr::from(v6))] {
                let r = dns::answer(&b, &q, addr);
                prop_assert_eq!(&r[..2], &b[..2]);
                prop_assert!(r[2] & 0x80 != 0, "a response");
                let want = match (q.qtype, addr) {
                    (dns::TYPE_A, Some(a @ IpAddr::V4(_))) | (dns::TYPE_AAAA, Some(a @ IpAddr::V6(_))) => Some(a),
                    _ => None,
                };
                prop_assert_eq!(dns::first_address(&r, q.id), want);
            }
        }
        let _ = dns::first_address(&b, id);
    }

    #[test]
    #[ignore]
    fn fuzz_dns_questions_and_the_leak_rule(b in input(dns_question_seeds(), 700), short in any::<bool>()) {
        check_dns_questions(&b, short)?;
    }

    #[test]
    #[ignore]
    fn fuzz_dns_query_roundtrip(name in prop_oneof![host_name(), "\\PC{0,80}"], id: u16, qtype: u16) {
        if let Some(q) = dns::query(id, &name, qtype) {
            let p = dns::parse_query(&q).unwrap();
            prop_assert_eq!(p.name, config::normalize_name(&name));
            prop_assert_eq!((p.id, p.qtype, p.end), (id, qtype, q.len()));
        } else {
            prop_assert!(!names::is_host_name(&name));
        }
    }

    #[test]
    #[ignore]
    fn fuzz_config_values(vals in proptest::collection::vec(prop_oneof![
        "\\PC{0,60}",
        "(socks5h?|http|socks4|)://([a-z%:@,]{0,12}@)?[a-z0-9.:\\[\\]]{0,20}(:[0-9a-z]{0,6})?/?(,[ -~]{0,20})?",
        "[0-9a-f:./, ]{0,40}",
    ], 11), name in "\\PC{0,40}") {
        let keys = ["TSPROXY_PROXY", "ALL_PROXY", "TSPROXY_ROUTES", "TSPROXY_DOMAINS", "TSPROXY_SHORT_NAMES", "NO_PROXY", "TSPROXY_LOG",
            "TSPROXY_LOG_FILE", "TSPROXY_CONNECT_TIMEOUT", "TSPROXY_SOCKS_PIPELINE", "all_proxy"];
        let m: HashMap<&str, String> = keys.iter().copied().zip(vals.iter().cloned()).collect();
        match Config::from_lookup(|k| m.get(k).cloned()) {
            Ok(c) => {
                prop_assert!(!c.proxies.is_empty());
                let _ = format!("{c:?}");
                if c.is_tailnet_name(&name, |_| false) {
                    prop_assert!(names::is_host_name(&name) && !names::is_address_literal(&config::normalize_name(&name)));
                }
                for d in &c.domains {
                    prop_assert!(names::is_host_name(d));
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        for v in &vals {
            let _ = config::parse_proxy_list(v);
            let _ = config::redact(v);
            let _ = config::parse_no_proxy(v);
        }
    }

    #[test]
    #[ignore]
    fn fuzz_names(s in prop_oneof![host_name(), "\\PC{0,300}", "[0-9xX.a-f \t]{0,20}", "[a-z0-9.-]{250,260}"]) {
        // Random names must not fill this user's shared name registry.
        tsproxy_core::registry::disable();
        let valid = names::is_host_name(&s);
        if valid {
            prop_assert!(s.trim_end_matches('.').len() <= 253);
            prop_assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
        }
        let _ = names::is_address_literal(&s);
        if let Some(a) = names::inet_aton_exact(&s) {
            prop_assert_eq!(names::inet_aton(&s), Some(a));
        }
        match names::try_intern(&s) {
            Ok(slot) => {
                prop_assert!(valid);
                let n = config::normalize_name(&s);
                prop_assert_eq!(names::name(slot), Some(n.as_str()));
                prop_assert_eq!(names::slot_of(&IpAddr::V4(names::v4(slot))), Some(slot));
                prop_assert_eq!(names::slot_of(&IpAddr::V6(names::v6(slot))), Some(slot));
            }
            Err(names::InternError::Full) => prop_assert_eq!(names::used(), names::MAX_NAMES),
            Err(_) => prop_assert!(!valid),
        }
    }
}

proptest! {
    // Each case opens sockets: fewer of them.
    #![proptest_config(cfg(100))]

    /// Whatever a proxy answers, in whatever pieces, the handshake ends (no panic, no hang) and,
    /// when it succeeds, has read exactly the reply: the byte after it is still in the socket.
    #[test]
    #[ignore]
    fn fuzz_handshake_against_a_hostile_proxy(
        reply in input(vec![
            [&[5u8, 0][..], &[5, 0, 0, 1, 1, 2, 3, 4, 0, 80]].concat(),
            [&[5u8, 2][..], &[1, 0], &[5, 0, 0, 3, 1, b'x', 0, 80]].concat(),
            b"HTTP/1.1 200 OK\r\nX: y\r\n\r\n".to_vec(),
        ], 80),
        cuts in proptest::collection::vec(1usize..8, 1..20),
        http in any::<bool>(),
        auth in any::<bool>(),
        pipeline in any::<bool>(),
    ) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let via = l.local_addr().unwrap();
        let url = format!("{}://{}127.0.0.1", if http { "http" } else { "socks5" }, if auth { "u:p@" } else { "" });
        let ups = [Resolved { up: config::parse_proxy_url(&url).unwrap(), addrs: vec![via], owners: Default::default() }];
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
        let mut hs = Handshake::new(fd, libc::AF_INET, &ups, Target::Name("peer".into(), 22), pipeline);
        let mut log = |_: LogLevel, _: std::fmt::Arguments<'_>| {};
        let mut step = hs.resume(&mut log);
        let (mut p, _) = l.accept().unwrap();
        p.set_nonblocking(true).unwrap();
        let mut data = reply.clone();
        data.push(0xEE); // the application's first byte
        let mut sent = 0;
        let mut cut = cuts.iter().cycle();
        let mut rounds = 0;
        let result = loop {
            rounds += 1;
            prop_assert!(rounds < 10_000, "the handshake must end");
            if let Step::Done(r) = step {
                break r;
            }
            let mut sink = [0u8; 512];
            let _ = p.read(&mut sink);
            if sent < data.len() {
                let n = (*cut.next().unwrap()).min(data.len() - sent);
                let _ = p.write_all(&data[sent..sent + n]);
                sent += n;
            } else {
                let _ = p.shutdown(std::net::Shutdown::Write);
            }
            let mut pfd = libc::pollfd { fd, events: libc::POLLIN | libc::POLLOUT, revents: 0 };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, 20) };
            step = hs.resume(&mut log);
        };
        if result.is_ok() {
            // Give the rest of what was sent a moment, then the next unread byte is ours.
            while sent < data.len() {
                let _ = p.write_all(&data[sent..]);
                sent = data.len();
            }
            let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: pfd is one live pollfd, and 1 is the count passed.
            unsafe { libc::poll(&mut pfd, 1, 1000) };
            let mut rest = [0u8; 256];
            // SAFETY: writable buffer.
            let k = unsafe { libc::recv(fd, rest.as_mut_ptr().cast(), rest.len(), 0) };
            // Exactly the protocol's messages were consumed, not one byte more or less.
            let consumed = if http {
                http::head_end(&data).unwrap()
            } else {
                let m = if auth && data[1] == socks5::METHOD_USERPASS { 4 } else { 2 };
                m + socks5::reply_len(&data[m..]).unwrap()
            };
            prop_assert_eq!(&rest[..k.max(0) as usize], &data[consumed..]);
        }
        // SAFETY: our fd.
        unsafe { libc::close(fd) };
    }
}

proptest! {
    // A short run in every `cargo test` (the long one is `fuzz_dns_questions_and_the_leak_rule`):
    // the wire reader is on the send path of every datagram to port 53.
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn dns_questions_never_panic(b in input(dns_question_seeds(), 700), short in any::<bool>()) {
        check_dns_questions(&b, short)?;
    }
}

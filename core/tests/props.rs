//! Property tests: the parsers never panic on any input, and round-trip where that is defined.
use proptest::prelude::*;
use std::collections::HashMap;
use tsproxy_core::config::{self, Config};
use tsproxy_core::{cidr::Cidr, http, socks5, Target};

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn socks5_reply_parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(n) = socks5::reply_len(&bytes) {
            prop_assert!((5..=262).contains(&n));
            if bytes.len() >= n {
                let _ = socks5::parse_reply(&bytes[..n]);
            }
        }
        if bytes.len() >= 2 {
            let _ = socks5::parse_method([bytes[0], bytes[1]], bytes.len() % 2 == 0);
            let _ = socks5::parse_auth_reply([bytes[0], bytes[1]]);
        }
    }

    #[test]
    fn http_head_parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Some(end) = http::head_end(&bytes) {
            prop_assert!(end <= bytes.len() && &bytes[end - 4..end] == b"\r\n\r\n");
        }
        let _ = http::errno_for(http::status(&bytes));
    }

    #[test]
    fn http_status_roundtrip(code in 100u16..600, reason in "[ -~]{0,40}") {
        let head = format!("HTTP/1.1 {code} {reason}\r\nX: y\r\n\r\n");
        prop_assert_eq!(http::status(head.as_bytes()), Some(code));
        prop_assert_eq!(http::head_end(head.as_bytes()), Some(head.len()));
    }

    #[test]
    fn socks5_request_roundtrip(name in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?){0,7}", port: u16) {
        let req = socks5::connect_request(&Target::Name(name.clone(), port)).unwrap();
        prop_assert_eq!(&req[..5], &[5, 1, 0, 3, name.len() as u8][..]);
        prop_assert_eq!(&req[5..5 + name.len()], name.as_bytes());
        prop_assert_eq!(u16::from_be_bytes([req[req.len() - 2], req[req.len() - 1]]), port);
    }

    #[test]
    fn proxy_urls_never_panic(s in "\\PC{0,80}") {
        let _ = config::parse_proxy_list(&s);
        let _ = config::redact(&s);
        let _ = config::parse_no_proxy(&s);
        let _ = Cidr::parse(&s);
    }

    #[test]
    fn proxy_url_roundtrip(
        scheme in prop_oneof!["socks5", "socks5h", "http"],
        host in "[a-z][a-z0-9-]{0,20}(\\.[a-z0-9-]{1,10}){0,3}",
        port in 1u16..,
        user in "[A-Za-z0-9 @:/%?#!-]{1,20}",
        pass in "[A-Za-z0-9 @:/%?#!-]{0,20}",
    ) {
        let enc = |s: &str| s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect::<String>();
        let url = format!("{scheme}://{}:{}@{host}:{port}", enc(&user), enc(&pass));
        let u = config::parse_proxy_url(&url).unwrap();
        prop_assert_eq!(&u.host, &host);
        prop_assert_eq!(u.port, port);
        prop_assert_eq!(u.user.as_deref(), Some(user.as_str()));
        prop_assert_eq!(u.pass.as_deref(), Some(pass.as_str()));
        let shown = u.to_string();
        prop_assert!(shown.ends_with(&format!(":***@{host}:{port}")), "password hidden: {}", shown);
    }

    #[test]
    fn config_from_any_environment_never_panics(vals in proptest::collection::vec("\\PC{0,40}", 10)) {
        let keys = ["TSPROXY_PROXY", "ALL_PROXY", "TSPROXY_ROUTES", "TSPROXY_DOMAINS", "TSPROXY_SHORT_NAMES", "NO_PROXY", "TSPROXY_LOG", "TSPROXY_LOG_FILE", "TSPROXY_CONNECT_TIMEOUT", "TSPROXY_SOCKS_PIPELINE"];
        let m: HashMap<&str, String> = keys.iter().copied().zip(vals).collect();
        if let Ok(c) = Config::from_lookup(|k| m.get(k).cloned()) {
            prop_assert!(!c.proxies.is_empty());
            let _ = c.classify_ip("100.64.0.1".parse().unwrap());
            let _ = c.is_tailnet_name("peer", |_| false);
        }
    }

    #[test]
    fn cidr_contains_its_own_address(a: [u8; 4], p in 0u8..=32) {
        let ip = std::net::Ipv4Addr::from(a);
        let c = Cidr::parse(&format!("{ip}/{p}")).unwrap();
        prop_assert!(c.contains(&ip.into()));
    }
}

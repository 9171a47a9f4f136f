//! No configuration error, and no Display/Debug of a parsed configuration, ever shows a proxy
//! password, wherever the password lands in a malformed value.
use proptest::prelude::*;
use std::collections::HashMap;
use tsproxy_core::config::{self, Config};

fn check(var: &str, value: &str, pass: &str) -> Result<(), TestCaseError> {
    let m: HashMap<&str, String> = [(var, value.to_string())].into_iter().collect();
    match Config::from_lookup(|k| m.get(k).cloned()) {
        Err(e) => {
            let shown = format!("{e} | {e:?}");
            prop_assert!(!shown.contains(pass), "{:?} leaked in {}", pass, shown);
        }
        Ok(c) => {
            let shown = format!("{c:?} | {}", c.proxies.iter().map(|u| u.to_string()).collect::<Vec<_>>().join(","));
            prop_assert!(!shown.contains(pass), "{:?} leaked in {}", pass, shown);
        }
    }
    if let Err(e) = config::parse_proxy_list(value) {
        // What the launcher prints for a bad --proxy.
        let shown = format!("invalid --proxy {:?}: {e}", config::redact(value));
        prop_assert!(!shown.contains(pass), "{:?} leaked in {}", pass, shown);
    }
    Ok(())
}

/// Passwords: printable ASCII (with the list and URL delimiters `, @ : / % [ ] # ?` and space),
/// 8 or more characters with at least one upper-case letter (hosts and users here are lower
/// case, so a password cannot show up by coincidence). `://` is excluded, and so is a leading
/// `//` (which makes `user://...`): such a password cannot be told from the start of another
/// URL (see `config::redact`).
fn password() -> impl Strategy<Value = String> {
    "[ -~]{3,20}[A-Z][ -~]{3,20}".prop_filter("no ://", |p| !p.contains("://") && !p.starts_with("//"))
}

fn fuzz_cases() -> u32 {
    std::env::var("TSPROXY_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000)
}

#[allow(clippy::too_many_arguments)]
fn template_case(pass: String, user: &str, host: &str, port: &str, scheme: &str, template: usize, var: &str) -> Result<(), TestCaseError> {
    let v = match template {
        0 => format!("{scheme}://{user}:{pass}@{host}:{port}"),
        1 => format!("{scheme}://{user}:{pass}@{host}:{port},bogus"),
        2 => format!("{scheme}://{user}:{pass}@{host}:{port}/x"),
        3 => format!("{user}:{pass}@{host}:{port}"),
        4 => format!("{scheme}://{user}:{}", pass.replace('@', "")),
        5 => format!("socks5://h:1,{scheme}://{user}:{pass}@{host}:{port},http://[::1"),
        6 => format!("{scheme}://{user}:%z{pass}@{host}"),
        7 => format!("{scheme}://{user}:{pass}@[{host}]:{port}"),
        _ => format!("{scheme}://{user}:{pass}@"),
    };
    let pass = if template == 4 { pass.replace('@', "") } else { pass };
    prop_assume!(pass.len() >= 6);
    check(var, &v, &pass)
}

macro_rules! secret_props {
    ($cases:expr, $($attr:meta),* ; $templates:ident, $percent:ident) => {
        proptest! {
            #![proptest_config(ProptestConfig { cases: $cases, .. ProptestConfig::default() })]

            $(#[$attr])*
            #[test]
            fn $templates(
                pass in password(),
                user in "[a-z]{1,8}",
                host in "[a-z]{1,8}(\\.[a-z]{1,5})?",
                port in prop_oneof![Just("1080".to_string()), Just("0".to_string()), Just("70000".to_string()), "[a-z]{1,3}"],
                scheme in prop_oneof!["socks5", "socks5h", "http", "socks4", "https"],
                template in 0usize..9,
                var in prop_oneof!["TSPROXY_PROXY", "ALL_PROXY", "all_proxy"],
            ) {
                template_case(pass, &user, &host, &port, &scheme, template, &var)?;
            }

            $(#[$attr])*
            #[test]
            fn $percent(raw in "[ -~]{8,30}", user in "[a-z]{1,8}") {
                let enc: String = raw.bytes().map(|b| format!("%{b:02X}")).collect();
                // Valid: Display hides it. With a bad port: the error hides it.
                check("TSPROXY_PROXY", &format!("socks5://{user}:{enc}@h:1080"), &enc)?;
                check("TSPROXY_PROXY", &format!("socks5://{user}:{enc}@h:1080"), &raw)?;
                check("TSPROXY_PROXY", &format!("socks5://{user}:{enc}@h:x"), &enc)?;
            }
        }
    };
}

secret_props!(3000, ; no_error_shows_the_password, percent_encoded_passwords_never_show);
// The same, long: `make fuzz` (see tests/fuzz.rs).
secret_props!(fuzz_cases(), ignore ; fuzz_no_error_shows_the_password, fuzz_percent_encoded_passwords_never_show);

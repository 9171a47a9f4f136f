//! Names this machine knows by itself — every name /etc/hosts lists, and the hostname (and its
//! first label) — which are therefore never tailnet short names.
use crate::config::normalize_name;
use std::collections::HashSet;

/// Read /etc/hosts and the hostname now. Missing files give fewer names, never an error.
pub fn local_names() -> HashSet<String> {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    parse(&hosts, &hostname)
}

/// Does /etc/hosts list `ip` (read now)? A reverse lookup of a tailnet address it lists is
/// answered by glibc's `files` source before any DNS source is asked.
pub fn lists_address(ip: std::net::IpAddr) -> bool {
    lists(&std::fs::read_to_string("/etc/hosts").unwrap_or_default(), ip)
}

/// Does a hosts file's text give an entry for `ip` (with at least one name)?
pub fn lists(hosts: &str, ip: std::net::IpAddr) -> bool {
    let ip = crate::cidr::unmap(ip);
    hosts.lines().any(|line| {
        let mut f = line.split('#').next().unwrap_or("").split_whitespace();
        f.next().and_then(|a| a.parse::<std::net::IpAddr>().ok()).is_some_and(|a| crate::cidr::unmap(a) == ip) && f.next().is_some()
    })
}

/// The names in a hosts file's text (every field after the address, comments dropped), plus
/// `hostname` and its first label; all normalized (lower case, no trailing dot).
pub fn parse(hosts: &str, hostname: &str) -> HashSet<String> {
    let mut set = HashSet::new();
    for line in hosts.lines() {
        let line = line.split('#').next().unwrap_or("");
        set.extend(line.split_whitespace().skip(1).map(normalize_name));
    }
    let h = normalize_name(hostname.trim());
    if !h.is_empty() {
        if let Some((first, _)) = h.split_once('.') {
            set.insert(first.to_string());
        }
        set.insert(h);
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_hostname() {
        let text = "127.0.0.1 localhost\n::1 ip6-localhost ip6-loopback # comment name-in-comment\n\
                    # 10.0.0.1 commented\n10.0.0.5\tBuild-Box.lan. buildbox\n\n  \n10.0.0.6";
        let s = parse(text, "Laptop.example.com\n");
        for n in ["localhost", "ip6-localhost", "ip6-loopback", "build-box.lan", "buildbox", "laptop.example.com", "laptop"] {
            assert!(s.contains(n), "{n}: {s:?}");
        }
        for n in ["name-in-comment", "commented", "10.0.0.1", "10.0.0.5", "10.0.0.6", "127.0.0.1", ""] {
            assert!(!s.contains(n), "{n}: {s:?}");
        }
        assert_eq!(parse("", ""), HashSet::new());
        assert_eq!(parse("", "single\n"), HashSet::from(["single".to_string()]));
    }

    #[test]
    fn reads_this_machine() {
        // Whatever this machine has, its hostname is in the set.
        let set = local_names();
        if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            assert!(h.trim().is_empty() || set.contains(&normalize_name(h.trim())));
        }
    }
}

#[cfg(test)]
mod address_tests {
    #[test]
    fn a_hosts_file_lists_an_address_with_a_name() {
        let t = "127.0.0.1 localhost\n100.64.0.2 mypeer # a tailnet host\n# 100.64.0.3 old\n100.64.0.4\n";
        assert!(super::lists(t, "100.64.0.2".parse().unwrap()));
        assert!(super::lists(t, "::ffff:100.64.0.2".parse().unwrap()));
        assert!(!super::lists(t, "100.64.0.3".parse().unwrap()));
        assert!(!super::lists(t, "100.64.0.4".parse().unwrap()));
    }
}

//! The configuration files: `/etc/tsproxy.conf` (system) and `$XDG_CONFIG_HOME/tsproxy/config`
//! (user), `KEY=VALUE` lines with the environment's names, and a proxychains4.conf's
//! `[ProxyList]`. Read with raw syscalls (the library reads them from inside its hooks, where
//! libc's `open`/`read` may be ours or another preload's), by hand (no parsing crate: start-up
//! cost), and only when asked (the library asks once, on first use).
//!
//! Precedence: environment > user file > system file, per key. In a secure-execution process
//! (`AT_SECURE`: setuid, setgid, file capabilities) only the system file counts, and only when
//! root owns it and nobody else can write it (see [`load`]).
use crate::config::{ConfigError, Origin, Scheme, Upstream};
use std::io;

/// The system file.
pub const SYSTEM_PATH: &str = "/etc/tsproxy.conf";

/// The largest file read: a configuration is a few lines, and a huge file (a device, a mistake)
/// must not make every process read it.
const MAX_LEN: usize = 64 * 1024;

/// Every key a configuration file may hold: the environment's names. `ALL_PROXY` is not one (it
/// belongs to other programs too); `TSPROXY_SUPERVISOR_DNS`/`_KEY` are the launcher's own.
pub const KEYS: &[&str] = &[
    "TSPROXY_PROXY",
    "TSPROXY_PROXYCHAINS_CONF",
    "TSPROXY_ROUTES",
    "TSPROXY_DOMAINS",
    "TSPROXY_SHORT_NAMES",
    "NO_PROXY",
    "TSPROXY_LOG",
    "TSPROXY_LOG_FILE",
    "TSPROXY_CONNECT_TIMEOUT",
    "TSPROXY_SOCKS_PIPELINE",
    "TSPROXY_PROXY_OWNER",
    "TSPROXY_SUPERVISOR",
    "TSPROXY_LIB",
];

/// One `KEY=VALUE` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// One of [`KEYS`].
    pub key: &'static str,
    /// The value, unquoted. May hold a password: never print it unredacted.
    pub value: String,
    /// 1-based line number.
    pub line: usize,
}

/// A parsed configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfFile {
    /// Where it was read from (named in errors).
    pub path: String,
    /// Its settings in file order; for a key given twice the last line wins.
    pub settings: Vec<Setting>,
    /// Owner uid.
    pub uid: u32,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
}

impl ConfFile {
    /// The value of `key` here (the last line that sets it), with its origin.
    pub fn get(&self, key: &str) -> Option<(&str, Origin)> {
        self.settings.iter().rev().find(|s| s.key == key).map(|s| (s.value.as_str(), Origin { path: self.path.clone(), line: s.line }))
    }

    /// Does this file hold a proxy password (a `user:pass@` in `TSPROXY_PROXY` with a non-empty
    /// password) while group or others may read it? The launcher and `doctor` warn about it.
    pub fn exposes_password(&self) -> bool {
        self.mode & 0o044 != 0 && self.settings.iter().any(|s| s.key == "TSPROXY_PROXY" && has_password(&s.value))
    }
}

/// Does a proxy list hold a non-empty password? Unparseable lists are judged by their text (an
/// `@` after a `:` in the userinfo), generously: the warning is what matters.
pub fn has_password(list: &str) -> bool {
    match crate::config::parse_proxy_list(list) {
        Ok(ups) => ups.iter().any(|u| u.pass.as_deref().is_some_and(|p| !p.is_empty())),
        Err(_) => list.split(',').any(|u| u.rsplit_once('@').is_some_and(|(ui, _)| ui.rsplit("://").next().is_some_and(|ui| ui.contains(':')))),
    }
}

fn file_err(path: &str, line: usize, var: &str, value: &str, why: String) -> ConfigError {
    ConfigError { var: var.to_string(), value: value.to_string(), why, at: Some(Origin { path: path.to_string(), line }) }
}

/// Parse a file's text. Lines: `KEY=VALUE`, optionally `export KEY=VALUE`; blank lines and lines
/// starting with `#` are ignored (a `#` later in a line is part of the value: passwords may hold
/// one). A value may be wrapped in one pair of `"` or `'` quotes (nothing inside is expanded).
/// Unknown keys and lines without `=` are errors naming the file and line: a typo must not
/// silently leave a setting at its default.
pub fn parse(path: &str, text: &[u8], uid: u32, mode: u32) -> Result<ConfFile, ConfigError> {
    let text = std::str::from_utf8(text).map_err(|e| {
        let line = text[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count() + 1;
        file_err(path, line, "", "", "not UTF-8 text".into())
    })?;
    let mut settings = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let l = l.strip_prefix("export ").map(str::trim_start).unwrap_or(l);
        let Some((k, v)) = l.split_once('=') else {
            return Err(file_err(path, line, "", "", "expected KEY=VALUE".into()));
        };
        let k = k.trim();
        let Some(&key) = KEYS.iter().find(|&&n| n == k) else {
            let hint = match k {
                "ALL_PROXY" | "all_proxy" => " (use TSPROXY_PROXY in a file)",
                "no_proxy" => " (use NO_PROXY)",
                _ => "",
            };
            let shown: String = k.chars().take(64).map(|c| if c.is_control() { '?' } else { c }).collect();
            return Err(file_err(path, line, &shown, "", format!("unknown key{hint}; known: {}", KEYS.join(", "))));
        };
        let v = v.trim();
        let v = match (v.as_bytes().first(), v.as_bytes().last()) {
            (Some(b'"'), Some(b'"')) | (Some(b'\''), Some(b'\'')) if v.len() >= 2 => &v[1..v.len() - 1],
            (Some(b'"' | b'\''), _) => {
                let shown = if key == "TSPROXY_PROXY" { crate::config::redact(v) } else { v.to_string() };
                return Err(file_err(path, line, key, &shown, "unclosed quote".into()));
            }
            _ => v,
        };
        settings.push(Setting { key, value: v.to_string(), line });
    }
    Ok(ConfFile { path: path.to_string(), settings, uid, mode })
}

/// Read a whole small file with raw syscalls: `Ok(None)` when it does not exist; its bytes,
/// owner uid and permission bits otherwise. Over 64 KiB, or not a regular file, is an error.
pub fn read(path: &str) -> io::Result<Option<(Vec<u8>, u32, u32)>> {
    let Ok(c) = std::ffi::CString::new(path) else { return Err(io::Error::from_raw_os_error(libc::EINVAL)) };
    let fd = match crate::syscall!(SYS_openat, libc::AT_FDCWD, c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK) {
        Ok(fd) => fd as i32,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => return Ok(None),
        Err(e) => return Err(e),
    };
    let r = read_fd(fd);
    let _ = crate::syscall!(SYS_close, fd);
    r.map(Some)
}

fn read_fd(fd: i32) -> io::Result<(Vec<u8>, u32, u32)> {
    // SAFETY: all-zero bytes are a valid `stat` (plain integers).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    crate::syscall!(SYS_newfstatat, fd, c"".as_ptr(), &mut st as *mut libc::stat, libc::AT_EMPTY_PATH)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut out = Vec::with_capacity((st.st_size as usize).min(MAX_LEN) + 1);
    let mut buf = [0u8; 4096];
    loop {
        match crate::syscall!(SYS_read, fd, buf.as_mut_ptr(), buf.len()) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n as usize]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        if out.len() > MAX_LEN {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "larger than 64 KiB"));
        }
    }
    Ok((out, st.st_uid, st.st_mode & 0o7777))
}

/// Read and parse one file; `Ok(None)` when it does not exist. With `trusted_only` (secure
/// execution) a file that someone other than root owns or may write is refused: it would let that
/// user steer a privileged process.
pub fn load_file(path: &str, trusted_only: bool) -> Result<Option<ConfFile>, ConfigError> {
    let unreadable = |why: String| file_err(path, 0, "", "", why);
    match read(path) {
        Ok(None) => Ok(None),
        Ok(Some((text, uid, mode))) => {
            if trusted_only && (uid != 0 || mode & 0o022 != 0) {
                return Err(unreadable("ignored in a setuid/setgid/setcap process: not owned by root, or writable by group or others".into()));
            }
            parse(path, &text, uid, mode).map(Some)
        }
        Err(e) => Err(unreadable(format!("cannot read: {e}"))),
    }
}

/// The user file counts only for its owner (or when root owns it): a process that kept another
/// user's `HOME` (`sudo` without `-H`, a daemon that dropped privileges) must not take that
/// user's settings — a root process would otherwise append to a log file of their choosing. One
/// it may not read (`HOME=/root` after dropping privileges) is as good as absent: in every
/// process of the machine (system-wide mode) that is common and not a mistake.
fn load_user_file(path: &str) -> Result<Option<ConfFile>, ConfigError> {
    let euid = crate::syscall!(SYS_geteuid).unwrap_or(-1) as u32;
    match read(path) {
        Ok(Some((text, uid, mode))) if uid == euid || uid == 0 => parse(path, &text, uid, mode).map(Some),
        Ok(_) => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::EACCES) => Ok(None),
        Err(e) => Err(file_err(path, 0, "", "", format!("cannot read: {e}"))),
    }
}

/// `$XDG_CONFIG_HOME/tsproxy/config`, else `$HOME/.config/tsproxy/config` (relative
/// `XDG_CONFIG_HOME` values are ignored, as the XDG spec says).
pub fn user_path(xdg_config_home: Option<&str>, home: Option<&str>) -> Option<String> {
    match xdg_config_home.filter(|x| x.starts_with('/')) {
        Some(x) => Some(format!("{}/tsproxy/config", x.trim_end_matches('/'))),
        None => home.filter(|h| h.starts_with('/')).map(|h| format!("{}/.config/tsproxy/config", h.trim_end_matches('/'))),
    }
}

/// The files that apply to this process, highest precedence first: the user file (not under
/// `secure`), then the system file (`system`, normally [`SYSTEM_PATH`]). `env` gives
/// `XDG_CONFIG_HOME` and `HOME`. A file that exists but cannot be read or parsed is an error
/// (fail closed: a broken configuration must not leave tailnet traffic on defaults).
pub fn load(secure: bool, system: &str, env: impl Fn(&str) -> Option<String>) -> Result<Vec<ConfFile>, ConfigError> {
    let mut files = Vec::with_capacity(2);
    if !secure {
        if let Some(p) = user_path(env("XDG_CONFIG_HOME").as_deref(), env("HOME").as_deref()) {
            files.extend(load_user_file(&p)?);
        }
    }
    files.extend(load_file(system, secure)?);
    Ok(files)
}

/// A proxychains4.conf's `[ProxyList]` as tsproxy upstreams. Lines there are
/// `type host port [user pass]`; `socks5` and `http` map to tsproxy's schemes, `socks4` and
/// `raw` are refused (tsproxy speaks neither). tsproxy does not chain proxies: more than one
/// entry is accepted only with `random_chain` or `round_robin_chain` and `chain_len = 1` (one
/// proxy per connection, which tsproxy's failover list approximates); otherwise it is an error.
/// Every other option (`proxy_dns`, `localnet`, timeouts...) is ignored: tsproxy's own rules
/// decide what goes through the proxy.
pub fn parse_proxychains(path: &str, text: &[u8]) -> Result<Vec<Upstream>, ConfigError> {
    let text = String::from_utf8_lossy(text);
    let mut in_list = false;
    let mut ups = Vec::new();
    let mut chain = ("strict_chain", 0usize);
    let mut chain_len = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.split('#').next().unwrap_or("").trim();
        if l.is_empty() {
            continue;
        }
        if l.starts_with('[') {
            in_list = l.eq_ignore_ascii_case("[ProxyList]");
            continue;
        }
        if !in_list {
            if ["strict_chain", "dynamic_chain", "random_chain", "round_robin_chain"].contains(&l) {
                chain = (["strict_chain", "dynamic_chain", "random_chain", "round_robin_chain"].into_iter().find(|c| *c == l).unwrap_or("strict_chain"), line);
            } else if let Some(n) = l.strip_prefix("chain_len") {
                chain_len = n.trim_start_matches([' ', '\t', '=']).trim().parse::<u32>().ok();
            }
            continue;
        }
        let f: Vec<&str> = l.split_whitespace().collect();
        let e = |why: String| file_err(path, line, "[ProxyList]", f.first().copied().unwrap_or(""), why);
        let scheme = match f[0].to_ascii_lowercase().as_str() {
            "socks5" => Scheme::Socks5,
            "http" => Scheme::Http,
            "socks4" | "socks4a" | "raw" => return Err(e(format!("{} proxies are not supported by tsproxy (socks5 or http)", f[0]))),
            _ => return Err(e("unknown proxy type (socks5 or http)".into())),
        };
        if f.len() != 3 && f.len() != 5 {
            return Err(e("expected: type host port [user pass]".into()));
        }
        let port = f[2].parse::<u16>().ok().filter(|&p| p != 0).ok_or_else(|| e("bad port (1 to 65535)".into()))?;
        let host = f[1].trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b)) {
            return Err(e("bad host".into()));
        }
        let (user, pass) = if f.len() == 5 { (Some(f[3].to_string()), Some(f[4].to_string())) } else { (None, None) };
        if user.as_ref().is_some_and(|u| u.len() > 255) || pass.as_ref().is_some_and(|p| p.len() > 255) {
            return Err(e("user name and password must be 1 to 255 bytes".into()));
        }
        ups.push(Upstream { scheme, host, port, user, pass });
    }
    if ups.is_empty() {
        return Err(file_err(path, 0, "[ProxyList]", "", "no socks5 or http proxy in [ProxyList]".into()));
    }
    let one_per_connection = matches!(chain.0, "random_chain" | "round_robin_chain") && chain_len == Some(1);
    if ups.len() > 1 && !one_per_connection {
        return Err(file_err(
            path,
            chain.1,
            "[ProxyList]",
            chain.0,
            format!("{} proxies with {}: tsproxy does not chain proxies; keep one, or use random_chain with chain_len = 1 (failover)", ups.len(), chain.0),
        ));
    }
    Ok(ups)
}

/// Read a proxychains4.conf (raw syscalls) and map its `[ProxyList]`; see [`parse_proxychains`].
pub fn load_proxychains(path: &str, trusted_only: bool) -> Result<Vec<Upstream>, ConfigError> {
    let bad = |why: String| file_err(path, 0, "TSPROXY_PROXYCHAINS_CONF", path, why);
    match read(path) {
        Ok(None) => Err(bad("no such file".into())),
        Ok(Some((_, uid, mode))) if trusted_only && (uid != 0 || mode & 0o022 != 0) => {
            Err(bad("ignored in a setuid/setgid/setcap process: not owned by root, or writable by group or others".into()))
        }
        Ok(Some((text, _, _))) => parse_proxychains(path, &text),
        Err(e) => Err(bad(format!("cannot read: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_comments_quotes() {
        let t = b"# c\n\n  TSPROXY_LOG = debug \nexport TSPROXY_ROUTES=\"10.0.0.0/8\"\nTSPROXY_PROXY='socks5://a:p#w@h:1'\nTSPROXY_LOG=info\n";
        let f = parse("/x", t, 0, 0o644).unwrap();
        assert_eq!(f.settings.len(), 4);
        assert_eq!(f.get("TSPROXY_LOG").unwrap().0, "info");
        assert_eq!(f.get("TSPROXY_LOG").unwrap().1.line, 6);
        assert_eq!(f.get("TSPROXY_ROUTES").unwrap().0, "10.0.0.0/8");
        assert_eq!(f.get("TSPROXY_PROXY").unwrap().0, "socks5://a:p#w@h:1");
        assert!(f.get("TSPROXY_DOMAINS").is_none());
    }

    #[test]
    fn bad_lines_name_file_line_key() {
        let e = parse("/etc/t.conf", b"TSPROXY_LOG=x\nTSPROXY_PORXY=socks5://h\n", 0, 0).unwrap_err();
        assert_eq!(e.at, Some(Origin { path: "/etc/t.conf".into(), line: 2 }));
        assert!(e.to_string().contains("/etc/t.conf:2") && e.to_string().contains("TSPROXY_PORXY"), "{e}");
        let e = parse("/f", b"\n\njust words\n", 0, 0).unwrap_err();
        assert_eq!(e.at.unwrap().line, 3);
        let e = parse("/f", b"ALL_PROXY=socks5://h\n", 0, 0).unwrap_err();
        assert!(e.to_string().contains("TSPROXY_PROXY"), "{e}");
        let e = parse("/f", b"TSPROXY_PROXY=\"socks5://u:Sekr1t@h\n", 0, 0).unwrap_err();
        assert!(!e.to_string().contains("Sekr1t") && e.to_string().contains("unclosed"), "{e}");
        let e = parse("/f", b"TSPROXY_LOG=ok\n\xff\n", 0, 0).unwrap_err();
        assert_eq!(e.at.unwrap().line, 2);
    }

    #[test]
    fn password_exposure() {
        let f = |t: &[u8], mode| parse("/f", t, 1000, mode).unwrap().exposes_password();
        assert!(f(b"TSPROXY_PROXY=socks5://u:pw@h\n", 0o644));
        assert!(f(b"TSPROXY_PROXY=socks5://u:pw@h\n", 0o640));
        assert!(!f(b"TSPROXY_PROXY=socks5://u:pw@h\n", 0o600), "owner only");
        assert!(!f(b"TSPROXY_PROXY=socks5://u@h\n", 0o644), "no password");
        assert!(!f(b"TSPROXY_PROXY=socks5://h\nTSPROXY_LOG=debug\n", 0o644));
        assert!(has_password("socks5://u:p:w@h:bad"), "judged even when it does not parse");
    }

    #[test]
    fn user_path_rules() {
        assert_eq!(user_path(Some("/x/"), Some("/h")).unwrap(), "/x/tsproxy/config");
        assert_eq!(user_path(Some("rel"), Some("/h")).unwrap(), "/h/.config/tsproxy/config");
        assert_eq!(user_path(None, None), None);
    }

    #[test]
    fn files_on_disk() {
        let d = std::env::temp_dir().join(format!("tsp-conffile-{}", std::process::id()));
        std::fs::create_dir_all(d.join("u/tsproxy")).unwrap();
        let sys = d.join("sys.conf");
        std::fs::write(&sys, "TSPROXY_LOG=info\n").unwrap();
        std::fs::write(d.join("u/tsproxy/config"), "TSPROXY_LOG=debug\n").unwrap();
        let env = |k: &str| (k == "XDG_CONFIG_HOME").then(|| d.join("u").to_string_lossy().into_owned());
        let files = load(false, sys.to_str().unwrap(), env).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].get("TSPROXY_LOG").unwrap().0, "debug", "user file first");
        // Secure: the user file is not read at all, and the system file only if root owns it and
        // nobody else may write it.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sys, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = load(true, sys.to_str().unwrap(), env).unwrap_err();
        assert!(e.to_string().contains("writable"), "{e}");
        std::fs::set_permissions(&sys, std::fs::Permissions::from_mode(0o644)).unwrap();
        let owned_by_root = std::fs::metadata(&sys).map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap();
        match load(true, sys.to_str().unwrap(), env) {
            Ok(f) => assert!(owned_by_root && f.len() == 1 && f[0].get("TSPROXY_LOG").unwrap().0 == "info"),
            Err(e) => assert!(!owned_by_root, "{e}"),
        }
        assert!(load(false, d.join("none").to_str().unwrap(), |_| None).unwrap().is_empty());
        // A user file owned by someone else (not root) is skipped; an unreadable one too.
        if owned_by_root {
            let uf = d.join("u/tsproxy/config");
            std::os::unix::fs::chown(&uf, Some(4242), None).unwrap();
            assert_eq!(load(false, d.join("none").to_str().unwrap(), env).unwrap().len(), 0, "another user's file");
            std::os::unix::fs::chown(&uf, Some(0), None).unwrap();
            assert_eq!(load(false, d.join("none").to_str().unwrap(), env).unwrap().len(), 1, "control: ours");
        }
        assert!(load_file(d.to_str().unwrap(), false).is_err(), "a directory");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn proxychains_lists() {
        let ok = b"strict_chain\nproxy_dns\n[ProxyList]\n# tor\nsocks5 127.0.0.1 9050 alice s3cret\n";
        let u = parse_proxychains("/p", ok).unwrap();
        assert_eq!(u.len(), 1);
        assert_eq!((u[0].scheme, u[0].host.as_str(), u[0].port), (Scheme::Socks5, "127.0.0.1", 9050));
        assert_eq!((u[0].user.as_deref(), u[0].pass.as_deref()), (Some("alice"), Some("s3cret")));
        let u = parse_proxychains("/p", b"random_chain\nchain_len = 1\n[ProxyList]\nhttp 10.0.0.1 3128\nsocks5 ::1 1080\n").unwrap();
        assert_eq!((u[0].scheme, u[1].host.as_str()), (Scheme::Http, "::1"));
        for (bad, want) in [
            (&b"[ProxyList]\nsocks4 127.0.0.1 9050\n"[..], "socks4 proxies are not supported"),
            (b"[ProxyList]\nraw 127.0.0.1 9050\n", "raw proxies"),
            (b"[ProxyList]\nsocks5 127.0.0.1\n", "type host port"),
            (b"[ProxyList]\nsocks5 127.0.0.1 0\n", "bad port"),
            (b"[ProxyList]\nftp 127.0.0.1 21\n", "unknown proxy type"),
            (b"strict_chain\n[ProxyList]\nsocks5 127.0.0.1 1\nsocks5 127.0.0.1 2\n", "does not chain"),
            (b"[ProxyList]\n", "no socks5 or http proxy"),
        ] {
            let e = parse_proxychains("/p.conf", bad).unwrap_err();
            assert!(e.to_string().contains(want) && e.to_string().contains("/p.conf"), "{e}");
        }
        let e = parse_proxychains("/p", b"[ProxyList]\nsocks5 h 1 u s3cret\nsocks4 h 1 u s3cret\n").unwrap_err();
        assert_eq!(e.at.as_ref().unwrap().line, 3);
        assert!(!e.to_string().contains("s3cret"));
    }
}

//! Configuration from the environment and the configuration files (`conffile`), parsed once.
//! Every bad value is an error that names the variable, and the file and line when it came from
//! a file (the launcher exits 2 with it; the library logs it and fails closed).
use crate::cidr::{self, Cidr};
use crate::conffile::ConfFile;
use crate::names;
use std::net::IpAddr;
use std::time::Duration;

/// The protocol spoken to an upstream proxy (tailscaled offers both).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `socks5://` and `socks5h://`: identical here, tailnet names are always sent as names.
    Socks5,
    /// `http://`: HTTP CONNECT.
    Http,
}

/// One proxy of the failover list, as parsed from its URL (not yet resolved to addresses).
///
/// `Debug` and `Display` both print `scheme://user:***@host:port`: an `Upstream` ends up in
/// logs and error messages, and the password must never.
#[derive(Clone, PartialEq, Eq)]
pub struct Upstream {
    /// How to talk to it.
    pub scheme: Scheme,
    /// Host name or address literal, lower case, IPv6 without brackets.
    pub host: String,
    /// Port; defaults to tailscaled's (1080 SOCKS5, 3128 HTTP) when the URL has none.
    pub port: u16,
    /// User name (percent-decoded), for RFC 1929 or `Proxy-Authorization: Basic`.
    pub user: Option<String>,
    /// Password (percent-decoded); `Some("")` when a user was given without one. Secret.
    pub pass: Option<String>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Never shows the password.
impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self.scheme {
            Scheme::Socks5 => "socks5",
            Scheme::Http => "http",
        };
        write!(f, "{s}://")?;
        if let Some(u) = &self.user {
            write!(f, "{u}:***@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// How much tsproxy says (`TSPROXY_LOG`), ordered so `level >= LogLevel::Info` reads naturally.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Nothing, not even errors (`-q`).
    Off,
    /// Failures the user must know about (the default): a proxy down, a bad configuration.
    Error,
    /// Also each failed destination and why.
    Info,
    /// Every decision (`-v`): which connection went where.
    Debug,
}

/// One `NO_PROXY` entry: a tailnet destination that must *not* go through the proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoProxy {
    /// An address or CIDR.
    Net(Cidr),
    /// Matches the name itself and every name below it.
    Domain(String),
}

/// Everything the environment configures, parsed once and then only read (so the library can
/// consult it from any hook without locks). `Debug` never shows a password (see [`Upstream`]).
#[derive(Clone, Debug)]
pub struct Config {
    /// The failover list (`TSPROXY_PROXY`, else `ALL_PROXY`, else the default); never empty.
    pub proxies: Vec<Upstream>,
    /// Extra destinations to proxy besides the tailnet ranges (`TSPROXY_ROUTES`).
    pub routes: Vec<Cidr>,
    /// `TSPROXY_ROUTES=all`: proxy every non-loopback destination.
    pub route_all: bool,
    /// Name suffixes (lower case, no leading or trailing dot) that are tailnet names.
    pub domains: Vec<String>,
    /// `TSPROXY_SHORT_NAMES`: unknown single-label names are MagicDNS short names.
    pub short_names: bool,
    /// `NO_PROXY` / `no_proxy` entries that exempt tailnet destinations.
    pub no_proxy: Vec<NoProxy>,
    /// `TSPROXY_LOG`.
    pub log: LogLevel,
    /// `TSPROXY_LOG_FILE`: log there instead of stderr (which belongs to the application).
    pub log_file: Option<String>,
    /// `TSPROXY_CONNECT_TIMEOUT`: the whole dial through all upstreams must finish within it.
    pub timeout: Duration,
    /// `TSPROXY_SOCKS_PIPELINE`: send the SOCKS5 greeting and request in one write (saves a
    /// round trip; off by default because some servers mishandle it).
    pub pipeline: bool,
    /// `TSPROXY_PROXY_OWNER`: who besides root and the process's own user may own the socket
    /// of a proxy on loopback (`any`: not checked); see [`crate::peer`].
    pub proxy_owner: crate::peer::Owners,
}

/// Where a setting came from, when it came from a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The file.
    pub path: String,
    /// 1-based line; 0 for the file as a whole (it cannot be read, it lists no proxy).
    pub line: usize,
}

/// A bad configuration value: what the launcher prints before exiting 2, and what the library
/// logs before failing closed. Safe to print: it never holds a password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The variable (or file key), named so the user knows what to fix; empty for a file line
    /// that names no key.
    pub var: String,
    /// Its value, with every password replaced by `***` for the proxy variables ([`redact`]).
    pub value: String,
    /// What is wrong; never quotes a proxy URL.
    pub why: String,
    /// The file and line, when the value came from a configuration file (`None`: environment).
    pub at: Option<Origin>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.at {
            Some(o) if o.line > 0 => write!(f, "{}:{}: ", o.path, o.line)?,
            Some(o) => write!(f, "{}: ", o.path)?,
            None => {}
        }
        if self.var.is_empty() {
            write!(f, "{}", self.why)
        } else if self.value.is_empty() && self.at.is_some() {
            write!(f, "{}: {}", self.var, self.why)
        } else {
            write!(f, "invalid {}={:?}: {}", self.var, self.value, self.why)
        }
    }
}

/// tailscaled's SOCKS5 proxy with `--socks5-server=localhost:1080`: zero configuration for the
/// usual setup.
pub const DEFAULT_PROXY: &str = "socks5://127.0.0.1:1080";
/// Like a kernel connect to an unresponsive host, give up after a while rather than hang.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the IP-level decision for a destination lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpClass {
    /// 100.64.0.0/10, fd7a:115c:a1e0::/48 or a TSPROXY_ROUTES entry.
    Tailnet,
    /// One of our name placeholders (see `names`).
    Placeholder,
    /// Not ours: libc handles it untouched.
    Direct,
    /// Listed in NO_PROXY.
    NoProxy,
}

impl Config {
    /// Read the process environment only (no files).
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|k| std::env::var(k).ok())
    }

    /// Parse from any lookup (tests pass a map); no files.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        Config::from_sources(get, &[], false)
    }

    /// The environment (`env`) over configuration files (`files`, highest precedence first, as
    /// [`crate::conffile::load`] returns them), per key. An empty value counts as unset. A
    /// `TSPROXY_PROXYCHAINS_CONF` is read here (raw syscalls); with `trusted_only` it must be
    /// owned by root and writable by nobody else.
    pub fn from_sources(env: impl Fn(&str) -> Option<String>, files: &[ConfFile], trusted_only: bool) -> Result<Config, ConfigError> {
        let get = |keys: &[&str]| -> Option<Val> {
            for k in keys {
                if let Some(v) = env(k).filter(|v| !v.trim().is_empty()) {
                    return Some(Val { var: k.to_string(), v, at: None, layer: 0 });
                }
            }
            for (i, f) in files.iter().enumerate() {
                for k in keys {
                    if let Some((v, o)) = f.get(k).filter(|(v, _)| !v.trim().is_empty()) {
                        return Some(Val { var: k.to_string(), v: v.to_string(), at: Some(o), layer: i + 1 });
                    }
                }
            }
            None
        };
        let nonempty = |k: &str| get(&[k]);
        // The proxy list: TSPROXY_PROXY or TSPROXY_PROXYCHAINS_CONF, whichever comes from the
        // higher source; both in the same source is ambiguous.
        let listed = match (nonempty("TSPROXY_PROXY"), nonempty("TSPROXY_PROXYCHAINS_CONF")) {
            (Some(p), Some(c)) if p.layer == c.layer => {
                return Err(ConfigError {
                    var: "TSPROXY_PROXYCHAINS_CONF".into(),
                    value: c.v.clone(),
                    why: "TSPROXY_PROXY is set in the same place; set only one of them".into(),
                    at: c.at,
                })
            }
            (Some(p), Some(c)) if c.layer < p.layer => Err(c),
            (Some(p), _) => Ok(Some(p)),
            (None, Some(c)) => Err(c),
            (None, None) => Ok(None),
        };
        let proxies = match listed {
            Err(c) => crate::conffile::load_proxychains(c.v.trim(), trusted_only)?,
            Ok(Some(p)) => parse_proxy_list(&p.v).map_err(|why| secret_err(&p, why))?,
            Ok(None) => match get(&["ALL_PROXY", "all_proxy"]) {
                Some(a) if has_supported_scheme(&a.v) => parse_proxy_list(&a.v).map_err(|why| secret_err(&a, why))?,
                _ => parse_proxy_list(DEFAULT_PROXY).expect("default proxy parses"),
            },
        };
        let (routes, route_all) = match nonempty("TSPROXY_ROUTES") {
            Some(v) => parse_routes(&v.v).map_err(|why| err(&v, why))?,
            None => (Vec::new(), false),
        };
        let mut domains = vec!["ts.net".to_string()];
        if let Some(v) = nonempty("TSPROXY_DOMAINS") {
            for d in v.v.split(',').map(str::trim).filter(|d| !d.is_empty()) {
                let d = d.trim_start_matches("*.").trim_matches('.').to_ascii_lowercase();
                // The same rule as for the names below it: a suffix no valid name can end with
                // would be a silent no-op.
                if !names::is_host_name(&d) {
                    return Err(err(&v, format!("{d:?} is not a domain suffix")));
                }
                domains.push(d);
            }
        }
        let short_names = match nonempty("TSPROXY_SHORT_NAMES") {
            Some(v) => parse_bool(&v.v).ok_or_else(|| err(&v, "expected on or off".into()))?,
            None => true,
        };
        let no_proxy = match get(&["NO_PROXY", "no_proxy"]) {
            Some(v) => parse_no_proxy(&v.v),
            None => Vec::new(),
        };
        let log = match nonempty("TSPROXY_LOG") {
            Some(v) => match v.v.trim().to_ascii_lowercase().as_str() {
                "off" | "0" | "none" | "quiet" => LogLevel::Off,
                "error" => LogLevel::Error,
                "info" => LogLevel::Info,
                "debug" => LogLevel::Debug,
                _ => return Err(err(&v, "expected off, error, info or debug".into())),
            },
            None => LogLevel::Error,
        };
        let log_file = nonempty("TSPROXY_LOG_FILE").map(|v| v.v);
        let timeout = match nonempty("TSPROXY_CONNECT_TIMEOUT") {
            Some(v) => parse_seconds(&v.v).ok_or_else(|| err(&v, "expected seconds between 0.001 and 3600".into()))?,
            None => DEFAULT_TIMEOUT,
        };
        let pipeline = match nonempty("TSPROXY_SOCKS_PIPELINE") {
            Some(v) => parse_bool(&v.v).ok_or_else(|| err(&v, "expected on or off".into()))?,
            None => false,
        };
        let proxy_owner = match nonempty("TSPROXY_PROXY_OWNER") {
            Some(v) => crate::peer::Owners::parse(&v.v).map_err(|why| err(&v, why))?,
            None => crate::peer::Owners::default(),
        };
        Ok(Config { proxies, routes, route_all, domains, short_names, no_proxy, log, log_file, timeout, pipeline, proxy_owner })
    }

    /// Classify a destination address. Cheap: a few compares.
    pub fn classify_ip(&self, ip: IpAddr) -> IpClass {
        let ip = cidr::unmap(ip);
        if crate::names::is_placeholder(&ip) {
            return IpClass::Placeholder;
        }
        let tailnet = cidr::TAILNET.iter().any(|c| c.contains(&ip))
            || self.routes.iter().any(|c| c.contains(&ip))
            || (self.route_all && !ip.is_loopback() && !ip.is_unspecified());
        if !tailnet {
            return IpClass::Direct;
        }
        if self.no_proxy.iter().any(|n| matches!(n, NoProxy::Net(c) if c.contains(&ip))) {
            return IpClass::NoProxy;
        }
        IpClass::Tailnet
    }

    /// Is `name` (not an address literal) a tailnet name that must never reach the system
    /// resolver? `known_locally` answers whether /etc/hosts (or our own hostname) knows it.
    ///
    /// Only an RFC 1123 host name can be one (`names::is_host_name`): anything with CR, LF, NUL,
    /// spaces or other bytes goes to libc untouched and never reaches the name table or a proxy
    /// request. Nor can anything glibc reads as an address (`names::is_address_literal`: every
    /// `inet_aton` form such as `127.1` or `0x7f000001`, IPv6 literals, `%scope` forms): libc
    /// answers those without a lookup, so they are not names to hide.
    pub fn is_tailnet_name(&self, name: &str, known_locally: impl Fn(&str) -> bool) -> bool {
        let n = normalize_name(name);
        if n.ends_with('.') || !names::is_host_name(&n) || names::is_address_literal(&n) || self.name_no_proxy(&n) {
            return false;
        }
        if self.domains.iter().any(|d| suffix_match(&n, d)) {
            return true;
        }
        self.short_names && !n.contains('.') && n != "localhost" && !known_locally(&n)
    }

    /// Is `name` at or under a tailnet domain (`ts.net`, `TSPROXY_DOMAINS`) that `NO_PROXY` does
    /// not exempt, whatever its other labels hold? Part of the rule for DNS questions on the wire
    /// (`route::tailnet_question`), where `_http._tcp.peer.tail1234.ts.net` (an SRV lookup) asks
    /// about a tailnet host although it is not a host name. Name lookups (`is_tailnet_name`)
    /// take only host names, because the name then goes into a proxy request.
    pub fn is_under_tailnet_domain(&self, name: &str) -> bool {
        let n = normalize_name(name);
        self.domains.iter().any(|d| suffix_match(&n, d)) && !self.name_no_proxy(&n)
    }

    /// Does `NO_PROXY` exempt name `n` (normalized) or a domain above it?
    pub fn name_no_proxy(&self, n: &str) -> bool {
        self.no_proxy.iter().any(|e| matches!(e, NoProxy::Domain(d) if suffix_match(n, d)))
    }
}

/// Lower case, one trailing dot removed.
pub fn normalize_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

fn suffix_match(n: &str, d: &str) -> bool {
    n == d || (n.len() > d.len() && n.ends_with(d) && n.as_bytes()[n.len() - d.len() - 1] == b'.')
}

/// A value found by [`Config::from_sources`]: which name, where (`layer` 0 is the environment,
/// then the files in order), and the text.
struct Val {
    var: String,
    v: String,
    at: Option<Origin>,
    layer: usize,
}

fn err(v: &Val, why: String) -> ConfigError {
    ConfigError { var: v.var.clone(), value: v.v.clone(), why, at: v.at.clone() }
}

/// For the proxy variables: the value as [`redact`] shows it. `why` never quotes the value.
fn secret_err(v: &Val, why: String) -> ConfigError {
    ConfigError { var: v.var.clone(), value: redact(&v.v), why, at: v.at.clone() }
}

/// A proxy list as it may be shown in an error or a log: every password replaced by `***`.
///
/// It must work on values that do *not* parse (that is when errors are shown), so it cannot
/// trust the list's own structure and hides generously. A URL starts only where a scheme token
/// and `://` follow the start of the value or a comma. In each URL, and in any text before the
/// first one, it hides everything between the user name (up to the first `:` or `,`) and the
/// *last* `@` (passwords may hold unencoded `,` `@` `:` `/`); a port that is not a port (in
/// `socks5://alice:Sekr1t`, the password sits where the port goes); text after a path, query
/// or fragment delimiter; the user name too in a URL whose scheme is not one we support (it may
/// be `user:` and a password starting with `//`); and every comma-separated piece after the first (in
/// `socks5://alice:pa,Sekr1t` the second "item" is the rest of a password). Kept: schemes, user
/// names, hosts, ports, separators. A password holding `,scheme://` cannot be told from the
/// start of another URL and is not covered.
pub fn redact(v: &str) -> String {
    let mut starts = Vec::new();
    for off in std::iter::once(0).chain(v.match_indices(',').map(|(i, _)| i + 1)) {
        let t = v[off..].trim_start();
        if t.find("://").is_some_and(|k| is_scheme_token(&t[..k])) {
            starts.push(v.len() - t.len());
        }
    }
    let mut out = String::with_capacity(v.len() + 8);
    redact_body(&v[..starts.first().copied().unwrap_or(v.len())], true, &mut out);
    for (j, &s) in starts.iter().enumerate() {
        let item = &v[s..starts.get(j + 1).copied().unwrap_or(v.len())];
        let k = item.find("://").expect("a URL start has ://") + 3;
        out.push_str(&item[..k]);
        // `user:` + a password starting with `//` looks like a scheme: show no user name then.
        redact_body(&item[k..], has_supported_scheme(item), &mut out);
    }
    out
}

fn is_scheme_token(t: &str) -> bool {
    t.len() <= 16 && t.bytes().next().is_some_and(|b| b.is_ascii_alphabetic()) && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b))
}

/// One URL's text after `scheme://` up to the next URL, or the text before the first URL.
fn redact_body(body: &str, show_user: bool, out: &mut String) {
    let rest = match body.rfind('@') {
        Some(at) => {
            let ui = &body[..at];
            let user_end = if show_user { ui.find([':', ',']).unwrap_or(ui.len()) } else { 0 };
            out.push_str(&ui[..user_end]);
            if user_end < ui.len() {
                out.push_str(":***");
            }
            out.push('@');
            &body[at + 1..]
        }
        None => body,
    };
    for (k, piece) in rest.split(',').enumerate() {
        if k > 0 {
            out.push(',');
        }
        if piece.trim().is_empty() {
            out.push_str(piece);
        } else if k > 0 {
            out.push_str("***");
        } else {
            redact_hostport(piece, out);
        }
    }
}

/// `host[:port][/]` shown (a port: 1 to 65535); anything else after the host masked, so an
/// all-digit password in the port's place is hidden too unless it would parse as a port.
fn redact_hostport(p: &str, out: &mut String) {
    let host_end = if p.starts_with('[') {
        match p.find(']') {
            Some(e) => e + 1,
            None => {
                out.push_str("***");
                return;
            }
        }
    } else {
        p.find([':', '/', '?', '#']).unwrap_or(p.len())
    };
    let (host, after) = p.split_at(host_end);
    out.push_str(host);
    let plain = |a: &str| a.is_empty() || a == "/";
    let numeric_port = after.strip_prefix(':').is_some_and(|r| {
        let d = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
        r[..d].parse::<u16>().is_ok_and(|p| p != 0) && plain(&r[d..])
    });
    if plain(after) || numeric_port {
        out.push_str(after);
    } else if let Some(c) = after.chars().next() {
        out.push(if "/?#".contains(c) { c } else { ':' });
        out.push_str("***");
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "on" | "true" | "yes" => Some(true),
        "0" | "off" | "false" | "no" => Some(false),
        _ => None,
    }
}

fn parse_seconds(v: &str) -> Option<Duration> {
    let v = v.trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let s: f64 = v.parse().ok()?;
    (0.001..=3600.0).contains(&s).then(|| Duration::from_secs_f64(s))
}

fn has_supported_scheme(v: &str) -> bool {
    let l = v.trim().to_ascii_lowercase();
    ["socks5://", "socks5h://", "http://"].iter().any(|s| l.starts_with(s))
}

///
/// The error names the failing item by position and never quotes the value (which may hold a
/// password): show it with [`redact`].
pub fn parse_proxy_list(v: &str) -> Result<Vec<Upstream>, String> {
    let items: Vec<&str> = v.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let many = items.len() > 1;
    let list = items
        .iter()
        .enumerate()
        .map(|(i, u)| parse_proxy_url(u).map_err(|e| if many { format!("proxy URL {}: {e}", i + 1) } else { e }))
        .collect::<Result<Vec<_>, _>>()?;
    if list.is_empty() {
        return Err("no proxy URL".into());
    }
    Ok(list)
}

/// `socks5://[user[:pass]@]host[:port][/]`, `socks5h://…`, `http://…`. Default ports: 1080 for
/// SOCKS5, 3128 for HTTP (tailscaled's conventions).
pub fn parse_proxy_url(u: &str) -> Result<Upstream, String> {
    let (scheme, rest) = u.split_once("://").ok_or("no scheme:// (socks5://, socks5h:// or http://)")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "socks5" | "socks5h" => Scheme::Socks5,
        "http" => Scheme::Http,
        s if !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b)) => {
            return Err(format!("unsupported scheme {s:?} (socks5, socks5h or http)"))
        }
        _ => return Err("unsupported scheme (socks5, socks5h or http)".into()),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) {
        return Err("a proxy URL has no path, query or fragment".into());
    }
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((ui, hp)) => (Some(ui), hp),
        None => (None, rest),
    };
    let (user, pass) = match userinfo {
        None => (None, None),
        Some(ui) => {
            let (u, p) = ui.split_once(':').unwrap_or((ui, ""));
            let u = percent_decode(u).ok_or("bad percent-encoding in user name")?;
            let p = percent_decode(p).ok_or("bad percent-encoding in password")?;
            if u.is_empty() || u.len() > 255 || p.len() > 255 {
                return Err("user name and password must be 1 to 255 bytes".into());
            }
            (Some(u), Some(p))
        }
    };
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        let (h, after) = h.split_once(']').ok_or("unclosed [ in host")?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("not an IPv6 address in [ ]".into());
        }
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(&b)) {
        return Err("bad host (letters, digits, '.', '-', '_' or an [IPv6] address)".into());
    }
    let port = match port {
        None => match scheme {
            Scheme::Socks5 => 1080,
            Scheme::Http => 3128,
        },
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            // Never quoted: in `socks5://alice:Sekr1t` (no `@host`) the password is the "port".
            _ => return Err("bad port (1 to 65535; user:password needs @host after it)".into()),
        },
    };
    Ok(Upstream { scheme, host: host.to_ascii_lowercase(), port, user, pass })
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn parse_routes(v: &str) -> Result<(Vec<Cidr>, bool), String> {
    let mut routes = Vec::new();
    let mut all = false;
    for r in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if r.eq_ignore_ascii_case("all") {
            all = true;
        } else {
            routes.push(Cidr::parse(r).ok_or_else(|| format!("{r:?} is not a CIDR, an address or `all`"))?);
        }
    }
    Ok((routes, all))
}

/// curl-style NO_PROXY: hosts, domains (`example.com`, `.example.com`, `*.example.com` all match
/// the domain and everything below it), addresses and CIDRs. `*` is ignored: it would switch
/// tsproxy off, and that is done by not preloading it.
pub fn parse_no_proxy(v: &str) -> Vec<NoProxy> {
    let mut out = Vec::new();
    for e in v.split(',').map(str::trim).filter(|s| !s.is_empty() && *s != "*") {
        if let Some(c) = Cidr::parse(e) {
            out.push(NoProxy::Net(c));
            continue;
        }
        let host = match e.rsplit_once(':') {
            Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => e,
        };
        if let Some(c) = Cidr::parse(host) {
            out.push(NoProxy::Net(c));
            continue;
        }
        let d = host.trim_start_matches("*.").trim_start_matches('.');
        let d = normalize_name(d);
        if !d.is_empty() {
            out.push(NoProxy::Domain(d));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.proxies.len(), 1);
        assert_eq!(c.proxies[0].scheme, Scheme::Socks5);
        assert_eq!((c.proxies[0].host.as_str(), c.proxies[0].port), ("127.0.0.1", 1080));
        assert_eq!(c.log, LogLevel::Error);
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert!(c.short_names && !c.pipeline && !c.route_all);
        assert_eq!(c.domains, vec!["ts.net"]);
    }

    #[test]
    fn all_proxy_fallback() {
        let c = cfg(&[("ALL_PROXY", "http://u:p%40ss@proxy.local:8080")]).unwrap();
        assert_eq!(c.proxies[0].scheme, Scheme::Http);
        assert_eq!(c.proxies[0].pass.as_deref(), Some("p@ss"));
        assert_eq!(c.proxies[0].port, 8080);
        // unsupported scheme in ALL_PROXY: ignored, default used
        let c = cfg(&[("all_proxy", "socks4://1.2.3.4:9")]).unwrap();
        assert_eq!(c.proxies[0].port, 1080);
        // TSPROXY_PROXY wins
        let c = cfg(&[("ALL_PROXY", "http://a:1"), ("TSPROXY_PROXY", "socks5h://[::1]:9050")]).unwrap();
        assert_eq!((c.proxies[0].host.as_str(), c.proxies[0].port), ("::1", 9050));
        // a bad ALL_PROXY with a supported scheme is an error naming it
        assert_eq!(cfg(&[("ALL_PROXY", "socks5://h:99999")]).unwrap_err().var, "ALL_PROXY");
    }

    #[test]
    fn proxy_list_and_urls() {
        let c = cfg(&[("TSPROXY_PROXY", "socks5://127.0.0.1:1081, http://127.0.0.1 ,socks5://alice:s3cret@localhost/")]).unwrap();
        assert_eq!(c.proxies.len(), 3);
        assert_eq!(c.proxies[1].port, 3128);
        assert_eq!(c.proxies[2].user.as_deref(), Some("alice"));
        assert_eq!(c.proxies[2].pass.as_deref(), Some("s3cret"));
        assert_eq!(c.proxies[2].to_string(), "socks5://alice:***@localhost:1080");
        assert!(!format!("{:?}", c.proxies).contains("s3cret"));
        let u = parse_proxy_url("socks5://bob@h").unwrap();
        assert_eq!((u.user.as_deref(), u.pass.as_deref()), (Some("bob"), Some("")));
    }

    #[test]
    fn every_bad_value_names_its_variable() {
        let cases: &[(&str, &str)] = &[
            ("TSPROXY_PROXY", "127.0.0.1:1080"),
            ("TSPROXY_PROXY", "socks4://127.0.0.1"),
            ("TSPROXY_PROXY", "https://127.0.0.1"),
            ("TSPROXY_PROXY", "socks5://127.0.0.1:0"),
            ("TSPROXY_PROXY", "socks5://127.0.0.1:65536"),
            ("TSPROXY_PROXY", "socks5://127.0.0.1:x"),
            ("TSPROXY_PROXY", "socks5://"),
            ("TSPROXY_PROXY", "socks5://[::1"),
            ("TSPROXY_PROXY", "socks5://[nothost]:1"),
            ("TSPROXY_PROXY", "socks5://h/path"),
            ("TSPROXY_PROXY", "socks5://:pw@h"),
            ("TSPROXY_PROXY", "socks5://u:%zz@h"),
            ("TSPROXY_PROXY", "socks5://ho st"),
            ("TSPROXY_PROXY", ",,"),
            ("TSPROXY_ROUTES", "10.0.0.0/33"),
            ("TSPROXY_ROUTES", "everything"),
            ("TSPROXY_DOMAINS", "bad domain"),
            ("TSPROXY_DOMAINS", "."),
            ("TSPROXY_DOMAINS", "_srv.corp"),
            ("TSPROXY_DOMAINS", "a..b"),
            ("TSPROXY_SHORT_NAMES", "maybe"),
            ("TSPROXY_LOG", "verbose"),
            ("TSPROXY_CONNECT_TIMEOUT", "0"),
            ("TSPROXY_CONNECT_TIMEOUT", "-1"),
            ("TSPROXY_CONNECT_TIMEOUT", "5s"),
            ("TSPROXY_CONNECT_TIMEOUT", "99999"),
            ("TSPROXY_SOCKS_PIPELINE", "2"),
        ];
        for (k, v) in cases {
            let e = cfg(&[(k, v)]).expect_err(&format!("{k}={v} must be rejected"));
            assert_eq!(e.var, *k, "{k}={v}");
            assert!(e.to_string().contains(k));
        }
    }

    #[test]
    fn password_never_in_error() {
        let e = cfg(&[("TSPROXY_PROXY", "socks5://alice:hunter2@h:bad")]).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.to_string().contains("alice:***@"), "{e}");
        let cases: &[(&str, &str)] = &[
            ("socks5://alice:pa,Sekr1t@host:1081", "socks5://alice:***@host:1081"),
            ("alice:Sekr1t@host:1081", "alice:***@host:1081"),
            ("socks5://alice:Sekr1t", "socks5://alice:***"),
            ("socks5://alice:Sekr1t/", "socks5://alice:***"),
            ("socks5://alice:pa,Sekr1t", "socks5://alice:***,***"),
            ("socks5://alice:%zzSekr1t@h", "socks5://alice:***@h"),
            ("socks5://alice:Sekr1t%4@h", "socks5://alice:***@h"),
            ("socks5://alice:Se@kr1t@h:0", "socks5://alice:***@h:***"),
            ("socks5://alice:Sek/r1t@h", "socks5://alice:***@h"),
            ("socks5://alice:Sekr1t@h/path", "socks5://alice:***@h/***"),
            ("http://h:1,socks5://bob:Sekr1t@[::1]:9,socks4://x", "http://h:1,socks5://bob:***@[::1]:9,socks4://x"),
            ("socks5://h,alice:Sekr1t@h2", "socks5://h:***@h2"),
            ("alice:Sekr1t@h://x", "alice:***@h:***"),
            ("socks5://a://Sekr1t@h:1080", "socks5://a:***@h:1080"),
            ("alice://Sekr1t@h:1080", "alice://:***@h:1080"),
            ("socks 5://alice:pa,Sekr1t", "socks 5:***,***"),
            ("alice:1080,Sekr1t", "alice:1080,***"),
            ("socks5://alice:99999999", "socks5://alice:***"),
            ("socks5://alice:Sekr1t@[::1", "socks5://alice:***@***"),
        ];
        assert_eq!(redact("socks5://alice:Sekr1t@h:1080, ,"), "socks5://alice:***@h:1080, ,");
        for (v, shown) in cases {
            assert_eq!(redact(v), *shown, "{v}");
            let e = cfg(&[("TSPROXY_PROXY", v)]).expect_err(v);
            let all = format!("{e} {e:?} {}", parse_proxy_list(v).unwrap_err());
            assert!(!all.contains("Sekr1t") && !all.contains("kr1t") && !all.contains("Sek"), "{v}: {all}");
            let e = cfg(&[("ALL_PROXY", &format!("socks5://x:1,{v}"))]).expect_err(v);
            assert!(!e.to_string().contains("kr1t"), "{v}: {e}");
        }
        // Values of other variables hold no secrets and are shown as they are.
        assert_eq!(cfg(&[("TSPROXY_ROUTES", "fd7a::/200")]).unwrap_err().value, "fd7a::/200");
        // Nor do Display/Debug of a parsed configuration show a password.
        let c = cfg(&[("TSPROXY_PROXY", "socks5://alice:Sekr1t@h,http://bob:Pa55w0rd@h2")]).unwrap();
        let all = format!("{c:?} {} {} {:?}", c.proxies[0], c.proxies[1], c.proxies);
        assert!(!all.contains("Sekr1t") && !all.contains("Pa55w0rd"), "{all}");
        assert!(all.contains("socks5://alice:***@h:1080") && all.contains("http://bob:***@h2:3128"), "{all}");
    }

    #[test]
    fn precedence_env_user_system() {
        use crate::conffile::parse;
        let user = parse("/u", b"TSPROXY_LOG=info\nTSPROXY_ROUTES=10.1.0.0/16\n", 1000, 0o600).unwrap();
        let sys = parse("/s", b"TSPROXY_LOG=debug\nTSPROXY_ROUTES=10.2.0.0/16\nTSPROXY_DOMAINS=corp\nNO_PROXY=skip\n", 0, 0o644).unwrap();
        let env = |pairs: &'static [(&'static str, &'static str)]| move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string());
        let files = [user, sys];
        let c = Config::from_sources(env(&[]), &files, false).unwrap();
        assert_eq!(c.log, LogLevel::Info, "user over system");
        assert_eq!(c.routes, vec![Cidr::parse("10.1.0.0/16").unwrap()]);
        assert_eq!(c.domains, vec!["ts.net", "corp"], "system alone");
        assert_eq!(c.no_proxy, vec![NoProxy::Domain("skip".into())]);
        let c = Config::from_sources(env(&[("TSPROXY_LOG", "off"), ("no_proxy", "other"), ("TSPROXY_ROUTES", " ")]), &files, false).unwrap();
        assert_eq!(c.log, LogLevel::Off, "environment over both");
        assert_eq!(c.no_proxy, vec![NoProxy::Domain("other".into())], "env no_proxy over the file's NO_PROXY");
        assert_eq!(c.routes, vec![Cidr::parse("10.1.0.0/16").unwrap()], "an empty variable is unset");
        // Without files: defaults (control).
        assert_eq!(Config::from_sources(env(&[]), &[], false).unwrap().log, LogLevel::Error);
        // A bad value from a file names the file, line and key.
        let bad = parse("/etc/tsproxy.conf", b"# x\nTSPROXY_CONNECT_TIMEOUT=5s\n", 0, 0o644).unwrap();
        let e = Config::from_sources(env(&[]), std::slice::from_ref(&bad), false).unwrap_err();
        assert_eq!(e.to_string(), "/etc/tsproxy.conf:2: invalid TSPROXY_CONNECT_TIMEOUT=\"5s\": expected seconds between 0.001 and 3600");
        // ... unless the environment overrides it.
        assert!(Config::from_sources(env(&[("TSPROXY_CONNECT_TIMEOUT", "5")]), &[bad], false).is_ok());
        let pw = parse("/u", b"TSPROXY_PROXY=socks5://alice:Sekr1t@h:bad\n", 1000, 0o600).unwrap();
        let e = Config::from_sources(env(&[]), &[pw], false).unwrap_err();
        assert!(!e.to_string().contains("Sekr1t") && e.to_string().starts_with("/u:1: invalid TSPROXY_PROXY="), "{e}");
    }

    #[test]
    fn proxychains_conf_key() {
        use crate::conffile::parse;
        let d = std::env::temp_dir().join(format!("tsp-pc-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let pc = d.join("proxychains4.conf");
        std::fs::write(&pc, "[ProxyList]\nhttp 127.0.0.1 8888\n").unwrap();
        let pcs = pc.to_str().unwrap().to_string();
        let sys = parse("/s", format!("TSPROXY_PROXYCHAINS_CONF={pcs}\n").as_bytes(), 0, 0o644).unwrap();
        let c = Config::from_sources(|_| None, std::slice::from_ref(&sys), false).unwrap();
        assert_eq!((c.proxies[0].scheme, c.proxies[0].port), (Scheme::Http, 8888));
        // TSPROXY_PROXY from a higher source wins; from the same source it is ambiguous.
        let c = Config::from_sources(|k| (k == "TSPROXY_PROXY").then(|| "socks5://h:7".to_string()), std::slice::from_ref(&sys), false).unwrap();
        assert_eq!(c.proxies[0].port, 7);
        let both = parse("/s", format!("TSPROXY_PROXY=socks5://h:7\nTSPROXY_PROXYCHAINS_CONF={pcs}\n").as_bytes(), 0, 0o644).unwrap();
        let e = Config::from_sources(|_| None, &[both], false).unwrap_err();
        assert!(e.to_string().contains("set only one") && e.to_string().starts_with("/s:2:"), "{e}");
        // The environment naming a file beats a file's TSPROXY_PROXY.
        let sp = parse("/s", b"TSPROXY_PROXY=socks5://h:7\n", 0, 0o644).unwrap();
        let c = Config::from_sources(|k| (k == "TSPROXY_PROXYCHAINS_CONF").then(|| pcs.clone()), &[sp], false).unwrap();
        assert_eq!(c.proxies[0].port, 8888);
        std::fs::write(&pc, "[ProxyList]\nsocks4 127.0.0.1 1080\n").unwrap();
        let e = Config::from_sources(|_| None, &[sys], false).unwrap_err();
        assert!(e.to_string().starts_with(&format!("{pcs}:2:")) && e.to_string().contains("socks4"), "{e}");
        let e = Config::from_lookup(|k| (k == "TSPROXY_PROXYCHAINS_CONF").then(|| "/nonexistent/pc.conf".to_string())).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/pc.conf") && e.to_string().contains("no such file"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn classify_ips() {
        let c = cfg(&[("TSPROXY_ROUTES", "10.9.0.0/16"), ("NO_PROXY", "100.100.1.0/24,localhost")]).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(c.classify_ip(ip("100.64.0.1")), IpClass::Tailnet);
        assert_eq!(c.classify_ip(ip("::ffff:100.64.0.1")), IpClass::Tailnet);
        assert_eq!(c.classify_ip(ip("fd7a:115c:a1e0::5")), IpClass::Tailnet);
        assert_eq!(c.classify_ip(ip("10.9.3.4")), IpClass::Tailnet);
        assert_eq!(c.classify_ip(ip("100.100.1.7")), IpClass::NoProxy);
        assert_eq!(c.classify_ip(ip("10.8.3.4")), IpClass::Direct);
        assert_eq!(c.classify_ip(ip("127.0.0.1")), IpClass::Direct);
        assert_eq!(c.classify_ip(ip("8.8.8.8")), IpClass::Direct);
        assert_eq!(c.classify_ip(ip("100.128.0.1")), IpClass::Direct);
        let all = cfg(&[("TSPROXY_ROUTES", "all")]).unwrap();
        assert_eq!(all.classify_ip(ip("8.8.8.8")), IpClass::Tailnet);
        assert_eq!(all.classify_ip(ip("127.0.0.1")), IpClass::Direct);
        assert_eq!(all.classify_ip(ip("::1")), IpClass::Direct);
    }

    #[test]
    fn tailnet_names() {
        let c = cfg(&[("TSPROXY_DOMAINS", ".corp.example,*.lab"), ("NO_PROXY", ".skip.ts.net,direct")]).unwrap();
        let hosts = |n: &str| n == "known";
        assert!(c.is_tailnet_name("peer", hosts));
        assert!(c.is_tailnet_name("PEER.", hosts));
        assert!(c.is_tailnet_name("peer.tail1234.ts.net", hosts));
        assert!(c.is_tailnet_name("peer.tail1234.ts.net.", hosts));
        assert!(c.is_tailnet_name("db.corp.example", hosts));
        assert!(c.is_tailnet_name("x.lab", hosts));
        assert!(!c.is_tailnet_name("known", hosts));
        assert!(!c.is_tailnet_name("localhost", hosts));
        assert!(!c.is_tailnet_name("direct", hosts));
        assert!(!c.is_tailnet_name("a.skip.ts.net", hosts));
        assert!(!c.is_tailnet_name("example.com", hosts));
        assert!(!c.is_tailnet_name("nots.net", hosts));
        assert!(!c.is_tailnet_name("100.64.0.1", hosts));
        assert!(!c.is_tailnet_name("fd7a:115c:a1e0::1", hosts));
        assert!(!c.is_tailnet_name("", hosts));
        // Not host names: never tailnet names, whatever the suffix.
        for bad in [
            "peer\r\nHost: x",
            "peer\n",
            "pe\0er",
            "peer x",
            " peer",
            "peer.ts.net\r",
            "a_b.ts.net",
            "-x.ts.net",
            "a..ts.net",
            "pe@r",
            "p/eer",
            "péer",
            "peer%eth0",
        ] {
            assert!(!c.is_tailnet_name(bad, hosts), "{bad:?}");
        }
        assert!(!c.is_tailnet_name(&format!("{}.ts.net", "a".repeat(64)), hosts));
        assert!(!c.is_tailnet_name("peer..", hosts) && !c.is_tailnet_name("peer.ts.net..", hosts));
        assert!(!c.is_tailnet_name(&format!("{}.ts.net", "abcdefg.".repeat(31)), hosts), "over 253");
        assert!(c.is_tailnet_name(&format!("{}ts.net", "abcdefg.".repeat(30)), hosts));
        // What glibc's inet_aton reads as an address is an address, not a (short) name.
        for num in
            ["0", "2130706433", "0x7f000001", "0X7F000001", "127.1", "0177.0.0.1", "1.2.3", "1.2", "00", "0x0", "::1", "fe80::1%eth0", "fe80::1%1", "127.1."]
        {
            assert!(!c.is_tailnet_name(num, hosts), "{num:?}");
        }
        // Look-alikes inet_aton refuses are ordinary short names.
        for name in ["0x", "08", "1e5", "0xg"] {
            assert!(c.is_tailnet_name(name, hosts), "{name:?}");
        }
        let off = cfg(&[("TSPROXY_SHORT_NAMES", "off")]).unwrap();
        assert!(!off.is_tailnet_name("peer", hosts));
        assert!(off.is_tailnet_name("peer.x.ts.net", hosts));
    }

    #[test]
    fn no_proxy_forms() {
        let n = parse_no_proxy("*, .a.com, *.b.com, c.com:443, 10.0.0.0/8, 100.64.0.9, [::1]:80, fd7a:115c:a1e0::1");
        assert_eq!(
            n,
            vec![
                NoProxy::Domain("a.com".into()),
                NoProxy::Domain("b.com".into()),
                NoProxy::Domain("c.com".into()),
                NoProxy::Net(Cidr::parse("10.0.0.0/8").unwrap()),
                NoProxy::Net(Cidr::parse("100.64.0.9").unwrap()),
                NoProxy::Net(Cidr::parse("::1").unwrap()),
                NoProxy::Net(Cidr::parse("fd7a:115c:a1e0::1").unwrap()),
            ]
        );
    }
}

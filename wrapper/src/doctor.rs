//! `tsproxy doctor [--json] [--socket PATH] [HOST:PORT]`: why a tailnet connection does not work.
//! Checks the configuration, each upstream (a real SOCKS5 greeting and authentication, or an
//! HTTP CONNECT), tailscaled through its LocalAPI (`GET /localapi/v0/status` over its unix
//! socket; the JSON is tailscale's `ipnstate.Status`), whether the library would be loaded, and
//! whether the supervisor can run; with HOST:PORT, how that destination would be routed, and a
//! try. Exit 1 when something needed (`Fail`) is broken; warnings do not count.
use crate::conf;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;
use tsproxy_core::config::{Config, IpClass, Scheme, Upstream};
use tsproxy_core::{http, socks5, Target};

const DEFAULT_SOCKET: &str = "/var/run/tailscale/tailscaled.sock";
const TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Ok,
    Warn,
    Fail,
    Info,
}

struct Check {
    name: &'static str,
    status: Status,
    detail: String,
    remedy: Option<String>,
}

fn check(name: &'static str, status: Status, detail: impl Into<String>, remedy: Option<&str>) -> Check {
    Check { name, status, detail: detail.into(), remedy: remedy.map(str::to_string) }
}

/// Ask an upstream the first question of its protocol: SOCKS5 greeting (+ RFC 1929 when we have
/// credentials), or an HTTP CONNECT to `probe`. Ok(what it said) or Err(why not).
fn probe_upstream(up: &Upstream, target: &Target) -> Result<(TcpStream, String), String> {
    let addrs: Vec<_> = (up.host.as_str(), up.port).to_socket_addrs().map_err(|e| format!("cannot resolve {}: {e}", up.host))?.collect();
    let mut last = String::from("no address");
    for a in addrs {
        let mut s = match TcpStream::connect_timeout(&a, TIMEOUT) {
            Ok(s) => s,
            Err(e) => {
                last = format!("{a}: {e}");
                continue;
            }
        };
        let _ = s.set_read_timeout(Some(TIMEOUT));
        let _ = s.set_write_timeout(Some(TIMEOUT));
        return match up.scheme {
            Scheme::Socks5 => {
                let auth = up.user.as_deref().map(|u| (u, up.pass.as_deref().unwrap_or("")));
                s.write_all(socks5::greeting(auth.is_some())).map_err(|e| e.to_string())?;
                let mut m = [0u8; 2];
                s.read_exact(&mut m).map_err(|e| format!("no SOCKS5 answer to the greeting ({e}): is it a SOCKS5 proxy?"))?;
                match socks5::parse_method(m, auth.is_some()) {
                    Ok(2) => {
                        let (u, p) = auth.unwrap_or(("", ""));
                        s.write_all(&socks5::auth_request(u, p)).map_err(|e| e.to_string())?;
                        let mut r = [0u8; 2];
                        s.read_exact(&mut r).map_err(|e| format!("no answer to authentication ({e})"))?;
                        socks5::parse_auth_reply(r).map_err(|_| "authentication failed: wrong user name or password".to_string())?;
                        Ok((s, "SOCKS5, authenticated".into()))
                    }
                    Ok(_) => Ok((s, "SOCKS5, no authentication".into())),
                    Err(socks5::Error::Method(0xff)) => Err(if auth.is_some() {
                        "SOCKS5, but it accepts none of our methods"
                    } else {
                        "SOCKS5, but it requires authentication (user:pass@ in the URL)"
                    }
                    .into()),
                    Err(e) => Err(format!("not a SOCKS5 answer ({e:?})")),
                }
            }
            Scheme::Http => {
                let auth = up.user.as_deref().map(|u| (u, up.pass.as_deref().unwrap_or("")));
                let req = http::connect_request(target, auth).map_err(|e| format!("{e:?}"))?;
                s.write_all(&req).map_err(|e| e.to_string())?;
                let mut head = Vec::new();
                let mut b = [0u8; 512];
                while http::head_end(&head).is_none() && head.len() < 16384 {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                match http::status(&head) {
                    Some(407) => Err("HTTP proxy: authentication failed or required (407)".into()),
                    Some(c) => Ok((s, format!("HTTP CONNECT, status {c}"))),
                    None => Err("no HTTP answer to CONNECT: is it an HTTP proxy?".into()),
                }
            }
        };
    }
    Err(last)
}

/// A SOCKS5 CONNECT on an authenticated stream.
fn socks_connect(s: &mut TcpStream, t: &Target) -> Result<(), String> {
    let req = socks5::connect_request(t).map_err(|e| format!("{e:?}"))?;
    s.write_all(&req).map_err(|e| e.to_string())?;
    // Exactly the reply, as long as reply_len says once its first five bytes are in.
    let mut r = vec![0u8; 5];
    s.read_exact(&mut r).map_err(|e| format!("no reply ({e})"))?;
    let need = socks5::reply_len(&r).map_err(|e| format!("not a SOCKS5 reply ({e:?})"))?;
    r.resize(need.max(5), 0);
    s.read_exact(&mut r[5..]).map_err(|e| format!("short reply ({e})"))?;
    match socks5::parse_reply(&r) {
        Ok(()) => Ok(()),
        Err(socks5::Error::Rep(n)) => Err(format!("the proxy answered REP {n} ({})", rep_text(n))),
        Err(e) => Err(format!("{e:?}")),
    }
}

fn rep_text(n: u8) -> &'static str {
    match n {
        1 => "general failure",
        2 => "not allowed",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused",
        6 => "TTL expired",
        _ => "other",
    }
}

/// tailscaled's LocalAPI status, as JSON text.
fn localapi_status(sock: &str) -> Result<String, String> {
    let mut s = UnixStream::connect(sock).map_err(|e| format!("{sock}: {e}"))?;
    let _ = s.set_read_timeout(Some(TIMEOUT));
    s.write_all(b"GET /localapi/v0/status HTTP/1.0\r\nHost: local-tailscaled.sock\r\n\r\n").map_err(|e| e.to_string())?;
    let mut all = Vec::new();
    s.take(8 << 20).read_to_end(&mut all).map_err(|e| format!("reading the answer: {e}"))?;
    let end = http::head_end(&all).ok_or("not an HTTP answer")?;
    match http::status(&all[..end]) {
        Some(200) => Ok(String::from_utf8_lossy(&all[end..]).into_owned()),
        Some(c) => Err(format!("LocalAPI answered HTTP {c}")),
        None => Err("not an HTTP answer".into()),
    }
}

fn tailscaled_checks(sock: &str, out: &mut Vec<Check>) {
    let body = match localapi_status(sock) {
        Ok(b) => b,
        Err(e) => {
            out.push(check(
                "tailscaled",
                Status::Fail,
                format!("no LocalAPI: {e}"),
                Some("start tailscaled (systemctl start tailscaled, or tailscaled --tun=userspace-networking --socks5-server=localhost:1080), or give its socket with --socket PATH"),
            ));
            return;
        }
    };
    let Some(v) = crate::json::parse(&body) else {
        out.push(check("tailscaled", Status::Fail, "LocalAPI status is not JSON", Some("check that --socket names tailscaled's socket")));
        return;
    };
    let state = v.get("BackendState").and_then(|s| s.as_str()).unwrap_or("").to_string();
    let remedy = match state.as_str() {
        "Running" => None,
        "NeedsLogin" | "NoState" => Some("log in: tailscale up (or tailscale login)"),
        "Stopped" => Some("tailscale up"),
        "NeedsMachineAuth" => Some("approve this machine in the admin console"),
        _ => Some("see tailscale status"),
    };
    out.push(check("tailscaled", if remedy.is_none() { Status::Ok } else { Status::Fail }, format!("BackendState {state}"), remedy));
    let suffix = v
        .get("CurrentTailnet")
        .and_then(|t| t.get("MagicDNSSuffix"))
        .and_then(|s| s.as_str())
        .or_else(|| v.get("MagicDNSSuffix").and_then(|s| s.as_str()))
        .unwrap_or("");
    if !suffix.is_empty() {
        out.push(check("tailnet", Status::Info, format!("MagicDNS suffix {suffix}"), None));
    }
    if let Some(me) = v.get("Self") {
        let ips: Vec<&str> = me.get("TailscaleIPs").and_then(|a| a.as_array()).map(|a| a.iter().filter_map(|x| x.as_str()).collect()).unwrap_or_default();
        let name = me.get("DNSName").and_then(|s| s.as_str()).unwrap_or("");
        out.push(check("this node", Status::Info, format!("{name} {}", ips.join(" ")).trim().to_string(), None));
    }
    if let Some(peers) = v.get("Peer").and_then(|p| p.as_object()) {
        let online = peers.iter().filter(|(_, p)| p.get("Online").and_then(|o| o.as_bool()) == Some(true)).count();
        out.push(check("peers", Status::Info, format!("{online} of {} online", peers.len()), None));
    }
}

fn supervisor_checks(out: &mut Vec<Check>) {
    let (ma, mi) = crate::supervisor::kernel_version().unwrap_or((0, 0));
    let new_enough = (ma, mi) >= crate::supervisor::MIN_KERNEL;
    let notif = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail").map(|s| s.split_whitespace().any(|a| a == "user_notif"));
    let ptrace = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").map(|s| s.trim().to_string()).unwrap_or_else(|_| "none (no Yama)".into());
    let ok = new_enough && notif.as_ref().is_ok_and(|b| *b);
    out.push(check(
        "supervisor",
        if ok { Status::Ok } else { Status::Warn },
        format!(
            "kernel {ma}.{mi} (the supervisor needs 5.8), seccomp user_notif {}, ptrace_scope {ptrace}",
            match notif {
                Ok(true) => "available",
                Ok(false) => "missing",
                Err(_) => "unknown",
            }
        ),
        (!ok).then_some("static binaries (Go, musl) are not proxied here: a kernel >= 5.8 with seccomp is needed; dynamically linked programs still are"),
    ));
    // The supervisor reads a program's memory and takes its socket: ptrace rights. Under Yama
    // 1 an unprivileged supervisor has them over the command alone (PR_SET_PTRACER), under 2
    // and 3 over nothing; the calls it may not judge are refused (notify.rs, `denied`).
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let scope = ptrace.parse::<u32>().unwrap_or(0);
    if ok && !root && scope >= 1 {
        let who = if scope == 1 { "static programs started by the command's children" } else { "static programs" };
        out.push(check(
            "ptrace scope",
            Status::Warn,
            format!("Yama ptrace_scope {scope}: the supervisor may not read {who}; their connects are refused (EPERM), never let through"),
            Some(if scope == 1 {
                "run static programs as the command itself (tsproxy PROGRAM), or set kernel.yama.ptrace_scope=0; dynamically linked programs are not affected"
            } else {
                "set kernel.yama.ptrace_scope to 0 or 1; dynamically linked programs are not affected"
            }),
        ));
    }
}

fn library_checks(lib: Option<&std::path::Path>, out: &mut Vec<Check>) {
    let Some(lib) = lib else {
        out.push(check("library", Status::Fail, "libtsproxy.so not found", Some("install the package, or set TSPROXY_LIB")));
        return;
    };
    let loads = std::process::Command::new("/bin/true").env("LD_PRELOAD", lib).stderr(std::process::Stdio::piped()).output();
    match loads {
        Ok(o) if o.status.success() && o.stderr.is_empty() => out.push(check("library", Status::Ok, format!("{} loads", lib.display()), None)),
        Ok(o) => out.push(check(
            "library",
            Status::Fail,
            format!("{} does not load: {}", lib.display(), String::from_utf8_lossy(&o.stderr).trim()),
            Some("reinstall tsproxy (wrong architecture or a damaged file)"),
        )),
        Err(e) => out.push(check("library", Status::Warn, format!("cannot run /bin/true: {e}"), None)),
    }
    let in_env = std::env::var("LD_PRELOAD").is_ok_and(|v| v.contains("libtsproxy.so"));
    let in_file = std::fs::read_to_string(crate::system::PRELOAD_FILE).is_ok_and(|v| v.contains("libtsproxy.so"));
    let how = match (in_env, in_file) {
        (_, true) => "every process (it is in /etc/ld.so.preload)",
        (true, false) => "this shell's programs (LD_PRELOAD)",
        _ => "only programs started with tsproxy (not in LD_PRELOAD or /etc/ld.so.preload; eval \"$(tsproxy env)\" or tsproxy install --system for more)",
    };
    out.push(check("loaded for", Status::Info, how, None));
}

/// How `dest` would be routed, then a try through the first upstream that answers.
fn sample(cfg: &Config, dest: &str, working: Option<&Upstream>, out: &mut Vec<Check>) {
    let Some((host, port)) = dest.rsplit_once(':').and_then(|(h, p)| Some((h.trim_start_matches('[').trim_end_matches(']'), p.parse::<u16>().ok()?))) else {
        out.push(check("sample", Status::Fail, format!("{dest:?} is not HOST:PORT"), Some("e.g. tsproxy doctor peer-1:22")));
        return;
    };
    let target = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            let t = Target::Ip(std::net::SocketAddr::new(ip, port));
            match cfg.classify_ip(ip) {
                IpClass::Tailnet | IpClass::Placeholder => t,
                IpClass::NoProxy => {
                    out.push(check("sample", Status::Info, format!("{dest}: tailnet address listed in NO_PROXY: connected directly"), None));
                    return;
                }
                IpClass::Direct => {
                    out.push(check("sample", Status::Info, format!("{dest}: not a tailnet address: connected directly, untouched"), None));
                    return;
                }
            }
        }
        Err(_) => {
            let local = tsproxy_core::hosts::local_names();
            if cfg.is_tailnet_name(host, |n| local.contains(n)) {
                Target::Name(tsproxy_core::config::normalize_name(host), port)
            } else {
                out.push(check("sample", Status::Info, format!("{dest}: not a tailnet name: resolved by the system and connected directly"), None));
                return;
            }
        }
    };
    let Some(up) = working else {
        out.push(check("sample", Status::Fail, format!("{dest}: would go through the proxy, but no upstream answers"), Some("fix the upstream above")));
        return;
    };
    let r = match probe_upstream(up, &target) {
        Ok((mut s, what)) => match up.scheme {
            Scheme::Socks5 => socks_connect(&mut s, &target).map(|_| "connected".to_string()),
            Scheme::Http if what.ends_with("status 200") => Ok("connected".into()),
            Scheme::Http => Err(format!("the proxy answered {what}")),
        },
        Err(e) => Err(e),
    };
    match r {
        Ok(_) => out.push(check("sample", Status::Ok, format!("{dest}: via {up}: connected"), None)),
        Err(e) => out.push(check(
            "sample",
            Status::Fail,
            format!("{dest}: via {up}: {e}"),
            Some("check the name or address and port, that the peer is online (tailscale status), and the tailnet's ACLs"),
        )),
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

pub fn main(args: impl Iterator<Item = std::ffi::OsString>, find_lib: impl Fn(&[tsproxy_core::conffile::ConfFile]) -> Option<std::path::PathBuf>) -> ! {
    let (mut json, mut sock, mut dest) = (false, DEFAULT_SOCKET.to_string(), None);
    let mut args = args.map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => json = true,
            "--socket" => sock = args.next().unwrap_or_else(|| crate::die(2, "doctor: --socket needs a path")),
            _ if a.starts_with("--socket=") => sock = a["--socket=".len()..].to_string(),
            "-h" | "--help" => {
                println!("usage: tsproxy doctor [--json] [--socket PATH] [HOST:PORT]");
                std::process::exit(0)
            }
            _ if a.starts_with('-') => crate::die(2, format!("doctor: unknown option {a}")),
            _ if dest.is_none() => dest = Some(a),
            _ => crate::die(2, "doctor: one HOST:PORT at most"),
        }
    }
    let mut out = Vec::new();
    let loaded = conf::load();
    let files = match &loaded {
        Ok(l) => {
            let names: Vec<&str> = l.files.iter().map(|f| f.path.as_str()).collect();
            out.push(check(
                "configuration",
                Status::Ok,
                if names.is_empty() { "environment and defaults (no file)".into() } else { format!("valid ({})", names.join(", ")) },
                None,
            ));
            for w in conf::password_warnings(&l.files) {
                out.push(check("configuration", Status::Warn, w, Some("chmod 600 the file (or 640 with a dedicated group)")));
            }
            l.files.clone()
        }
        Err(e) => {
            out.push(check(
                "configuration",
                Status::Fail,
                e.to_string(),
                Some("fix that value (tsproxy.conf(5)); until then tailnet destinations are refused"),
            ));
            Vec::new()
        }
    };
    let mut working = None;
    if let Ok(l) = &loaded {
        let probe_target = Target::Ip("100.100.100.100:80".parse().expect("address"));
        for up in &l.cfg.proxies {
            match probe_upstream(up, &probe_target) {
                Ok((_, what)) => {
                    let in_use = working.is_none();
                    out.push(check("upstream", Status::Ok, format!("{up}: answers ({what}){}", if in_use { "; in use" } else { "; standby" }), None));
                    if in_use {
                        working = Some(up.clone());
                    }
                }
                Err(e) => out.push(check(
                    "upstream",
                    if working.is_some() { Status::Warn } else { Status::Fail },
                    format!("{up}: {e}"),
                    Some("start tailscaled's proxy (tailscaled --socks5-server=localhost:1080 or --outbound-http-proxy-listen=localhost:3128), or fix TSPROXY_PROXY"),
                )),
            }
        }
        // A later upstream that answers makes earlier failures warnings only (failover works).
        if working.is_some() {
            for c in out.iter_mut().filter(|c| c.name == "upstream" && c.status == Status::Fail) {
                c.status = Status::Warn;
            }
        }
    }
    tailscaled_checks(&sock, &mut out);
    library_checks(find_lib(&files).as_deref(), &mut out);
    supervisor_checks(&mut out);
    if let (Some(d), Ok(l)) = (&dest, &loaded) {
        sample(&l.cfg, d, working.as_ref(), &mut out);
    }
    let ok = !out.iter().any(|c| c.status == Status::Fail);
    if json {
        let items: Vec<String> = out
            .iter()
            .map(|c| {
                let st = match c.status {
                    Status::Ok => "ok",
                    Status::Warn => "warn",
                    Status::Fail => "fail",
                    Status::Info => "info",
                };
                format!(
                    "{{\"check\":{},\"status\":\"{st}\",\"detail\":{},\"remedy\":{}}}",
                    json_str(c.name),
                    json_str(&c.detail),
                    c.remedy.as_deref().map(json_str).unwrap_or_else(|| "null".into())
                )
            })
            .collect();
        println!("{{\"ok\":{ok},\"checks\":[{}]}}", items.join(","));
    } else {
        for c in &out {
            let mark = match c.status {
                Status::Ok => "✓",
                Status::Warn => "!",
                Status::Fail => "✗",
                Status::Info => " ",
            };
            println!("{mark} {}: {}", c.name, c.detail);
            if let (Some(r), Status::Fail | Status::Warn) = (&c.remedy, c.status) {
                println!("    → {r}");
            }
        }
        println!("{}", if ok { "everything needed works" } else { "something needed is broken (✗ above)" });
    }
    std::process::exit(if ok { 0 } else { 1 })
}

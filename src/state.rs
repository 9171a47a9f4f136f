//! Process-wide state, built on first use (never in a constructor): the configuration from the
//! environment and the configuration files (read with raw syscalls), the proxies' addresses,
//! /etc/hosts names and our own hostname. Racy cells, not OnceLock: no thread ever waits for
//! another's initialization, so fork() is always safe.
use crate::racy::Racy;
use std::collections::HashSet;
use tsproxy_core::conffile;
use tsproxy_core::config::{Config, LogLevel};
use tsproxy_core::tunnel::Resolved;

pub struct State {
    /// None when the environment holds a bad value: then we fail closed (tailnet destinations
    /// get ECONNREFUSED, everything else is untouched).
    pub cfg: Option<Config>,
    /// Used when `cfg` is None, for classification only.
    pub fallback: Config,
    pub log_level: LogLevel,
    pub log_file: Option<String>,
    /// The launcher's supervisor's DNS responder, when this process is supervised.
    pub supervisor_dns: Option<std::net::SocketAddr>,
    upstreams: Racy<Vec<Resolved>>,
    local_names: Racy<HashSet<String>>,
}

static STATE: Racy<State> = Racy::new();

pub fn get() -> &'static State {
    if let Some(s) = STATE.get() {
        return s;
    }
    crate::fork::arm();
    quiet_panics();
    let mut err = None;
    let s = STATE.get_or_init(|| {
        let fallback = Config::from_lookup(|_| None).unwrap_or_else(|_| Config::from_lookup(|_| None).unwrap_or_else(|_| std::process::abort()));
        // A secure-execution process (setuid, setgid, file capabilities: sudo, su, ping) runs
        // with another user's privileges and the calling user's environment: nothing in that
        // environment, and nothing in the user's configuration file, may change what it does.
        // It reads /etc/tsproxy.conf only (and only if root owns it and nobody else may write
        // it), and never logs to a file or talks to a supervisor's DNS responder.
        let secure = secure_execution();
        let env = |k: &str| if secure { None } else { std::env::var(k).ok() };
        let files = conffile::load(secure, conffile::SYSTEM_PATH, env);
        let parsed = match &files {
            Ok(f) => Config::from_sources(env, f, secure),
            Err(e) => Err(e.clone()),
        };
        match parsed {
            Ok(c) => State {
                supervisor_dns: if secure { None } else { supervisor_dns() },
                log_level: c.log,
                log_file: if secure { None } else { c.log_file.clone() },
                cfg: Some(c),
                fallback,
                upstreams: Racy::new(),
                local_names: Racy::new(),
            },
            Err(e) => {
                err = Some(e);
                // Where to say so: the log file as far as it can be told.
                let log_file = env("TSPROXY_LOG_FILE")
                    .or_else(|| files.as_ref().ok()?.iter().find_map(|f| f.get("TSPROXY_LOG_FILE").map(|(v, _)| v.to_string())))
                    .filter(|v| !v.is_empty());
                State {
                    supervisor_dns: if secure { None } else { supervisor_dns() },
                    cfg: None,
                    fallback,
                    log_level: LogLevel::Error,
                    log_file: if secure { None } else { log_file },
                    upstreams: Racy::new(),
                    local_names: Racy::new(),
                }
            }
        }
    });
    if let Some(e) = err {
        crate::log::write(LogLevel::Error, format_args!("{e}; tailnet destinations will be refused"));
    }
    s
}

impl State {
    /// The configuration that decides routes (the real one, or defaults when it was invalid).
    pub fn routes(&self) -> &Config {
        self.cfg.as_ref().unwrap_or(&self.fallback)
    }

    /// Proxies with their socket addresses, resolved once (IP literals and `localhost` without
    /// any lookup; other names with the real getaddrinfo).
    pub fn upstreams(&self) -> &[Resolved] {
        self.upstreams.get_or_init(|| {
            let Some(cfg) = &self.cfg else { return Vec::new() };
            cfg.proxies
                .iter()
                .map(|up| Resolved { up: up.clone(), addrs: crate::dns::resolve_proxy_host(&up.host, up.port), owners: cfg.proxy_owner.clone() })
                .collect()
        })
    }

    /// Names /etc/hosts knows, and this machine's hostname: never tailnet short names.
    pub fn known_locally(&self, name: &str) -> bool {
        self.local_names.get_or_init(crate::dns::local_names).contains(name)
    }
}

fn supervisor_dns() -> Option<std::net::SocketAddr> {
    std::env::var("TSPROXY_SUPERVISOR_DNS").ok()?.parse().ok()
}

/// getauxval(AT_SECURE): the kernel says this process gained privileges at exec.
pub fn secure_execution() -> bool {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// Our panics (bugs) are caught at the boundary and answered fail-closed; their message goes to
/// our log as one line, not to the program's stderr through std's default hook.
fn quiet_panics() {
    static SET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SET.swap(true, std::sync::atomic::Ordering::AcqRel) {
        std::panic::set_hook(Box::new(|info| {
            let msg =
                info.payload().downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| info.payload().downcast_ref::<String>().cloned()).unwrap_or_default();
            let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
            crate::log::write(LogLevel::Error, format_args!("internal error (failing closed): {msg} at {at}"));
        }));
    }
}

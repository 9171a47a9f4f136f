//! The launcher's configuration: the environment over the user and system files (core's
//! `conffile`), the same rules the library applies, plus the warnings only the launcher (and
//! `doctor`) may print: a library loaded into every process must stay silent.
use tsproxy_core::conffile::{self, ConfFile};
use tsproxy_core::config::{Config, ConfigError};

/// A loaded configuration and the files it came from.
pub struct Loaded {
    pub cfg: Config,
    pub files: Vec<ConfFile>,
}

/// getauxval(AT_SECURE) for this process (a setuid launcher follows the library's rule).
pub fn secure() -> bool {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

fn env(k: &str) -> Option<String> {
    if secure() {
        None
    } else {
        std::env::var(k).ok()
    }
}

/// Environment, then the files; the first non-empty value of `key`.
pub fn lookup(files: &[ConfFile], key: &str) -> Option<String> {
    env(key).filter(|v| !v.trim().is_empty()).or_else(|| files.iter().find_map(|f| f.get(key).map(|(v, _)| v.to_string())).filter(|v| !v.trim().is_empty()))
}

/// The files that apply (user, system) and the configuration they and the environment make.
pub fn load() -> Result<Loaded, ConfigError> {
    let files = conffile::load(secure(), conffile::SYSTEM_PATH, env)?;
    let cfg = Config::from_sources(env, &files, secure())?;
    Ok(Loaded { cfg, files })
}

/// One line per configuration file (or proxychains4.conf) that holds a proxy password and may be
/// read by users other than its owner. Never shows the password.
pub fn password_warnings(files: &[ConfFile]) -> Vec<String> {
    let mut out = Vec::new();
    for f in files {
        if f.exposes_password() {
            out.push(format!("{} holds a proxy password and is readable by other users (mode {:o}); chmod 600 it", f.path, f.mode));
        }
    }
    if let Some(pc) = lookup(files, "TSPROXY_PROXYCHAINS_CONF") {
        let pc = pc.trim();
        if let Ok(Some((text, _, mode))) = conffile::read(pc) {
            let has = conffile::parse_proxychains(pc, &text).is_ok_and(|u| u.iter().any(|u| u.pass.as_deref().is_some_and(|p| !p.is_empty())));
            if has && mode & 0o044 != 0 {
                out.push(format!("{pc} holds a proxy password and is readable by other users (mode {mode:o}); chmod 600 it"));
            }
        }
    }
    out
}

//! `tsproxy [options] [--] CMD [ARGS...]`: run CMD with libtsproxy.so preloaded.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
// Our own C `main` instead of std's start-up: see `main` at the end.
#![cfg_attr(not(test), no_main)]

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::exit;
use tsproxy_core::config;

mod conf;
mod doctor;
mod envcmd;
mod exec;
mod init;
mod json;
mod privs;
mod supervisor;
mod system;

const LIB: &str = "libtsproxy.so";

const HELP: &str = "\
tsproxy: run a command so that its TCP connections to tailnet destinations go through
tailscaled's SOCKS5 (or HTTP) proxy, and everything else goes direct.

usage: tsproxy [options] [--] CMD [ARGS...]
       tsproxy env [--unset] [--shell sh|fish] [--proxy URL] [--proxychains-conf PATH]
       tsproxy install --system [--lib PATH]     (root: every process loads the library)
       tsproxy uninstall --system [--lib PATH]
       tsproxy doctor [--json] [--socket PATH] [HOST:PORT]

A first argument env, install, uninstall or doctor is a subcommand; to run a program of that
name, put -- first (tsproxy -- env ...).

options:
  -q, --quiet         log nothing (TSPROXY_LOG=off)
  -v, --verbose       log every decision to stderr (TSPROXY_LOG=debug)
      --proxy URL     proxy list, same as TSPROXY_PROXY (socks5://, socks5h://, http://,
                      user:pass@ allowed, comma-separated for failover)
      --proxychains-conf PATH
                      take the proxy from a proxychains4.conf's [ProxyList] (socks5 and
                      http entries), same as TSPROXY_PROXYCHAINS_CONF
      --supervisor=auto|on|off
                      seccomp supervisor for static binaries (Go, musl) and raw syscalls;
                      auto (default): on when the kernel has it (Linux >= 5.8). It sets
                      no_new_privs: setuid/setcap programs (sudo, ping) in the tree run
                      without their privileges (a warning says so for CMD itself)
      --allow-unprotected
                      run CMD even if it is setuid, setgid or has file capabilities and the
                      supervisor is off: the loader then ignores LD_PRELOAD for it, so nothing
                      intercepts it (its tailnet packets and names leak). Without this flag
                      tsproxy refuses such a command (exit 126) when the supervisor is off.
                      Only CMD itself is checked, not the programs it starts
  -h, --help          this text
  -V, --version       print the version

configuration: the environment, then $XDG_CONFIG_HOME/tsproxy/config, then /etc/tsproxy.conf
(KEY=VALUE lines with the variables' names; see tsproxy.conf(5)).

environment: TSPROXY_PROXY, TSPROXY_PROXYCHAINS_CONF, ALL_PROXY, TSPROXY_ROUTES, TSPROXY_DOMAINS, TSPROXY_SHORT_NAMES,
NO_PROXY, TSPROXY_LOG, TSPROXY_LOG_FILE, TSPROXY_CONNECT_TIMEOUT, TSPROXY_SOCKS_PIPELINE, TSPROXY_PROXY_OWNER,
TSPROXY_SUPERVISOR, TSPROXY_LIB (see README).
";

/// One line on stderr that never fails the launcher (a closed or broken stderr is ignored):
/// the command runs all the same.
fn warn(msg: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "tsproxy: {msg}");
}

fn die(code: i32, msg: impl std::fmt::Display) -> ! {
    warn(format_args!("{msg}"));
    exit(code)
}

struct Opts {
    log: Option<&'static str>,
    proxy: Option<String>,
    proxychains: Option<String>,
    supervisor: Option<String>,
    /// `--allow-unprotected`: run a secure-execution command without the supervisor anyway.
    /// A flag only, no environment variable: an inherited variable must not switch protection
    /// off for every command of a tree.
    allow_unprotected: bool,
    cmd: Vec<OsString>,
}

fn parse_args(mut args: impl Iterator<Item = OsString>) -> Opts {
    let mut o = Opts { log: None, proxy: None, proxychains: None, supervisor: None, allow_unprotected: false, cmd: Vec::new() };
    while let Some(a) = args.next() {
        let s = a.to_string_lossy();
        match s.as_ref() {
            "--" => break,
            "-q" | "--quiet" => o.log = Some("off"),
            "--allow-unprotected" => o.allow_unprotected = true,
            "-v" | "--verbose" => o.log = Some("debug"),
            "-h" | "--help" => {
                print!("{HELP}");
                exit(0)
            }
            "-V" | "--version" => {
                println!("tsproxy {}", env!("CARGO_PKG_VERSION"));
                exit(0)
            }
            "--proxy" => match args.next() {
                Some(v) => o.proxy = Some(v.to_string_lossy().into_owned()),
                None => die(2, "option --proxy needs a value"),
            },
            "--proxychains-conf" => match args.next() {
                Some(v) => o.proxychains = Some(v.to_string_lossy().into_owned()),
                None => die(2, "option --proxychains-conf needs a path"),
            },
            _ if s.starts_with("--proxychains-conf=") => o.proxychains = Some(s["--proxychains-conf=".len()..].to_string()),
            _ if s.starts_with("--proxy=") => o.proxy = Some(s["--proxy=".len()..].to_string()),
            _ if s.starts_with("--supervisor=") => o.supervisor = Some(s["--supervisor=".len()..].to_string()),
            "--supervisor" => match args.next() {
                Some(v) => o.supervisor = Some(v.to_string_lossy().into_owned()),
                None => die(2, "option --supervisor needs a value (auto, on or off)"),
            },
            _ if s.starts_with('-') && s.len() > 1 => die(2, format!("unknown option {s} (see tsproxy --help)")),
            _ => {
                o.cmd.push(a);
                break;
            }
        }
    }
    o.cmd.extend(args);
    o
}

/// Next to our own binary, else ../lib/tsproxy/, else the Debian package's
/// /usr/lib/<multiarch>/tsproxy/, else TSPROXY_LIB (environment or configuration file).
fn find_lib(files: &[tsproxy_core::conffile::ConfFile]) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let candidates = [dir.join(LIB), dir.join("../lib/tsproxy").join(LIB), dir.join("../lib").join(MULTIARCH).join("tsproxy").join(LIB)];
    for (i, c) in candidates.into_iter().enumerate() {
        if c.is_file() {
            // Our directory is already canonical (the kernel's /proc/self/exe); the others hold
            // a `..` to take out.
            return if i == 0 { Some(c) } else { c.canonicalize().ok().or(Some(c)) };
        }
    }
    conf::lookup(files, "TSPROXY_LIB").map(PathBuf::from).filter(|p| p.is_file())
}

/// Debian's multiarch triplet for this build (where the package puts the library).
const MULTIARCH: &str = if cfg!(target_arch = "x86_64") {
    "x86_64-linux-gnu"
} else if cfg!(target_arch = "aarch64") {
    "aarch64-linux-gnu"
} else if cfg!(target_arch = "riscv64") {
    "riscv64-linux-gnu"
} else {
    "unknown-linux-gnu"
};

/// `lib` first, then the existing entries (without a second copy of lib).
fn preload_value(lib: &Path, existing: Option<&OsStr>) -> OsString {
    let mut v = OsString::from(lib);
    if let Some(e) = existing {
        for part in e.as_bytes().split(|&b| b == b':' || b == b' ').filter(|p| !p.is_empty()) {
            if Path::new(OsStr::from_bytes(part)) != lib {
                v.push(":");
                v.push(OsStr::from_bytes(part));
            }
        }
    }
    v
}

/// `--proxy` / `--proxychains-conf` into the environment (the command's library reads them
/// there): a flag replaces the other variable too, so the flag is what counts.
fn apply_proxy_flags(proxy: &Option<String>, proxychains: &Option<String>) {
    if proxy.is_some() && proxychains.is_some() {
        die(2, "--proxy and --proxychains-conf: give one of them");
    }
    if let Some(p) = proxy {
        if let Err(e) = config::parse_proxy_list(p) {
            die(2, format!("invalid --proxy {:?}: {e}", config::redact(p)));
        }
        std::env::set_var("TSPROXY_PROXY", p);
        std::env::remove_var("TSPROXY_PROXYCHAINS_CONF");
    }
    if let Some(p) = proxychains {
        // Absolute: the command may change directory before its first connection.
        let abs = std::path::absolute(p).unwrap_or_else(|e| die(2, format!("--proxychains-conf {p}: {e}")));
        if let Err(e) = tsproxy_core::conffile::load_proxychains(&abs.to_string_lossy(), false) {
            die(2, e);
        }
        std::env::set_var("TSPROXY_PROXYCHAINS_CONF", abs);
        std::env::remove_var("TSPROXY_PROXY");
    }
}

fn env_main(mut args: impl Iterator<Item = OsString>) -> ! {
    let (mut unset, mut shell, mut proxy, mut proxychains) = (false, None, None, None);
    while let Some(a) = args.next() {
        let s = a.to_string_lossy().into_owned();
        let mut value = |name: &str| args.next().map(|v| v.to_string_lossy().into_owned()).unwrap_or_else(|| die(2, format!("env: {name} needs a value")));
        match s.as_str() {
            "--unset" | "-u" => unset = true,
            "--shell" => shell = Some(value("--shell")),
            "--proxy" => proxy = Some(value("--proxy")),
            "--proxychains-conf" => proxychains = Some(value("--proxychains-conf")),
            _ if s.starts_with("--shell=") => shell = Some(s["--shell=".len()..].to_string()),
            _ if s.starts_with("--proxy=") => proxy = Some(s["--proxy=".len()..].to_string()),
            _ if s.starts_with("--proxychains-conf=") => proxychains = Some(s["--proxychains-conf=".len()..].to_string()),
            "-h" | "--help" => {
                print!("usage: tsproxy env [--unset] [--shell sh|fish] [--proxy URL] [--proxychains-conf PATH]\n  eval \"$(tsproxy env)\"   (fish: tsproxy env | source)\n");
                exit(0)
            }
            _ => die(
                2,
                format!("env: unknown argument {s:?}; tsproxy env prints shell lines (eval \"$(tsproxy env)\"); to run the env program: tsproxy -- env ..."),
            ),
        }
    }
    let shell = envcmd::pick_shell(shell.as_deref(), std::env::var("SHELL").ok().as_deref()).unwrap_or_else(|e| die(2, format!("env: {e}")));
    apply_proxy_flags(&proxy, &proxychains);
    let mut vars = Vec::new();
    for (given, k) in [(proxy.is_some(), "TSPROXY_PROXY"), (proxychains.is_some(), "TSPROXY_PROXYCHAINS_CONF")] {
        if given {
            vars.push((k, std::env::var(k).unwrap_or_default()));
        }
    }
    let existing = std::env::var("LD_PRELOAD").ok();
    let lib = if unset {
        PathBuf::from(LIB)
    } else {
        let loaded = conf::load().unwrap_or_else(|e| die(2, e));
        for w in conf::password_warnings(&loaded.files) {
            eprintln!("tsproxy: warning: {w}");
        }
        find_lib(&loaded.files).unwrap_or_else(|| die(1, format!("cannot find {LIB} next to this binary, in ../lib/tsproxy/, or at $TSPROXY_LIB")))
    };
    print!("{}", envcmd::lines(shell, unset, &lib, existing.as_deref(), &vars));
    exit(0)
}

/// The C entry point, in place of std's `lang_start`. What std's start-up does — check that
/// descriptors 0 to 2 are open, ignore SIGPIPE, read /proc/self/maps for the main thread's
/// stack guard, set up an alternate signal stack and SIGSEGV/SIGBUS handlers — is about twenty
/// system calls on every launch, for a process that execs the command a few dozen
/// microseconds later and whose exec resets all of it. std itself works without it: on glibc
/// it takes the arguments and the environment from the loader. Descriptors 0 to 2 are left as
/// we got them, for the command, as `env` does.
#[cfg(not(test))]
#[no_mangle]
pub extern "C" fn main(argc: libc::c_int, argv: *const *const libc::c_char) -> libc::c_int {
    record_args(argc, argv);
    // A panic must not unwind out of this extern "C" frame (that aborts with a core dump):
    // the hook has printed its message; exit as std's runtime would.
    match std::panic::catch_unwind(launcher) {
        Ok(()) => 0,
        Err(_) => 101,
    }
}

/// Where the kernel put our argument strings (what /proc/PID/cmdline shows): the supervisor's
/// process shares this memory and blanks it (supervisor/spawn.rs, `prelude`).
static ARGS: [std::sync::atomic::AtomicUsize; 2] = [const { std::sync::atomic::AtomicUsize::new(0) }; 2];

#[cfg_attr(test, allow(dead_code))]
fn record_args(argc: libc::c_int, argv: *const *const libc::c_char) {
    use std::sync::atomic::Ordering::Relaxed;
    if argc < 1 || argv.is_null() {
        return;
    }
    // SAFETY: the kernel's argv: argc valid pointers to NUL-terminated strings, laid out one
    // after the other from argv[0] (the area /proc/PID/cmdline reads).
    unsafe {
        let first = *argv;
        let last = *argv.add(argc as usize - 1);
        if first.is_null() || last.is_null() {
            return;
        }
        let end = last as usize + libc::strlen(last) + 1;
        ARGS[0].store(first as usize, Relaxed);
        ARGS[1].store(end, Relaxed);
    }
}

fn args_area() -> Option<(usize, usize)> {
    use std::sync::atomic::Ordering::Relaxed;
    let (a, b) = (ARGS[0].load(Relaxed), ARGS[1].load(Relaxed));
    (a != 0 && b > a).then_some((a, b))
}

/// Overwrite the argument area `(from, to)` (`args_area`; (0, 0): nothing) with `name` and
/// NULs, all of it however long (ARG_MAX is a quarter of the stack limit: megabytes are
/// possible): `--proxy socks5://user:password@...` may be there, readable by every user in
/// /proc/PID/cmdline for as long as the process lives. Plain volatile stores, no system call,
/// no allocation (the supervisor's process calls it on the launcher's thread pointer).
///
/// # Safety
/// The area must be this process's argument strings, mapped and writable, and nothing may read
/// them any more.
unsafe fn blank_args((from, to): (usize, usize), name: &[u8]) {
    if from != 0 && to > from && to - from <= 1 << 30 {
        for i in 0..to - from {
            let b = name.get(i).copied().filter(|_| i + 1 < to - from).unwrap_or(0);
            // SAFETY: [from, to) is the argument area (the caller's contract); volatile, so
            // the stores are not dropped as dead.
            unsafe { std::ptr::write_volatile((from + i) as *mut u8, b) };
        }
    }
}

// Unit tests have std's own main, so nothing calls this there.
#[cfg_attr(test, allow(dead_code))]
fn launcher() {
    let mut args = std::env::args_os().skip(1).peekable();
    match args.peek().and_then(|a| a.to_str()) {
        Some("env") => {
            args.next();
            env_main(args)
        }
        Some("doctor") => {
            args.next();
            doctor::main(args, find_lib)
        }
        Some(verb @ ("install" | "uninstall")) => {
            let install = verb == "install";
            args.next();
            let files = conf::load().map(|l| l.files).unwrap_or_default();
            system::main(install, args, find_lib(&files))
        }
        _ => {}
    }
    let o = parse_args(args);
    if o.cmd.is_empty() {
        die(2, "no command given (see tsproxy --help)");
    }
    // The supervisor's process is started now unless it is surely off (the flag, or the
    // variable, which overrides a configuration file): its clones run beside the rest. The
    // variable as conf reads it: not at all in a set-ID launcher.
    let said = o.supervisor.clone().or_else(|| conf::lookup(&[], "TSPROXY_SUPERVISOR"));
    let maybe = said.as_deref().map(str::trim) != Some("off");
    // The supervisor's process is orphaned at once, and must not be handed back to us (that is,
    // after the exec, to the command: init.rs). As a subreaper we stop being one until it has
    // been handed on; as pid 1 we decide once the mode is known from every source (below).
    let pid1 = maybe && init::pid1();
    let subreaper = maybe && !pid1 && init::subreaper_off();
    let mut early = (maybe && !pid1).then(|| supervisor::prepare(args_area()));
    // Our own writes (warnings, errors) to a closed pipe must not kill us before the command
    // runs; the command gets the disposition back (exec.rs).
    // SAFETY: setting SIGPIPE's disposition has no preconditions; the old one is kept.
    let sigpipe = match unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) } {
        libc::SIG_ERR => None,
        old => Some(old),
    };
    apply_proxy_flags(&o.proxy, &o.proxychains);
    if let Some(l) = o.log {
        std::env::set_var("TSPROXY_LOG", l);
    }
    let loaded = conf::load().unwrap_or_else(|e| die(2, e));
    let cfg = loaded.cfg;
    if cfg.log >= config::LogLevel::Error {
        for w in conf::password_warnings(&loaded.files) {
            warn(format_args!("warning: {w}"));
        }
    }
    let mode_text = o.supervisor.clone().or_else(|| conf::lookup(&loaded.files, "TSPROXY_SUPERVISOR")).unwrap_or_else(|| "auto".into());
    let Some(mode) = supervisor::parse_mode(&mode_text) else { die(2, format!("invalid supervisor mode {mode_text:?} (auto, on or off)")) };
    if pid1 && mode != supervisor::Mode::Off {
        // As pid 1 the supervisor would come back to the command whatever we do: stay as a
        // minimal init and run the command as our child (init.rs) — only when the supervisor
        // will really run, so that otherwise the command stays pid 1.
        if supervisor::supported().is_ok() {
            init::split(args_area());
        }
        early = Some(supervisor::prepare(args_area()));
    }
    let Some(lib) = find_lib(&loaded.files) else { die(1, format!("cannot find {LIB} next to this binary, in ../lib/tsproxy/, or at $TSPROXY_LIB")) };
    let preload = preload_value(&lib, std::env::var_os("LD_PRELOAD").as_deref());
    // Judged before the supervisor sets no_new_privs (after that no exec is secure execution).
    let secure = privs::secure_exec(&o.cmd[0]);
    let mut supervised = false;
    if let Some(early) = early.filter(|_| mode != supervisor::Mode::Off) {
        match supervisor::install(&cfg, early) {
            Ok(h) => {
                std::env::set_var("TSPROXY_SUPERVISOR_DNS", h.dns.to_string());
                std::env::set_var("TSPROXY_SUPERVISOR_DNS_KEY", h.key);
                supervised = true;
            }
            Err(supervisor::NoSupervisor::Off(e)) if mode == supervisor::Mode::On => die(1, format!("supervisor on, but {e}")),
            Err(supervisor::NoSupervisor::Off(e)) => {
                if cfg.log >= config::LogLevel::Error {
                    warn(format_args!("supervisor off ({e}); static binaries will not be proxied"));
                }
            }
            Err(supervisor::NoSupervisor::Fatal(e)) => die(1, e),
        }
    }
    if let Some((path, why)) = &secure {
        let path = path.display();
        if supervised {
            // With file capabilities the exec stays secure execution under no_new_privs (the
            // file's effective bit: the kernel grants nothing but still sets AT_SECURE), so the
            // loader ignores LD_PRELOAD and the supervisor alone intercepts the program.
            let alone = if why.contains("capabilities") { "; the loader still ignores LD_PRELOAD for it, the supervisor alone intercepts it" } else { "" };
            if cfg.log >= config::LogLevel::Error {
                warn(format_args!("warning: {path} {why}: under the supervisor (no_new_privs) it runs without those privileges{alone}"));
            }
        } else if !o.allow_unprotected {
            die(
                126,
                format!(
                    "{path} {why}: the loader ignores LD_PRELOAD for it, so without the supervisor nothing would keep its tailnet packets and names from leaking; \
                     run it with the supervisor (it then runs without those privileges), or pass --allow-unprotected"
                ),
            );
        } else if cfg.log >= config::LogLevel::Error {
            warn(format_args!("warning: {path} {why} and runs unprotected (--allow-unprotected): its tailnet packets and names are not intercepted"));
        }
    }
    if let Some(old) = sigpipe {
        // The command gets the disposition we were given (we ignored it for our own writes).
        // SAFETY: restoring a disposition signal() returned.
        unsafe { libc::signal(libc::SIGPIPE, old) };
    }
    supervisor::settle();
    if subreaper {
        // The supervisor has been handed on (A is reaped): the command is a subreaper again.
        init::subreaper_on();
    }
    let err = exec::execvp(&o.cmd, &preload, supervised);
    let name = o.cmd[0].to_string_lossy();
    match err.kind() {
        std::io::ErrorKind::NotFound => die(127, format!("{name}: command not found")),
        std::io::ErrorKind::PermissionDenied => die(126, format!("{name}: permission denied")),
        _ => die(126, format!("{name}: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Opts {
        parse_args(v.iter().map(OsString::from))
    }

    #[test]
    fn options_stop_at_command() {
        let o = args(&["-v", "--proxy", "socks5://h:1", "curl", "-q", "--", "x"]);
        assert_eq!(o.log, Some("debug"));
        assert_eq!(o.proxy.as_deref(), Some("socks5://h:1"));
        assert_eq!(o.cmd, vec!["curl", "-q", "--", "x"]);
        let o = args(&["-q", "--", "-weird-cmd"]);
        assert_eq!(o.log, Some("off"));
        assert_eq!(o.cmd, vec!["-weird-cmd"]);
        let o = args(&["--proxy=http://p", "true"]);
        assert_eq!(o.proxy.as_deref(), Some("http://p"));
        assert!(!o.allow_unprotected);
        let o = args(&["--supervisor=off", "--allow-unprotected", "ping", "--allow-unprotected"]);
        assert!(o.allow_unprotected);
        assert_eq!(o.cmd, vec!["ping", "--allow-unprotected"]);
    }

    #[test]
    fn preload_prepends_without_duplicates() {
        let lib = Path::new("/opt/t/libtsproxy.so");
        assert_eq!(preload_value(lib, None), "/opt/t/libtsproxy.so");
        assert_eq!(preload_value(lib, Some(OsStr::new("/a.so /b.so"))), "/opt/t/libtsproxy.so:/a.so:/b.so");
        assert_eq!(preload_value(lib, Some(OsStr::new("/opt/t/libtsproxy.so:/a.so"))), "/opt/t/libtsproxy.so:/a.so");
    }
}

//! A Debian rootfs for the root-tier package tests (tests/deb.rs, tests/rootfs_system_wide.rs):
//! `make deb`, the host's Debian suite, a `mmdebstrap --variant=minbase` tarball made once and
//! cached (one per list of extra packages), and scripts run inside an unpacked copy with
//! `unshare -m` + `chroot`, either without any network or inside one of the root tier's
//! network namespaces.
use super::child::{bounded, Run};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");
/// `make deb`'s script.
pub const BUILD_DEB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/build-deb.sh");
/// Debian's mirror (mmdebstrap's default for Debian suites).
pub const MIRROR: &str = "http://deb.debian.org/debian";

pub fn have(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool} >/dev/null")]).status().is_ok_and(|s| s.success())
}

/// Skip (`false`) when a tool is missing, unless the root tier is required (`make test` as root
/// sets TSPROXY_REQUIRE_NETNS): then it is a failure.
pub fn tools(list: &[&str], what: &str) -> bool {
    let missing: Vec<&&str> = list.iter().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return true;
    }
    assert!(std::env::var_os("TSPROXY_REQUIRE_NETNS").is_none(), "{what}: {missing:?} missing (scripts/test-deps.sh installs them)");
    eprintln!("SKIPPED: {what}: {missing:?} missing");
    false
}

/// Root, or skip (`false`; a failure when TSPROXY_REQUIRE_NETNS is set).
pub fn root(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(std::env::var_os("TSPROXY_REQUIRE_NETNS").is_none(), "TSPROXY_REQUIRE_NETNS is set but {what} needs root");
    eprintln!("SKIPPED: {what} needs root (chroot, dpkg in a rootfs)");
    false
}

/// A scratch directory removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("tsp-deb-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `make deb` (packaging/build-deb.sh: a release build, minutes the first time, seconds when
/// fresh); the .deb's path.
pub fn build_deb() -> PathBuf {
    let mut c = Command::new("bash");
    c.arg(BUILD_DEB).env("CARGO", env!("CARGO")).current_dir(MANIFEST);
    let r = bounded(c, 1500);
    assert!(r.ok(), "make deb failed:\n{}", r.text());
    let deb = Path::new(MANIFEST).join(r.stdout.lines().last().expect("build-deb.sh prints the .deb's path"));
    assert!(deb.is_file(), "{} missing", deb.display());
    deb
}

/// The host's Debian suite (its codename), else Debian stable.
pub fn suite() -> String {
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let field = |k: &str| os.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).map(|v| v.trim_matches('"').to_string());
    match (field("ID").as_deref(), field("VERSION_CODENAME")) {
        (Some("debian"), Some(c)) if !c.is_empty() => c,
        _ => "stable".into(),
    }
}

/// The minbase tarball of `suite` with the packages `include` added (`mmdebstrap --include`),
/// made once and reused while younger than 30 days (CI does not rebuild it every run; a month
/// keeps its packages close to the mirror's). Each package list has its own tarball, named by
/// the sorted list: `debian-<suite>-minbase[+pkg...].tar` under /var/cache/tsproxy-test/
/// (`TSPROXY_TEST_CACHE` moves it).
pub fn rootfs_tarball(suite: &str, include: &[&str]) -> PathBuf {
    let dir = std::env::var_os("TSPROXY_TEST_CACHE").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/cache/tsproxy-test"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut pkgs: Vec<&str> = include.to_vec();
    pkgs.sort_unstable();
    pkgs.dedup();
    let key: String = pkgs.iter().map(|p| format!("+{p}")).collect();
    let tar = dir.join(format!("debian-{suite}-minbase{key}.tar"));
    let fresh = std::fs::metadata(&tar).and_then(|m| m.modified()).is_ok_and(|t| t.elapsed().is_ok_and(|e| e.as_secs() < 30 * 86400));
    if fresh {
        return tar;
    }
    // Written beside and renamed: an interrupted run never leaves a truncated tarball behind.
    let part = dir.join(format!("debian-{suite}-minbase{key}.part-{}.tar", std::process::id()));
    let mut c = Command::new("mmdebstrap");
    c.args(["--variant=minbase", "--format=tar", "--quiet"]);
    if !pkgs.is_empty() {
        c.arg(format!("--include={}", pkgs.join(",")));
    }
    c.arg(suite).arg(&part).arg(MIRROR);
    let r = bounded(c, 900);
    if !r.ok() || !part.is_file() {
        let _ = std::fs::remove_file(&part);
        panic!("mmdebstrap {suite} {pkgs:?} failed:\n{}", r.text());
    }
    std::fs::rename(&part, &tar).unwrap();
    tar
}

/// Unpack `tar` into `root` (created).
pub fn unpack(tar: &Path, root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    let mut c = Command::new("tar");
    c.arg("-C").arg(root).arg("-xf").arg(tar);
    let r = bounded(c, 120);
    assert!(r.ok(), "unpacking {} failed:\n{}", tar.display(), r.text());
}

/// The network a rootfs script gets.
#[derive(Clone, Copy)]
pub enum Net<'a> {
    /// An empty network namespace of its own: no network at all.
    Isolated,
    /// The named network namespace (`ip netns exec NAME`), e.g. the root tier's tsp-ws.
    Netns(&'a str),
}

/// Run `script` with sh inside the rootfs `root`: a private mount namespace (its /proc mounted
/// there, gone with the namespace), the network `net`, chroot, and a clean environment (PATH,
/// HOME=/root, LANG, plus `env`). At most `secs`; the script's whole process tree is killed at
/// the bound.
pub fn in_root(root: &Path, net: Net, script: &str, env: &[(&str, &str)], secs: u64) -> Run {
    let full = format!("mount -t proc proc {r}/proc || exit 99\nexec chroot {r} /bin/sh -c \"$1\"", r = root.display());
    let mut c = match net {
        Net::Isolated => {
            let mut c = Command::new("unshare");
            c.args(["-m", "-n"]);
            c
        }
        Net::Netns(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "unshare", "-m"]);
            c
        }
    };
    c.args(["--propagation", "private", "sh", "-c", &full, "sh", script]);
    c.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").env("HOME", "/root").env("LANG", "C.UTF-8");
    c.envs(env.iter().copied());
    let r = bounded(c, secs);
    assert_ne!(r.code(), Some(99), "mounting /proc in the rootfs failed:\n{}", r.text());
    r
}

/// The host's Debian multiarch triplet (x86_64-linux-gnu...).
pub fn multiarch() -> String {
    let o = Command::new("dpkg-architecture").arg("-qDEB_HOST_MULTIARCH").output().unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

//! `tsproxy install --system` / `tsproxy uninstall --system`: the library in `/etc/ld.so.preload`,
//! so every dynamically linked process of the machine loads it (README, System-wide mode).
//!
//! A wrong line there breaks every process of the machine, and a library that a non-root user can
//! replace would run their code in every root process. So: root only; the library must be owned
//! by root and writable by nobody else, in directories the same holds for (sticky ones such as
//! /tmp allowed); it is loaded once into `/bin/true` before the file is touched; the file is
//! written as a temporary file in /etc, synced, and renamed over the old one (a crash leaves the
//! old or the new file, never half of one); the other entries stay as they were; installing twice
//! changes nothing; uninstalling removes exactly the line that names this library.
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The file the dynamic loader reads.
pub const PRELOAD_FILE: &str = "/etc/ld.so.preload";

/// Why `lib` may not go into ld.so.preload, or None. `meta` looks a path up (tests pass facts).
pub fn untrusted(lib: &Path, meta: impl Fn(&Path) -> std::io::Result<(u32, u32)>) -> Option<String> {
    if !lib.is_absolute() {
        return Some(format!("{} is not an absolute path", lib.display()));
    }
    let (uid, mode) = match meta(lib) {
        Ok(m) => m,
        Err(e) => return Some(format!("{}: {e}", lib.display())),
    };
    if uid != 0 || mode & 0o022 != 0 {
        return Some(format!("{} must be owned by root and writable by nobody else (owner {uid}, mode {:o})", lib.display(), mode & 0o7777));
    }
    for dir in lib.ancestors().skip(1) {
        let (uid, mode) = match meta(dir) {
            Ok(m) => m,
            Err(e) => return Some(format!("{}: {e}", dir.display())),
        };
        let sticky = mode & 0o1000 != 0;
        if uid != 0 || (mode & 0o022 != 0 && !sticky) {
            return Some(format!(
                "directory {} must be owned by root and writable by nobody else (owner {uid}, mode {:o}): another user could replace the library",
                dir.display(),
                mode & 0o7777
            ));
        }
    }
    None
}

/// Entries of ld.so.preload: separated by white space or `:` (glibc's rtld).
fn entries(line: &str) -> impl Iterator<Item = &str> {
    line.split([' ', '\t', ':']).filter(|e| !e.is_empty())
}

/// The new file's text with `lib` added (None: already there).
pub fn with_lib(old: &str, lib: &str) -> Option<String> {
    if old.lines().any(|l| entries(l.split('#').next().unwrap_or("")).any(|e| e == lib)) {
        return None;
    }
    let mut s = old.to_string();
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s.push_str(lib);
    s.push('\n');
    Some(s)
}

/// The new file's text without the line that is exactly `lib` (None: no such line).
pub fn without_lib(old: &str, lib: &str) -> Option<String> {
    let mut found = false;
    let mut s = String::with_capacity(old.len());
    for l in old.split_inclusive('\n') {
        if l.trim() == lib {
            found = true;
        } else {
            s.push_str(l);
        }
    }
    found.then_some(s)
}

/// Replace `path` with `text` atomically: a temporary file in the same directory, fsync, rename,
/// fsync of the directory. The old file's mode is kept (0644 for a new one). An empty text
/// removes the file.
fn replace(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    if text.trim().is_empty() {
        std::fs::remove_file(path)?;
    } else {
        let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o7777).unwrap_or(0o644);
        let tmp = dir.join(format!(".{}.tsproxy.{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("x"), std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let r = (|| {
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        r?;
    }
    std::fs::File::open(dir)?.sync_all()
}

fn die(code: i32, msg: impl std::fmt::Display) -> ! {
    eprintln!("tsproxy: {msg}");
    std::process::exit(code)
}

/// `tsproxy install|uninstall --system [--lib PATH]`.
pub fn main(install: bool, args: impl Iterator<Item = std::ffi::OsString>, found_lib: Option<PathBuf>) -> ! {
    let verb = if install { "install" } else { "uninstall" };
    let (mut system, mut lib) = (false, None);
    let mut args = args.map(|a| a.to_string_lossy().into_owned());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--system" => system = true,
            "--lib" => lib = Some(PathBuf::from(args.next().unwrap_or_else(|| die(2, "--lib needs a path")))),
            _ if a.starts_with("--lib=") => lib = Some(PathBuf::from(&a["--lib=".len()..])),
            "-h" | "--help" => {
                println!("usage: tsproxy {verb} --system [--lib PATH]");
                std::process::exit(0)
            }
            _ => die(
                2,
                format!("{verb}: unknown argument {a:?} (usage: tsproxy {verb} --system [--lib PATH]; to run a program named {verb}: tsproxy -- {verb} ...)"),
            ),
        }
    }
    if !system {
        die(2, format!("{verb}: only --system is supported (tsproxy {verb} --system)"));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        die(1, format!("{verb} --system: must be run as root (it edits {PRELOAD_FILE})"));
    }
    let lib = lib.or(found_lib).unwrap_or_else(|| die(1, "cannot find libtsproxy.so (give --lib PATH)"));
    let lib = lib.canonicalize().unwrap_or_else(|e| die(1, format!("{}: {e}", lib.display())));
    let lib_s = lib
        .to_str()
        .filter(|s| !s.contains([' ', '\t', ':', '\n', '#']))
        .unwrap_or_else(|| die(1, format!("{}: a path ld.so.preload cannot hold", lib.display())));
    let path = Path::new(PRELOAD_FILE);
    let old = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => die(1, format!("{PRELOAD_FILE}: {e}")),
    };
    if install {
        if let Some(why) = untrusted(&lib, |p| std::fs::metadata(p).map(|m| (m.uid(), m.mode()))) {
            die(1, format!("install --system: {why}"));
        }
        let Some(new) = with_lib(&old, lib_s) else {
            println!("tsproxy: {lib_s} is already in {PRELOAD_FILE}");
            std::process::exit(0)
        };
        // One process loads it before every process does: a library that does not load here
        // must not reach the file.
        let ok = std::process::Command::new("/bin/true").env("LD_PRELOAD", &lib).stderr(std::process::Stdio::piped()).output();
        match ok {
            Ok(o) if o.status.success() && o.stderr.is_empty() => {}
            Ok(o) => die(
                1,
                format!(
                    "install --system: /bin/true with {lib_s} preloaded failed ({}; {}): not installed",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
            ),
            Err(e) => die(1, format!("install --system: cannot run /bin/true: {e}")),
        }
        replace(path, &new).unwrap_or_else(|e| die(1, format!("{PRELOAD_FILE}: {e}")));
        println!(
            "tsproxy: added {lib_s} to {PRELOAD_FILE}; every dynamically linked program started from now on loads it (tsproxy uninstall --system removes it)"
        );
    } else {
        let Some(new) = without_lib(&old, lib_s) else {
            println!("tsproxy: {PRELOAD_FILE} has no line {lib_s}; nothing to do");
            std::process::exit(0)
        };
        replace(path, &new).unwrap_or_else(|e| die(1, format!("{PRELOAD_FILE}: {e}")));
        println!("tsproxy: removed {lib_s} from {PRELOAD_FILE}");
    }
    std::process::exit(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_remove_keep_other_entries() {
        let lib = "/usr/lib/t/libtsproxy.so";
        assert_eq!(with_lib("", lib).unwrap(), "/usr/lib/t/libtsproxy.so\n");
        assert_eq!(with_lib("/a.so", lib).unwrap(), "/a.so\n/usr/lib/t/libtsproxy.so\n");
        assert_eq!(with_lib("/a.so /usr/lib/t/libtsproxy.so\n", lib), None, "already there among others");
        assert_eq!(
            with_lib("# /usr/lib/t/libtsproxy.so\n", lib).unwrap(),
            "# /usr/lib/t/libtsproxy.so\n/usr/lib/t/libtsproxy.so\n",
            "a comment is not an entry"
        );
        let old = "/a.so\n/usr/lib/t/libtsproxy.so\n/b.so:/c.so\n";
        assert_eq!(without_lib(old, lib).unwrap(), "/a.so\n/b.so:/c.so\n");
        assert_eq!(without_lib("/a.so /usr/lib/t/libtsproxy.so\n", lib), None, "not its line");
        assert_eq!(without_lib("/a.so\n", lib), None);
        assert_eq!(without_lib(&with_lib("/x.so\n", lib).unwrap(), lib).unwrap(), "/x.so\n", "round trip");
    }

    #[test]
    fn trust_rules() {
        let facts =
            |bad: &'static str, facts: (u32, u32)| move |p: &Path| -> std::io::Result<(u32, u32)> { Ok(if p == Path::new(bad) { facts } else { (0, 0o755) }) };
        let lib = Path::new("/opt/t/libtsproxy.so");
        assert_eq!(untrusted(lib, facts("/none", (0, 0))), None);
        assert!(untrusted(lib, facts("/opt/t/libtsproxy.so", (1000, 0o755))).is_some());
        assert!(untrusted(lib, facts("/opt/t/libtsproxy.so", (0, 0o775))).is_some());
        assert!(untrusted(lib, facts("/opt/t", (1000, 0o755))).unwrap().contains("/opt/t"));
        assert!(untrusted(lib, facts("/opt", (0, 0o777))).unwrap().contains("directory /opt "));
        assert_eq!(untrusted(lib, facts("/opt", (0, 0o1777))), None, "sticky like /tmp");
        assert!(untrusted(Path::new("rel/libtsproxy.so"), facts("/none", (0, 0))).is_some());
    }
}

//! Would exec'ing the command be *secure execution* (`AT_SECURE`): a setuid or setgid program,
//! or one with file capabilities, run by a user it gives privileges to? Then the dynamic loader
//! ignores `LD_PRELOAD` for it, so without the supervisor nothing would intercept it — `ping
//! 100.64.0.2` would send ICMP directly and its names would go to the system resolver, silently.
//! Under the supervisor (no_new_privs) the kernel grants nothing at exec, so the library loads
//! and the supervisor watches, but the program runs without its privileges.
//!
//! The launcher asks before it execs (`main.rs`): refuse to run such a command unprotected
//! unless `--allow-unprotected`, and warn when it runs without its privileges. It can judge only
//! the command it execs itself: a program exec'd later by the command (`sh -c 'ping ...'`) is
//! not seen (README).
//!
//! The rule follows the kernel's (fs/exec.c `bprm_fill_uid`, security/commoncap.c
//! `cap_bprm_creds_from_file`): set-user-ID counts when the file's owner is not our real uid,
//! set-group-ID when the group-execute bit is set too and the file's group is not our real gid,
//! file capabilities (`security.capability`) when we are not root; none of them on a `nosuid`
//! mount or when no_new_privs is already set; a `#!` script's own bits never (the kernel
//! ignores them), its interpreter's do.
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What the kernel looks at in the file.
#[derive(Clone, Copy, Debug, Default)]
pub struct FileFacts {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// A `security.capability` extended attribute.
    pub caps: bool,
    /// On a mount with `nosuid`.
    pub nosuid: bool,
    /// The owner and the group have a mapping in this user namespace. In a user namespace
    /// (`unshare -r`, a rootless container) a file of an unmapped owner shows the overflow id
    /// (65534) and the kernel ignores its set-ID bits (`bprm_fill_uid`: no mapping, no change).
    pub uid_mapped: bool,
    pub gid_mapped: bool,
}

/// Who execs it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ids {
    /// Real uid and gid.
    pub uid: u32,
    pub gid: u32,
    /// no_new_privs already set on this process.
    pub nnp: bool,
}

/// Why exec'ing a file with these facts would be secure execution for `ids`, or None.
pub fn judge(f: FileFacts, ids: Ids) -> Option<String> {
    if f.nosuid || ids.nnp {
        return None;
    }
    if f.mode & libc::S_ISUID != 0 && f.uid_mapped && f.uid != ids.uid {
        return Some(if f.uid == 0 { "setuid root".into() } else { format!("setuid (uid {})", f.uid) });
    }
    if f.mode & (libc::S_ISGID | libc::S_IXGRP) == libc::S_ISGID | libc::S_IXGRP && f.gid_mapped && f.gid != ids.gid {
        return Some(format!("setgid (gid {})", f.gid));
    }
    if f.caps && ids.uid != 0 {
        return Some("has file capabilities".into());
    }
    None
}

/// The file `execvp` would run for `cmd`: `cmd` itself when it holds a `/`, else the first
/// executable regular file among execvp's candidates (`exec::candidates`: PATH, glibc's
/// default when unset).
pub fn which(cmd: &OsStr, path: Option<&OsStr>) -> Option<PathBuf> {
    if cmd.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(cmd));
    }
    crate::exec::candidates(cmd.as_bytes(), path).into_iter().find_map(|c| {
        // SAFETY: c is a NUL-terminated path; access only reads it.
        let x = unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0;
        let p = PathBuf::from(OsStr::from_bytes(c.as_bytes()));
        (x && p.metadata().is_ok_and(|m| m.is_file())).then_some(p)
    })
}

fn facts(p: &Path) -> Option<FileFacts> {
    let m = p.metadata().ok()?;
    let c = CString::new(p.as_os_str().as_bytes()).ok()?;
    // SAFETY: c is NUL-terminated; a NULL buffer of size 0 asks only for the attribute's size.
    let caps = unsafe { libc::getxattr(c.as_ptr(), c"security.capability".as_ptr(), std::ptr::null_mut(), 0) } > 0;
    let mode = m.mode();
    if !caps && mode & libc::S_ISUID == 0 && mode & (libc::S_ISGID | libc::S_IXGRP) != libc::S_ISGID | libc::S_IXGRP {
        // Nothing that could make the exec secure: the mount and the id mappings cannot change
        // that (`judge` answers None), and the common case stays a stat and one getxattr.
        return Some(FileFacts { mode, uid: m.uid(), gid: m.gid(), caps, nosuid: false, uid_mapped: true, gid_mapped: true });
    }
    // SAFETY: all-zero is a valid statvfs; statvfs only writes into it.
    let mut sv: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is NUL-terminated, sv a valid out-pointer.
    let nosuid = unsafe { libc::statvfs(c.as_ptr(), &mut sv) } == 0 && sv.f_flag & libc::ST_NOSUID != 0;
    let (uid_mapped, gid_mapped) = (mapped("/proc/self/uid_map", m.uid()), mapped("/proc/self/gid_map", m.gid()));
    Some(FileFacts { mode: m.mode(), uid: m.uid(), gid: m.gid(), caps, nosuid, uid_mapped, gid_mapped })
}

/// Does `id` (as this user namespace sees it) have a mapping, by `map` (/proc/self/uid_map or
/// gid_map: lines of "inside outside count")? Unreadable: assume so (the judgement stays on
/// the side of refusing).
fn mapped(map: &str, id: u32) -> bool {
    let Ok(text) = std::fs::read_to_string(map) else { return true };
    in_map(&text, id)
}

fn in_map(text: &str, id: u32) -> bool {
    text.lines().any(|l| {
        let mut w = l.split_whitespace().map(|t| t.parse::<u64>().ok());
        match (w.next().flatten(), w.next().flatten(), w.next().flatten()) {
            (Some(inside), Some(_), Some(count)) => (inside..inside.saturating_add(count)).contains(&(id as u64)),
            _ => false,
        }
    })
}

fn ids() -> Ids {
    // SAFETY: getuid, getgid and prctl(PR_GET_NO_NEW_PRIVS) have no preconditions.
    unsafe { Ids { uid: libc::getuid(), gid: libc::getgid(), nnp: libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1 } }
}

/// The interpreter of a `#!` script (the kernel runs it, not the script), or None.
fn interpreter(p: &Path) -> Option<PathBuf> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(p).ok()?.read(&mut head).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next()?;
    let first = line.split(|&b| b == b' ' || b == b'\t').find(|t| !t.is_empty())?;
    Some(PathBuf::from(OsStr::from_bytes(first)))
}

/// The file the kernel would run for `cmd` (PATH lookup, `#!` interpreters followed as the
/// kernel does, at most 4 deep) and why that exec would be secure execution, or None.
pub fn secure_exec(cmd: &OsStr) -> Option<(PathBuf, String)> {
    let mut p = which(cmd, std::env::var_os("PATH").as_deref())?;
    for _ in 0..5 {
        match interpreter(&p) {
            Some(i) => p = i,
            None => return judge(facts(&p)?, ids()).map(|why| (p, why)),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: Ids = Ids { uid: 1000, gid: 1000, nnp: false };
    const ROOT: Ids = Ids { uid: 0, gid: 0, nnp: false };

    fn f(mode: u32, uid: u32, gid: u32, caps: bool) -> FileFacts {
        FileFacts { mode, uid, gid, caps, nosuid: false, uid_mapped: true, gid_mapped: true }
    }

    #[test]
    fn the_kernels_rule() {
        // setuid root (sudo, su, passwd), run by a user: secure; by root: not.
        assert_eq!(judge(f(0o104755, 0, 0, false), USER).as_deref(), Some("setuid root"));
        assert_eq!(judge(f(0o104755, 0, 0, false), ROOT), None);
        // setuid to another user: secure for root too.
        assert_eq!(judge(f(0o104755, 65534, 0, false), ROOT).as_deref(), Some("setuid (uid 65534)"));
        // setuid to oneself: nothing changes.
        assert_eq!(judge(f(0o104755, 1000, 1000, false), USER), None);
        // setgid counts only with group-execute (without it the bit means mandatory locking).
        assert_eq!(judge(f(0o102755, 0, 42, false), USER).as_deref(), Some("setgid (gid 42)"));
        assert_eq!(judge(f(0o102745, 0, 42, false), USER), None);
        assert_eq!(judge(f(0o102755, 0, 1000, false), USER), None);
        // File capabilities (ping: cap_net_raw+ep): secure for a user, not for root.
        assert_eq!(judge(f(0o100755, 0, 0, true), USER).as_deref(), Some("has file capabilities"));
        assert_eq!(judge(f(0o100755, 0, 0, true), ROOT), None);
        // A plain program; nosuid mounts; no_new_privs already set.
        assert_eq!(judge(f(0o100755, 0, 0, false), USER), None);
        assert_eq!(judge(FileFacts { nosuid: true, ..f(0o104755, 0, 0, true) }, USER), None);
        assert_eq!(judge(f(0o104755, 0, 0, true), Ids { nnp: true, ..USER }), None);
        // In a user namespace that does not map the owner (or group), the kernel ignores the bit.
        assert_eq!(judge(FileFacts { uid_mapped: false, ..f(0o104755, 65534, 65534, false) }, ROOT), None);
        assert_eq!(judge(FileFacts { gid_mapped: false, ..f(0o102755, 0, 65534, false) }, ROOT), None);
    }

    #[test]
    fn id_maps() {
        let init = "         0          0 4294967295\n";
        assert!(in_map(init, 0) && in_map(init, 65534) && in_map(init, u32::MAX - 1));
        let unshared = "         0      65534          1\n";
        assert!(in_map(unshared, 0) && !in_map(unshared, 65534) && !in_map(unshared, 1));
        let sub = "0 1000 1\n1 100000 65536\n";
        assert!(in_map(sub, 0) && in_map(sub, 65536) && !in_map(sub, 65537));
        assert!(!in_map("", 0));
    }

    #[test]
    fn path_lookup_and_scripts() {
        let dir = std::env::temp_dir().join(format!("tsp-privs-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::create_dir_all(dir.join("b")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let put = |p: &Path, body: &[u8], mode: u32| {
            std::fs::write(p, body).unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        put(&dir.join("a/tool"), b"x", 0o644); // not executable (for root too: no x bit at all): skipped
        put(&dir.join("b/tool"), b"x", 0o755);
        let path = std::ffi::OsString::from(format!("{}:{}", dir.join("a").display(), dir.join("b").display()));
        assert_eq!(which(OsStr::new("tool"), Some(&path)), Some(dir.join("b/tool")));
        assert_eq!(which(OsStr::new("nope"), Some(&path)), None);
        assert_eq!(which(OsStr::new("./x/y"), Some(&path)), Some(PathBuf::from("./x/y")));
        assert_eq!(which(OsStr::new(""), Some(&path)), None);
        put(&dir.join("b/script"), b"#!/bin/sh -e\necho\n", 0o755);
        assert_eq!(interpreter(&dir.join("b/script")), Some(PathBuf::from("/bin/sh")));
        assert_eq!(interpreter(&dir.join("b/tool")), None);
        // A setuid script's own bits do not count; its interpreter's do (/bin/sh: none).
        put(&dir.join("b/suid-script"), b"#!/bin/sh\n", 0o4755);
        assert_eq!(secure_exec(dir.join("b/suid-script").as_os_str()), None);
        assert_eq!(secure_exec(OsStr::new("no-such-command-tsproxy")), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

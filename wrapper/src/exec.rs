//! The command's exec: execvp's search (glibc's rules), with the `execve` system call made
//! directly and everything it needs built first.
//!
//! Why not std's `Command::exec`: the supervisor (supervisor/spawn.rs) runs on the launcher's
//! memory after the exec, and may do so only if the launcher held no lock and was in no
//! allocation when it left. `Command::exec` holds std's environment lock across the execve and
//! allocates between attempts of its PATH search; here argv, envp and every candidate path
//! exist before the first attempt, and the supervisor is armed only for the instant of each
//! system call (`supervisor::arm`/`disarm`).
//!
//! What the command inherits is what the launcher was given: signal mask and dispositions
//! (SIGPIPE included, which the launcher ignores only for its own writes), descriptors, the
//! environment with `LD_PRELOAD` set — as `env` would pass them. (std's exec emptied the signal
//! mask and reset SIGPIPE to the default.)
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;

/// execvp(3)'s search for `cmd[0]`, with the environment of this process but `LD_PRELOAD` set
/// to `preload`. Returns only on failure, with the error execvp would give.
pub fn execvp(cmd: &[OsString], preload: &OsStr, supervised: bool) -> io::Error {
    let Some(argv) = cmd.iter().map(|a| CString::new(a.as_bytes()).ok()).collect::<Option<Vec<_>>>() else {
        return io::Error::new(io::ErrorKind::InvalidInput, "an argument holds a NUL byte");
    };
    let mut env: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != "LD_PRELOAD")
        .filter_map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    let mut pre = b"LD_PRELOAD=".to_vec();
    pre.extend_from_slice(preload.as_bytes());
    match CString::new(pre) {
        Ok(c) => env.push(c),
        Err(_) => return io::Error::new(io::ErrorKind::InvalidInput, "the library path holds a NUL byte"),
    }
    let candidates = candidates(cmd[0].as_bytes(), std::env::var_os("PATH").as_deref());
    let argv_p = pointers(&argv);
    let env_p = pointers(&env);
    let mut eacces = false;
    let mut last = io::Error::from_raw_os_error(libc::ENOENT);
    for path in &candidates {
        let e = execve(path, &argv_p, &env_p, supervised);
        match e.raw_os_error().unwrap_or(0) {
            // glibc's execvp runs a file without a recognizable header with /bin/sh.
            libc::ENOEXEC => {
                let mut sh_argv = vec![c"/bin/sh".to_owned(), path.clone()];
                sh_argv.extend(argv.iter().skip(1).cloned());
                return execve(c"/bin/sh", &pointers(&sh_argv), &env_p, supervised);
            }
            libc::EACCES => eacces = true,
            libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
            _ => return e,
        }
        last = e;
    }
    if eacces {
        io::Error::from_raw_os_error(libc::EACCES)
    } else {
        last
    }
}

/// The files execvp tries: `cmd` itself when it holds a `/`, else `dir/cmd` for each entry of
/// PATH (glibc's default "/bin:/usr/bin" when unset; an empty entry is the current directory).
pub fn candidates(cmd: &[u8], path: Option<&OsStr>) -> Vec<CString> {
    if cmd.contains(&b'/') {
        return CString::new(cmd).ok().into_iter().collect();
    }
    if cmd.is_empty() {
        return Vec::new();
    }
    let path = path.map(OsStr::as_bytes).unwrap_or(b"/bin:/usr/bin");
    path.split(|&b| b == b':')
        .filter_map(|d| {
            let mut p = if d.is_empty() { b".".to_vec() } else { d.to_vec() };
            p.push(b'/');
            p.extend_from_slice(cmd);
            CString::new(p).ok()
        })
        .collect()
}

fn pointers(v: &[CString]) -> Vec<*const libc::c_char> {
    v.iter().map(|c| c.as_ptr()).chain(std::iter::once(std::ptr::null())).collect()
}

/// One execve, the supervisor armed for exactly its duration.
fn execve(path: &std::ffi::CStr, argv: &[*const libc::c_char], envp: &[*const libc::c_char], supervised: bool) -> io::Error {
    if supervised {
        crate::supervisor::arm();
    }
    // SAFETY: path, argv and envp are NUL-terminated strings and NULL-terminated arrays of
    // them, alive across the call; execve only returns on failure.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    let e = io::Error::last_os_error();
    if supervised {
        crate::supervisor::disarm();
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_follow_execvp() {
        let c = |cmd: &str, path: Option<&str>| -> Vec<String> {
            candidates(cmd.as_bytes(), path.map(OsStr::new)).into_iter().map(|c| c.into_string().unwrap()).collect()
        };
        assert_eq!(c("./x", Some("/a")), ["./x"]);
        assert_eq!(c("/bin/true", None), ["/bin/true"]);
        assert_eq!(c("true", None), ["/bin/true", "/usr/bin/true"]);
        assert_eq!(c("true", Some("/a::/b")), ["/a/true", "./true", "/b/true"]);
        assert!(c("", Some("/a")).is_empty());
    }
}

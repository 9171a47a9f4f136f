//! `tsproxy env [--unset] [--shell sh|fish] [--proxy URL] [--proxychains-conf PATH]`: the shell
//! lines that enable tsproxy for the current shell (`eval "$(tsproxy env)"`, or
//! `tsproxy env | source` in fish), or with `--unset` the lines that disable it. The shell is
//! fish when `--shell fish` says so or `$SHELL` ends in `/fish`; anything else gets POSIX sh
//! lines (bash, zsh, dash). Values are single-quoted, so nothing in them is expanded.
use std::path::Path;

/// The shells we print for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Sh,
    Fish,
}

/// `'...'` with every `'` written as `'\''` (sh) or `\'` (fish, inside single quotes).
pub fn quote(shell: Shell, v: &str) -> String {
    match shell {
        Shell::Sh => format!("'{}'", v.replace('\'', r"'\''")),
        Shell::Fish => format!("'{}'", v.replace('\\', r"\\").replace('\'', r"\'")),
    }
}

fn set(shell: Shell, k: &str, v: &str) -> String {
    match shell {
        Shell::Sh => format!("export {k}={}\n", quote(shell, v)),
        Shell::Fish => format!("set -gx {k} {}\n", quote(shell, v)),
    }
}

fn unset(shell: Shell, k: &str) -> String {
    match shell {
        Shell::Sh => format!("unset {k}\n"),
        Shell::Fish => format!("set -e {k}\n"),
    }
}

/// `LD_PRELOAD` without any libtsproxy.so entry (ours, or one installed elsewhere).
pub fn preload_without(existing: &str) -> String {
    existing.split([':', ' ']).filter(|p| !p.is_empty() && Path::new(p).file_name().map_or(true, |n| n != "libtsproxy.so")).collect::<Vec<_>>().join(":")
}

/// The lines. `vars` are extra variables to export (from `--proxy`...).
pub fn lines(shell: Shell, unset_mode: bool, lib: &Path, existing: Option<&str>, vars: &[(&str, String)]) -> String {
    let mut out = String::new();
    if unset_mode {
        let rest = preload_without(existing.unwrap_or(""));
        out += &if rest.is_empty() { unset(shell, "LD_PRELOAD") } else { set(shell, "LD_PRELOAD", &rest) };
        for (k, _) in vars {
            out += &unset(shell, k);
        }
    } else {
        for (k, v) in vars {
            out += &set(shell, k, v);
        }
        let v = crate::preload_value(lib, existing.map(std::ffi::OsStr::new));
        out += &set(shell, "LD_PRELOAD", &v.to_string_lossy());
    }
    out
}

/// The shell from `--shell`, else from `$SHELL`.
pub fn pick_shell(flag: Option<&str>, shell_var: Option<&str>) -> Result<Shell, String> {
    match flag {
        Some("sh" | "bash" | "zsh" | "dash" | "ksh") => Ok(Shell::Sh),
        Some("fish") => Ok(Shell::Fish),
        Some(s) => Err(format!("unknown shell {s:?} (sh, bash, zsh or fish)")),
        None => Ok(if shell_var.is_some_and(|s| s.ends_with("/fish") || s == "fish") { Shell::Fish } else { Shell::Sh }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sh_and_fish_lines() {
        let lib = Path::new("/usr/lib/x/libtsproxy.so");
        assert_eq!(lines(Shell::Sh, false, lib, None, &[]), "export LD_PRELOAD='/usr/lib/x/libtsproxy.so'\n");
        assert_eq!(lines(Shell::Sh, false, lib, Some("/a.so"), &[]), "export LD_PRELOAD='/usr/lib/x/libtsproxy.so:/a.so'\n");
        assert_eq!(
            lines(Shell::Fish, false, lib, None, &[("TSPROXY_PROXY", "socks5://u:it's@h".into())]),
            "set -gx TSPROXY_PROXY 'socks5://u:it\\'s@h'\nset -gx LD_PRELOAD '/usr/lib/x/libtsproxy.so'\n"
        );
        assert_eq!(quote(Shell::Sh, "a'b"), r"'a'\''b'");
        assert_eq!(lines(Shell::Sh, true, lib, Some("/usr/lib/x/libtsproxy.so:/a.so"), &[]), "export LD_PRELOAD='/a.so'\n");
        assert_eq!(lines(Shell::Sh, true, lib, Some("/other/libtsproxy.so"), &[]), "unset LD_PRELOAD\n");
        assert_eq!(lines(Shell::Fish, true, lib, None, &[("TSPROXY_PROXY", String::new())]), "set -e LD_PRELOAD\nset -e TSPROXY_PROXY\n");
        assert_eq!(pick_shell(None, Some("/usr/bin/fish")), Ok(Shell::Fish));
        assert_eq!(pick_shell(None, Some("/bin/zsh")), Ok(Shell::Sh));
        assert!(pick_shell(Some("csh"), None).is_err());
    }
}

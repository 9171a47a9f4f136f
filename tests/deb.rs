//! The Debian package (issue 13, part 5): `make deb` (packaging/build-deb.sh).
//!
//! No root: the generated /etc/tsproxy.conf lists every key the parser knows
//! (`tsproxy_core::conffile::KEYS`), commented out, each with an example the parser accepts;
//! tsproxy.conf(5) documents every key; every option of `tsproxy --help` is in tsproxy(1) and in
//! the bash, zsh and fish completions.
//!
//! Root: the package itself. lintian finds no error (and no warning but the known ones below);
//! then a fresh Debian rootfs (`mmdebstrap --variant=minbase`, the host's suite, the tarball
//! cached under /var/cache/tsproxy-test/) gets it with dpkg inside `unshare -m -n` + chroot:
//! `tsproxy --version`, `tsproxy doctor --json` (no tailscaled, no proxy: it says so and exits
//! 1), the library loads from /usr/lib/<multiarch>/tsproxy/ and the launcher finds it there,
//! the man pages and completions are where `dpkg -L` says, /etc/ld.so.preload is never
//! touched by the package, and `dpkg --purge` leaves the tree as it was before the install.
//! The chroot has no network (its own empty network namespace); only mmdebstrap, on the first
//! run, reaches the Debian mirror.
mod common;

use common::child::{bounded, Run};
use common::debian::{self, build_deb, multiarch, rootfs_tarball, suite, tools, unpack, Net, Scratch, BUILD_DEB, MANIFEST};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use tsproxy_core::conffile::{self, KEYS};
use tsproxy_core::config::Config;

/// lintian warnings accepted, each with the reason.
const LINTIAN_ACCEPTED: &[(&str, &str)] = &[
    // An initial Debian upload should close an ITP bug; this package is not uploaded to Debian.
    ("initial-upload-closes-no-bugs", "not a Debian archive upload (no ITP bug)"),
];

/// Why a tsproxy.conf does not list every key as `#KEY=EXAMPLE` (exactly once, with an example
/// the parser and the configuration accept), or holds a key the parser does not know, or sets
/// anything (the shipped file must change nothing until edited). `None`: it is complete.
fn conf_incomplete(text: &str) -> Option<String> {
    let parsed = match conffile::parse("/etc/tsproxy.conf", text.as_bytes(), 0, 0o644) {
        Ok(f) => f,
        Err(e) => return Some(format!("does not parse: {e}")),
    };
    if !parsed.settings.is_empty() {
        return Some(format!("sets {:?}: every key must be commented out", parsed.settings.iter().map(|s| s.key).collect::<Vec<_>>()));
    }
    // Every `#KEY=` line names a key the parser knows.
    for l in text.lines() {
        if let Some((k, _)) = l.strip_prefix('#').and_then(|r| r.split_once('=')) {
            if !k.is_empty() && k.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') && !KEYS.contains(&k) {
                return Some(format!("lists {k}, which the parser does not know"));
            }
        }
    }
    for key in KEYS {
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(&format!("#{key}="))).collect();
        if lines.len() != 1 {
            return Some(format!("has {} lines #{key}=", lines.len()));
        }
        // Uncommented alone, the example is one valid setting of that key.
        let one = &lines[0][1..];
        let f = match conffile::parse("/etc/tsproxy.conf", format!("{one}\n").as_bytes(), 0, 0o644) {
            Ok(f) => f,
            Err(e) => return Some(format!("{one:?} uncommented does not parse: {e}")),
        };
        if f.settings.len() != 1 || f.settings[0].key != *key {
            return Some(format!("{one:?} uncommented is not one {key} setting"));
        }
        // The proxychains example names a file that need not exist here: parsed above, not read.
        if *key != "TSPROXY_PROXYCHAINS_CONF" {
            if let Err(e) = Config::from_sources(|_| None, &[f], false) {
                return Some(format!("{one:?} uncommented is refused: {e}"));
            }
        }
    }
    None
}

/// packaging/build-deb.sh --gen: the generated tsproxy.conf and man pages, without cargo.
fn generated(tag: &str) -> Option<(Scratch, String)> {
    if !tools(&["dpkg-parsechangelog", "dpkg-architecture"], "packaging text (dpkg-dev)") {
        return None;
    }
    let s = Scratch::new(tag);
    let mut c = Command::new("bash");
    c.arg(BUILD_DEB).arg("--gen").arg(&s.0);
    let r = bounded(c, 60);
    assert!(r.ok(), "build-deb.sh --gen failed:\n{}", r.text());
    let conf = std::fs::read_to_string(s.0.join("tsproxy.conf")).unwrap();
    Some((s, conf))
}

#[test]
fn conf_lists_every_key() {
    let Some((s, conf)) = generated("gen-conf") else { return };
    assert_eq!(conf_incomplete(&conf), None, "generated tsproxy.conf:\n{conf}");
    // Controls: the check notices a key missing, a key listed twice, a key unknown to the
    // parser, a bad example, and a key left uncommented.
    let last = KEYS[KEYS.len() - 1];
    let without: String = conf.lines().filter(|l| !l.starts_with(&format!("#{last}="))).map(|l| format!("{l}\n")).collect();
    assert!(conf_incomplete(&without).is_some_and(|w| w.contains(last)), "a missing {last} must be noticed");
    assert!(conf_incomplete(&format!("{conf}#{last}=x\n")).is_some(), "a key listed twice must be noticed");
    assert!(conf_incomplete(&format!("{conf}#TSPROXY_NO_SUCH_KEY=1\n")).is_some_and(|w| w.contains("TSPROXY_NO_SUCH_KEY")));
    let bad = conf.replace("#TSPROXY_LOG=error", "#TSPROXY_LOG=loud");
    assert_ne!(bad, conf, "the example of TSPROXY_LOG changed: adjust this control");
    assert!(conf_incomplete(&bad).is_some_and(|w| w.contains("refused")), "a bad example must be noticed");
    assert!(conf_incomplete(&format!("{conf}TSPROXY_LOG=debug\n")).is_some_and(|w| w.contains("commented")));

    // tsproxy.conf(5) has an entry for every key.
    let man5 = std::fs::read_to_string(s.0.join("tsproxy.conf.5")).unwrap();
    for key in KEYS {
        assert!(man5.contains(&format!(".TP\n.B {key}\n")), "tsproxy.conf(5) has no entry for {key}");
    }
    assert!(!man5.contains("@KEYS@") && !man5.contains("@VERSION@"), "placeholders left in tsproxy.conf(5)");
}

#[test]
fn every_option_documented_and_completed() {
    let Some((s, _)) = generated("gen-opts") else { return };
    let out = Command::new(common::launcher()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    // Every long option of the launcher and its subcommands (the usage lines name theirs).
    let mut opts = BTreeSet::new();
    for (i, _) in help.match_indices("--") {
        let name: String = help[i + 2..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '-').collect();
        if name.len() > 1 {
            opts.insert(name.trim_end_matches('-').to_string());
        }
    }
    for must in ["proxy", "proxychains-conf", "supervisor", "allow-unprotected", "unset", "shell", "system", "lib", "json", "socket", "version"] {
        assert!(opts.contains(must), "--{must} not found in tsproxy --help: the extraction is broken\n{help}");
    }
    let man1 = std::fs::read_to_string(s.0.join("tsproxy.1")).unwrap();
    let comp = |f: &str| std::fs::read_to_string(Path::new(MANIFEST).join("packaging/completions").join(f)).unwrap();
    let (bash, zsh, fish) = (comp("tsproxy.bash"), comp("_tsproxy"), comp("tsproxy.fish"));
    for o in &opts {
        assert!(man1.contains(&format!("\\-\\-{}", o.replace('-', "\\-"))), "tsproxy(1) does not document --{o}");
        assert!(bash.contains(&format!("--{o}")), "the bash completion lacks --{o}");
        assert!(zsh.contains(&format!("--{o}")), "the zsh completion lacks --{o}");
        assert!(fish.contains(&format!("-l {o}")), "the fish completion lacks --{o}");
    }
    for sub in ["env", "install", "uninstall", "doctor"] {
        assert!(bash.contains(sub) && zsh.contains(sub) && fish.contains(&format!("-a {sub}")), "a completion lacks the subcommand {sub}");
    }
}

/// Run `script` in the rootfs, without any network (the package needs none).
fn in_root(root: &Path, script: &str, secs: u64) -> Run {
    debian::in_root(root, Net::Isolated, script, &[], secs)
}

/// Every path under `root` (relative), without the places that change whatever is installed:
/// dpkg's own database and log, apt's and debconf's caches, /proc, /tmp.
fn tree(root: &Path) -> BTreeSet<String> {
    const VOLATILE: &[&str] = &["proc", "tmp", "var/lib/dpkg", "var/log", "var/cache/debconf", "var/cache/ldconfig", "etc/ld.so.cache"];
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if VOLATILE.iter().any(|v| rel == *v || rel.starts_with(&format!("{v}/"))) {
                continue;
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
            out.insert(rel);
        }
        assert!(out.len() < 200_000, "the rootfs tree is unexpectedly large");
    }
    out
}

#[test]
fn package_installs_runs_and_purges_on_fresh_debian() {
    if !debian::root("the package test") {
        return;
    }
    if !tools(&["dpkg-deb", "dpkg-shlibdeps", "dpkg-architecture", "mmdebstrap", "lintian", "unshare", "chroot", "python3"], "package test") {
        return;
    }
    let t0 = Instant::now();
    let phase = |what: &str| eprintln!("deb test: {what} at {:.1} s", t0.elapsed().as_secs_f64());

    // `make deb` itself (a release build: minutes the first time, seconds when fresh).
    let deb = build_deb();
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    let version = format!("{}-1", env!("CARGO_PKG_VERSION"));
    let arch = String::from_utf8(Command::new("dpkg").arg("--print-architecture").output().unwrap().stdout).unwrap().trim().to_string();
    assert_eq!(name, format!("tsproxy_{version}_{arch}.deb"));
    phase("built");

    // Control fields.
    let field = |f: &str| String::from_utf8(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(f).output().unwrap().stdout).unwrap().trim().to_string();
    assert_eq!(field("Package"), "tsproxy");
    assert_eq!(field("Version"), version);
    assert_eq!(field("Architecture"), arch);
    let depends = field("Depends");
    assert!(depends.contains("libc6 (>= 2."), "Depends without a versioned libc6: {depends}");
    // The control area: no script runs at install; prerm only guards removal (below).
    let ctl = Scratch::new("ctl");
    let st = Command::new("dpkg-deb").arg("-e").arg(&deb).arg(ctl.0.join("DEBIAN")).status().unwrap();
    assert!(st.success());
    let members: BTreeSet<String> = std::fs::read_dir(ctl.0.join("DEBIAN")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(members, ["conffiles", "control", "md5sums", "prerm"].map(String::from).into(), "control area");

    // lintian: no error, no warning but the accepted ones.
    let mut c = Command::new("lintian");
    c.arg("--no-cfg").arg(&deb);
    let lint = bounded(c, 180);
    assert!(!lint.timed_out, "lintian timed out");
    let mut warnings = Vec::new();
    for l in lint.stdout.lines().chain(lint.stderr.lines()) {
        assert!(!l.starts_with("E:"), "lintian error: {l}\n{}", lint.text());
        if l.starts_with("W:") {
            let tag = l.split_whitespace().nth(2).unwrap_or("");
            assert!(LINTIAN_ACCEPTED.iter().any(|(t, _)| *t == tag), "lintian warning not accepted: {l}");
            warnings.push(tag.to_string());
        }
    }
    eprintln!("deb test: lintian warnings (accepted): {warnings:?}");
    phase("lintian");

    // A fresh rootfs of the host's suite.
    let suite = suite();
    let tar = rootfs_tarball(&suite, &[]);
    phase(&format!("rootfs tarball {} ready", tar.display()));
    let s = Scratch::new("root");
    let root = s.0.join("root");
    unpack(&tar, &root);
    std::fs::copy(&deb, root.join("tmp").join(&name)).unwrap();
    phase("rootfs unpacked");
    let before = tree(&root);
    assert!(before.contains("usr/bin/dpkg") && !before.iter().any(|p| p.contains("tsproxy")), "not a fresh Debian rootfs");
    assert!(!root.join("etc/ld.so.preload").exists());

    let r = in_root(&root, &format!("dpkg -i /tmp/{name}"), 120);
    assert!(r.ok(), "dpkg -i failed:\n{}", r.text());
    assert!(!root.join("etc/ld.so.preload").exists(), "installing the package created /etc/ld.so.preload");
    phase("installed");

    // What dpkg says it installed, against the files the package must have.
    let ma = multiarch();
    let libdir = format!("/usr/lib/{ma}/tsproxy");
    let lib = format!("{libdir}/libtsproxy.so");
    let r = in_root(&root, "dpkg -L tsproxy", 30);
    assert!(r.ok(), "{}", r.text());
    let listed: BTreeSet<&str> = r.stdout.lines().collect();
    for f in [
        "/usr/bin/tsproxy",
        lib.as_str(),
        "/etc/tsproxy.conf",
        "/usr/share/man/man1/tsproxy.1.gz",
        "/usr/share/man/man5/tsproxy.conf.5.gz",
        "/usr/share/bash-completion/completions/tsproxy",
        "/usr/share/zsh/vendor-completions/_tsproxy",
        "/usr/share/fish/vendor_completions.d/tsproxy.fish",
        "/usr/share/doc/tsproxy/copyright",
        "/usr/share/doc/tsproxy/changelog.Debian.gz",
    ] {
        assert!(listed.contains(f), "dpkg -L lacks {f}:\n{}", r.stdout);
        assert!(root.join(&f[1..]).is_file(), "{f} is listed but not there");
    }
    let r = in_root(&root, "dpkg-query -W -f '${Conffiles}' tsproxy", 30);
    assert!(r.ok() && r.stdout.contains("/etc/tsproxy.conf "), "/etc/tsproxy.conf is not a conffile:\n{}", r.text());
    let conf = std::fs::read_to_string(root.join("etc/tsproxy.conf")).unwrap();
    assert_eq!(conf_incomplete(&conf), None, "the installed /etc/tsproxy.conf");

    // Man pages: gzip'd roff with the right title, read without man (not in minbase).
    for (page, title) in [("man1/tsproxy.1.gz", ".TH TSPROXY 1 "), ("man5/tsproxy.conf.5.gz", ".TH TSPROXY.CONF 5 ")] {
        let r = in_root(&root, &format!("gzip -dc /usr/share/man/{page}"), 30);
        assert!(r.ok() && r.stdout.starts_with(title), "/usr/share/man/{page}:\n{}", r.text());
    }

    // The launcher.
    let r = in_root(&root, "tsproxy --version", 30);
    assert!(r.ok(), "{}", r.text());
    assert_eq!(r.stdout.trim(), format!("tsproxy {}", env!("CARGO_PKG_VERSION")));

    // The library loads from the package's directory (it is in the process's maps); a path
    // that does not exist is reported by the loader (the control: a failure would be seen).
    let r = in_root(&root, &format!("LD_PRELOAD={lib} /bin/true && LD_PRELOAD={lib} cat /proc/self/maps"), 30);
    assert!(r.ok() && r.stderr.is_empty(), "LD_PRELOAD={lib}:\n{}", r.text());
    assert!(r.stdout.contains(&lib), "{lib} is not in the maps of a process that preloads it:\n{}", r.stdout);
    let r = in_root(&root, &format!("LD_PRELOAD={libdir}/missing.so /bin/true"), 30);
    assert!(r.stderr.contains("cannot be preloaded"), "control: the loader did not report a missing library:\n{}", r.text());
    // The launcher finds it there by itself (its ../lib/<multiarch>/tsproxy/).
    let r = in_root(&root, "tsproxy --supervisor=off cat /proc/self/maps", 30);
    assert!(r.ok() && r.stdout.contains(&lib), "tsproxy did not preload {lib}:\n{}", r.text());
    let r = in_root(&root, "tsproxy env --shell sh", 30);
    assert!(r.ok() && r.stdout.contains(&lib), "tsproxy env does not name {lib}:\n{}", r.text());

    // doctor: no tailscaled, no proxy here (an empty network namespace). It must say so, as
    // JSON, and exit 1.
    let r = in_root(&root, "tsproxy doctor --json", 60);
    assert_eq!(r.code(), Some(1), "doctor must fail without tailscaled and a proxy:\n{}", r.text());
    let py = "import json,sys\nd=json.load(sys.stdin)\nassert d['ok'] is False\nfor c in d['checks']: print(c['check'], c['status'], c['detail'], sep='\\t')";
    let mut c = Command::new("python3");
    c.args(["-c", py]);
    let parsed = pipe_into(c, &r.stdout);
    assert!(parsed.status.success(), "doctor --json is not the expected JSON:\n{}\n{}", r.stdout, String::from_utf8_lossy(&parsed.stderr));
    let checks = String::from_utf8(parsed.stdout).unwrap();
    let status_of =
        |name: &str| checks.lines().filter(|l| l.starts_with(&format!("{name}\t"))).map(|l| l.split('\t').nth(1).unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(status_of("upstream"), ["fail"], "the default upstream cannot answer here:\n{checks}");
    assert!(status_of("tailscaled").contains(&"fail".to_string()), "no tailscaled here:\n{checks}");
    assert!(checks.lines().any(|l| l.starts_with("library\tok\t") && l.contains(&lib)), "doctor's library check:\n{checks}");
    assert!(checks.lines().any(|l| l.starts_with("configuration\tok\t") && l.contains("/etc/tsproxy.conf")), "doctor reads the shipped conffile:\n{checks}");
    phase("checks in the rootfs");

    // System-wide mode is an explicit step and works with the packaged paths (root-owned
    // directories pass its checks). While it is on, removing the package is refused (the
    // loader would complain in every process) and the preload file is left alone; after
    // `uninstall --system` nothing of it is left.
    let r = in_root(&root, "tsproxy install --system && cat /proc/self/maps", 30);
    assert!(r.ok(), "{}", r.text());
    assert!(r.stdout.contains(&lib), "after install --system, cat did not load {lib}:\n{}", r.stdout);
    let preload = std::fs::read(root.join("etc/ld.so.preload")).unwrap();
    let r = in_root(&root, "dpkg -r tsproxy", 60);
    assert!(!r.ok() && r.stderr.contains("tsproxy uninstall --system"), "removal with the library in /etc/ld.so.preload must be refused:\n{}", r.text());
    assert_eq!(std::fs::read(root.join("etc/ld.so.preload")).unwrap(), preload, "the refused removal changed /etc/ld.so.preload");
    let r = in_root(&root, "dpkg -s tsproxy | grep -x 'Status: [a-z]* ok installed' && tsproxy uninstall --system", 30);
    assert!(r.ok(), "after the refused removal the package must still be installed and working:\n{}", r.text());
    assert!(!root.join("etc/ld.so.preload").exists(), "uninstall --system left /etc/ld.so.preload");

    // Purge: back to the tree before the install.
    let installed = tree(&root);
    assert!(installed.contains("usr/bin/tsproxy") && installed.len() > before.len(), "control: the tree walk sees the package's files");
    let r = in_root(&root, "dpkg --purge tsproxy", 60);
    assert!(r.ok(), "dpkg --purge failed:\n{}", r.text());
    let after = tree(&root);
    let left: Vec<&String> = after.difference(&before).collect();
    let gone: Vec<&String> = before.difference(&after).collect();
    assert!(left.is_empty() && gone.is_empty(), "dpkg --purge left {left:?} and removed {gone:?}");
    let r = in_root(&root, "dpkg -s tsproxy", 30);
    assert!(!r.ok(), "dpkg still knows tsproxy after the purge:\n{}", r.text());
    phase("purged");
}

fn pipe_into(mut c: Command, input: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut ch = c.spawn().unwrap();
    ch.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    ch.wait_with_output().unwrap()
}

//! Where the orphaned supervisor goes: the launcher as pid 1 of a pid namespace, or as a child
//! subreaper.
//!
//! Why. The supervisor's process is orphaned at once (supervisor/spawn.rs) so that it is
//! nobody's child: the kernel hands it to the nearest subreaper, or to the namespace's init.
//! If that is the launcher itself, then after the exec it is the command: the supervisor would
//! be the command's child, and a command that reaps every child until none is left (an init,
//! a process manager, `while os.wait()`) would wait for the supervisor, which waits for the
//! tree, which includes the command: a deadlock at the end.
//!
//! - A subreaper (PR_SET_CHILD_SUBREAPER survives exec) stops being one while the supervisor is
//!   orphaned, so that it goes to the next reaper up, and is one again before the exec
//!   (`subreaper_off`, `subreaper_on`): the command keeps its pid and its flag.
//! - Pid 1 of a pid namespace (a container's `ENTRYPOINT ["tsproxy", ...]` without `--init`)
//!   cannot hand anything up. The launcher forks, once the supervisor is sure to run; the
//!   parent stays, as a minimal init (what `docker run --init` puts there): it reaps every
//!   process handed to it, the supervisor included, passes every signal it gets on to the
//!   command, and ends with the command's status once the command has ended (which ends the
//!   namespace, as the command's end would have). The child goes on as the launcher and execs
//!   the command, now pid 2. `--supervisor=off` keeps the command as pid 1 itself.
//!
//! Process groups: the init and the command are never in one group, so that a signal for the
//! command's group (a terminal's Ctrl-C, a shell's `kill %1`, the command's own `kill 0`)
//! reaches it once, not a second time through the init; and the command keeps the terminal
//! the launcher had. Which of the two moves depends on who leads the launcher's group:
//! - The launcher does not (`unshare -fp tsproxy CMD` typed in a shell, in a pipeline, as a
//!   background job): the command stays in it — the caller's job, with the terminal, job
//!   control and the rest of the pipeline exactly as without the init — and the init leaves
//!   it for a group of its own before the command may run.
//! - It does (a container's pid 1, made a session leader by the runtime, as with
//!   `docker run -it`): a session leader cannot leave its group, so the command gets a group
//!   of its own, and the terminal's foreground if the init's group had it (as tini does); the
//!   init gives the terminal back to its group when the command has ended.
//!
//! The init holds nothing of the command's: /dev/null on 0-2, every other descriptor closed
//! but the terminal it handed over (to take it back), / as its working directory, its argument
//! area blanked (a proxy password may be there).

/// Are we pid 1 of our pid namespace?
pub fn pid1() -> bool {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() == 1 }
}

/// If this process is a child subreaper, stop being one and say so.
pub fn subreaper_off() -> bool {
    let mut v: libc::c_int = 0;
    // SAFETY: PR_GET_CHILD_SUBREAPER writes one int through the pointer given.
    let r = unsafe { libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut v as *mut libc::c_int) };
    if r != 0 || v == 0 {
        return false;
    }
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 0 as libc::c_ulong) == 0 }
}

/// Be a child subreaper again (after `subreaper_off`).
pub fn subreaper_on() {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) };
}

/// Fork: return in the child, which goes on as the launcher; the parent becomes the init and
/// never returns. `args` is the argument area to blank in the init.
pub fn split(args: Option<(usize, usize)>) {
    // Every signal blocked across the fork: the init takes them with sigwaitinfo from its
    // first instruction on (a blocked signal is queued even for a namespace's init, which
    // otherwise drops those it has no handler for); the child restores the mask at once.
    // SAFETY: sigset_t is plain data; sigfillset and sigprocmask write into the sets given.
    let (all, old) = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, &mut old);
        (all, old)
    };
    // SAFETY: getpgrp and getpid have no preconditions.
    let leader = unsafe { libc::getpgrp() == libc::getpid() };
    // Leading our group (module comment): the terminal our group has in the foreground, if
    // any, goes to the command's group and comes back at the end.
    let tty = if leader { foreground_tty() } else { -1 };
    // Not leading it: the command waits (on this pipe's EOF) until the init has left the
    // group, so that no signal for the group reaches both. No pipe: it does not wait.
    let mut gate = [-1; 2];
    if !leader {
        // SAFETY: pipe2 writes two descriptors into the array.
        if unsafe { libc::pipe2(gate.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            gate = [-1; 2];
        }
    }
    // SAFETY: the launcher is single threaded here; the child only returns into it.
    let child = unsafe { libc::fork() };
    if child < 0 {
        crate::die(1, format!("tsproxy as pid 1: fork: {}", std::io::Error::last_os_error()));
    }
    if child == 0 {
        // SAFETY: setpgid, getpgrp and tcsetpgrp have no memory arguments (tcsetpgrp with
        // SIGTTOU still blocked, so that it does not stop us); read into a one-byte buffer on
        // this stack; close of our own descriptors; restoring the mask saved above.
        unsafe {
            if leader {
                libc::setpgid(0, 0);
                if tty >= 0 {
                    libc::tcsetpgrp(tty, libc::getpgrp());
                }
            } else if gate[0] >= 0 {
                libc::close(gate[1]);
                let mut b = 0u8;
                while libc::read(gate[0], (&mut b as *mut u8).cast(), 1) < 0 && *libc::__errno_location() == libc::EINTR {}
                libc::close(gate[0]);
            }
            libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        }
        return;
    }
    if !leader {
        // SAFETY: setpgid has no memory arguments; closing the pipe's ends opens the gate.
        unsafe {
            libc::setpgid(0, 0);
            if gate[0] >= 0 {
                libc::close(gate[0]);
                libc::close(gate[1]);
            }
        }
    }
    // SAFETY: our own argument area (args_area), which nothing reads any more in this process.
    unsafe { crate::blank_args(args.unwrap_or((0, 0)), b"tsproxy-init") };
    let tty = detach(tty);
    run(child, &all, tty)
}

/// One of descriptors 0-2 that is a terminal whose foreground is our process group, or -1.
fn foreground_tty() -> i32 {
    // SAFETY: tcgetpgrp and getpgrp have no memory arguments.
    (0..3).find(|&fd| unsafe { libc::tcgetpgrp(fd) == libc::getpgrp() }).unwrap_or(-1)
}

/// Hold nothing of the command's (module comment) but the terminal `tty` (-1: none), which is
/// kept above 2; its descriptor there is returned.
fn detach(tty: i32) -> i32 {
    // SAFETY: chdir and open with NUL-terminated paths; fcntl, dup2 and close_range on our own
    // table (the /dev/null spare, if above 2, closes with it).
    unsafe {
        libc::chdir(c"/".as_ptr());
        let tty = if tty >= 0 { libc::fcntl(tty, libc::F_DUPFD_CLOEXEC, 3) } else { -1 };
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null >= 0 {
            for fd in 0..3 {
                if fd != null {
                    libc::dup2(null, fd);
                }
            }
        }
        if tty > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (tty - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (tty.max(2) + 1) as u32, u32::MAX, 0u32);
        tty
    }
}

fn run(child: libc::pid_t, all: &libc::sigset_t, tty: i32) -> ! {
    loop {
        // SAFETY: siginfo_t is plain data; sigwaitinfo writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: a valid set and a valid out pointer.
        let sig = unsafe { libc::sigwaitinfo(all, &mut info) };
        if sig < 0 {
            continue;
        }
        if sig == libc::SIGCHLD {
            reap(child, tty);
            continue;
        }
        // Should our group still be the command's (setpgid failed), the kernel's signals for
        // it (a terminal's) reached the command already.
        // SAFETY: getpgid has no memory arguments.
        let same_group = unsafe { libc::getpgid(child) == libc::getpgid(0) };
        if info.si_code == libc::SI_KERNEL && same_group {
            continue;
        }
        // SAFETY: kill has no memory arguments; the command may be gone (ESRCH: ignored).
        unsafe { libc::kill(child, sig) };
    }
}

/// Reap everything handed to us; once the command is among them, end as it ended.
fn reap(child: libc::pid_t, tty: i32) {
    let mut ended = None;
    loop {
        let mut st = 0;
        // SAFETY: waitpid with a valid status pointer.
        let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG | libc::__WALL) };
        if r <= 0 {
            break;
        }
        if r == child {
            ended = Some(st);
        }
    }
    if let Some(st) = ended {
        end_as(st, tty);
    }
}

fn end_as(st: libc::c_int, tty: i32) -> ! {
    if tty >= 0 {
        // The terminal back to our group, as before the command (every signal is blocked
        // here, SIGTTOU included, so this works from the background).
        // SAFETY: tcsetpgrp and getpgrp have no memory arguments.
        unsafe { libc::tcsetpgrp(tty, libc::getpgrp()) };
    }
    // As a namespace's pid 1 we cannot die of the command's signal (the kernel does not let
    // pid 1 die of its own signals): 128 + n, as a shell reports it and as tini does.
    let code = if libc::WIFSIGNALED(st) {
        128 + libc::WTERMSIG(st)
    } else if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else {
        1
    };
    // SAFETY: _exit has no preconditions.
    unsafe { libc::_exit(code) }
}

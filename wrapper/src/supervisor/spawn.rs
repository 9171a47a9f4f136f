//! Starting the supervisor process without a fork: a process that shares the launcher's memory
//! and descriptor table and sleeps until the launcher has exec'd the command; from then on it
//! owns that memory alone, like a fork taken at the moment of the exec.
//!
//! Why not fork. The supervisor must be a separate process that outlives the exec, and the
//! command's start-up waits for whatever the launcher does before the exec. A fork copies the
//! launcher's page tables, and the former design forked twice (so that the supervisor was
//! nobody's child), waited for the middle process and handed the listener over a socket: about
//! 400 µs on the command's path, a third of a process start. `clone(CLONE_VM | CLONE_FILES)`
//! costs what starting a thread costs, and the supervisor's own start (reading resolv.conf,
//! threads, sockets) runs after the exec, beside the command instead of before it.
//!
//! The shape: the launcher clones A as soon as it knows the supervisor may be wanted (before it
//! reads its configuration); A clones B (the supervisor) and exits; the launcher reaps A just
//! before its exec (`reap`; A has usually ended by then, it ran beside the launcher's own
//! work). B, orphaned by A, is reparented at once to init (or the nearest subreaper), as the
//! old double fork's grandchild was: it is not the command's child, so no `wait` of the
//! command (`__WALL` included: strace, reapers) ever waits for it, and no `pkill -P` or
//! child-killing loop of the command reaches it.
//!
//! Why it is correct.
//! - The gate. Before cloning, the launcher names `Start::gate` (1) as its clear-child-tid word
//!   (`set_tid_address`). When the launcher's exec passes its point of no return, or when it
//!   exits (or is killed), the kernel writes 0 there and wakes a futex waiter (`mm_release`,
//!   done because the address space has other users) before the launcher leaves the address
//!   space. B waits on that word; nothing else wakes it for good.
//! - Before the gate opens, A and B share the launcher's thread pointer, so errno and every
//!   thread-local are the launcher's: they load atomics and make system calls with the bare
//!   instruction (`raw`), which writes no errno, on their own stacks — except A's call of
//!   glibc's `clone`, which writes errno only if the clone fails (B then never exists and the
//!   launcher gives up the supervisor).
//! - The listener is recorded (`arm`) only immediately before each `execve` system call, with
//!   argv and envp already built, and cleared (`disarm`) when it returns. If the launcher ends
//!   any other way — an error, a signal, the OOM killer, at any instruction — B wakes, finds no
//!   listener and exits without touching the heap: it never runs on memory that a lock or an
//!   allocation was left in the middle of.
//! - After the gate (with a listener), no thread of the launcher runs in this address space any
//!   more: the launcher was single threaded and inside `execve`, holding no lock (it builds
//!   argv and envp itself and calls the system call directly: std's `Command::exec` would hold
//!   the environment lock across it). The supervisor's work runs in a fresh thread, with a
//!   thread descriptor of its own (B's is the launcher's main thread's, with the launcher's tid
//!   in it).
//! - Sessions and signals: B leaves the launcher's session (`setsid`) and ignores the terminal's
//!   and the pipe's signals (SIGINT, SIGQUIT, SIGHUP, SIGTSTP, SIGTTIN, SIGTTOU, SIGPIPE) first
//!   thing, with every signal blocked since before its clone (the launcher blocks them around
//!   it), so a Ctrl-C or `kill 0` at the command's start cannot take it down; it then restores
//!   the launcher's original mask.
//! - The descriptor table is shared (CLONE_FILES): the listener that seccomp() gives the
//!   launcher after the clone is in B's table too. The exec gives the command a copy of the
//!   table and closes the close-on-exec descriptors (listener, responder) in that copy only.
//! - After the gate B works lazily: it blanks the launcher's arguments, closes what the command
//!   was given (stderr too), leaves the working directory and waits (`prelude`, `idle`: bare system calls) until the tree makes a socket
//!   call the filter stops or sends the responder a datagram. Only then does the supervisor
//!   start its thread, read resolv.conf and make its sockets. A command that never needs it
//!   (most do not) costs the machine one sleeping process and one `exit_group`: measured, about
//!   300 µs less CPU time per launch than starting the supervisor at once.
//! - A and B are under neither the filter (installed afterwards, on the launcher's thread only,
//!   without TSYNC) nor no_new_privs.
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, Ordering};

/// B's stack: its main thread only waits and joins, the supervisor's body runs in a thread of
/// its own; pages are committed only when touched (MAP_NORESERVE).
const STACK_B: usize = 1 << 20;
/// A's stack: A only calls glibc's clone.
const STACK_A: usize = 64 << 10;
const PAGE: usize = 4096;

/// The supervisor's body, given the listener.
pub type Main = Box<dyn FnOnce(i32) + Send>;

/// The block the launcher, A and B see. Leaked by the launcher (it execs right after), so it
/// stays valid for B's whole life.
pub struct Start {
    /// 1 until the launcher has exec'd or exited; the kernel writes the 0.
    gate: AtomicU32,
    /// The seccomp listener while the launcher is inside `execve`, else -1.
    listener: AtomicI32,
    /// The listener once the filter is installed (what `arm` records).
    armed: AtomicI32,
    /// B's pid, written by A (-1: A could not clone it).
    b_pid: AtomicI32,
    /// The DNS responder's socket (-1: none), kept open beside the listener and watched with it.
    responder: AtomicI32,
    /// The launcher's signal mask before it blocked everything for the clone (B restores it).
    mask: u64,
    b_stack: usize,
    /// The launcher's argument strings (what /proc/PID/cmdline shows): start and end, or 0, 0.
    args: (usize, usize),
    /// The launcher's pid: the command's after the exec, the root of the supervised tree.
    root: i32,
    /// The supervisor, prepared by the launcher; taken by B only, after the gate.
    main: UnsafeCell<Option<Main>>,
}

impl Start {
    /// The supervisor's body and the responder socket it serves. Called by the launcher
    /// before `set_listener` and the exec.
    pub fn set_main(&self, main: Main, responder: i32) {
        // SAFETY: only the launcher writes `main`, and only before `arm`; B reads it only after
        // the gate with a listener, that is after `arm`'s release store, which follows this.
        unsafe { *self.main.get() = Some(main) };
        self.responder.store(responder, Ordering::Release);
    }

    /// The listener B will run with if the launcher's exec succeeds.
    pub fn set_listener(&self, fd: i32) {
        self.armed.store(fd, Ordering::Release);
    }
}

/// This launcher's block, for `arm`/`disarm`/`reap`.
static STARTED: AtomicPtr<Start> = AtomicPtr::new(std::ptr::null_mut());

fn started() -> Option<&'static Start> {
    // SAFETY: null or the leaked Start of spawn(), valid for the process's life.
    unsafe { STARTED.load(Ordering::Acquire).as_ref() }
}

/// Right before an `execve` system call: if it succeeds, B runs the supervisor. Nothing may
/// allocate or lock between this and the system call.
pub fn arm() {
    if let Some(s) = started() {
        s.listener.store(s.armed.load(Ordering::Relaxed), Ordering::Release);
    }
}

/// `execve` returned (it failed): if the launcher now ends, B ends without working.
pub fn disarm() {
    if let Some(s) = started() {
        s.listener.store(-1, Ordering::Release);
    }
}

/// Reap A (it exits as soon as it has cloned B) and return B's pid, or None if B could not be
/// started. Called before the exec: the command must not inherit a child it never made.
pub fn reap() -> Option<i32> {
    let s = started()?;
    let a = A_PID.load(Ordering::Acquire);
    if a > 0 {
        let mut st = 0;
        // SAFETY: waiting for our own clone child A (no exit signal: __WALL); st is valid.
        while unsafe { libc::waitpid(a, &mut st, libc::__WALL) } < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {}
        A_PID.store(0, Ordering::Release);
    }
    let b = s.b_pid.load(Ordering::Acquire);
    (b > 0).then_some(b)
}

static A_PID: AtomicI32 = AtomicI32::new(0);

/// Start A, which starts B; B runs the body given later (`Start::set_main`) in a thread of its
/// own after the launcher's successful exec, once the command's tree first needs it (`idle`),
/// and exits when it returns. `args` is the launcher's argument area, which B blanks. Returns
/// the shared block.
pub fn spawn(args: Option<(usize, usize)>) -> Result<&'static Start, String> {
    if !cfg!(target_arch = "x86_64") {
        return Err("the supervisor's start is written for x86_64 only".into());
    }
    let stacks = map(STACK_A + STACK_B)?;
    // Every signal blocked around the clone: A and B start with it blocked and B ignores the
    // terminal's signals before it unblocks (module comment).
    let mut old: u64 = 0;
    let all: u64 = !0;
    // SAFETY: rt_sigprocmask with valid 8-byte sets (the kernel's sigset size on x86_64).
    unsafe { raw(libc::SYS_rt_sigprocmask, [libc::SIG_SETMASK as usize, &all as *const u64 as usize, &mut old as *mut u64 as usize, 8, 0, 0]) };
    let start: &'static Start = Box::leak(Box::new(Start {
        gate: AtomicU32::new(1),
        listener: AtomicI32::new(-1),
        armed: AtomicI32::new(-1),
        b_pid: AtomicI32::new(0),
        responder: AtomicI32::new(-1),
        mask: old,
        b_stack: stacks + STACK_A + STACK_B,
        args: args.unwrap_or((0, 0)),
        // SAFETY: getpid takes no arguments.
        root: unsafe { raw(libc::SYS_getpid, [0; 6]) } as i32,
        main: UnsafeCell::new(None),
    }));
    // The gate is named before the clone: if the launcher dies before its exec, the kernel
    // opens the gate (and B, finding no listener, exits) instead of leaving B asleep forever.
    // SAFETY: the word is in a leaked allocation, valid for the rest of this address space's
    // life; the kernel writes 0 to it (at exec or exit), nothing else.
    unsafe { raw(libc::SYS_set_tid_address, [start.gate.as_ptr() as usize, 0, 0, 0, 0, 0]) };
    // SAFETY: A's stack top is the end of A's part of our mapping (page aligned); `child_a`
    // follows the clone contract (its own stack, returns an int, after which glibc's wrapper
    // ends the task with the exit system call); its argument is the leaked Start. Exit signal
    // 0: the launcher reaps A with __WALL.
    let a = unsafe {
        libc::clone(child_a, (stacks + STACK_A) as *mut libc::c_void, libc::CLONE_VM | libc::CLONE_FILES, start as *const Start as *mut libc::c_void)
    };
    let clone_err = std::io::Error::last_os_error();
    // SAFETY: restoring the mask saved above.
    unsafe { raw(libc::SYS_rt_sigprocmask, [libc::SIG_SETMASK as usize, &old as *const u64 as usize, 0, 8, 0, 0]) };
    if a < 0 {
        return Err(format!("clone: {clone_err}"));
    }
    A_PID.store(a, Ordering::Release);
    STARTED.store(start as *const Start as *mut Start, Ordering::Release);
    Ok(start)
}

fn map(len: usize) -> Result<usize, String> {
    // SAFETY: an anonymous private mapping, no address hint; the result is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!("supervisor stacks: {}", std::io::Error::last_os_error()));
    }
    // Guard pages at the low end of both stacks: an overflow faults instead of writing into
    // the other stack.
    // SAFETY: pages of the mapping just made, which nothing uses yet.
    unsafe {
        libc::mprotect(p, PAGE, libc::PROT_NONE);
        libc::mprotect((p as usize + STACK_A) as *mut libc::c_void, PAGE, libc::PROT_NONE);
    }
    Ok(p as usize)
}

/// A: clone B and end. Runs beside the launcher with its thread pointer (see the module
/// comment): nothing but the clone and an atomic store.
extern "C" fn child_a(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the leaked Start that spawn() passed to clone.
    let start = unsafe { &*(arg as *const Start) };
    // SAFETY: B's stack top is the end of the mapping (page aligned); `child_b` never returns
    // (it ends with exit_group); its argument is the same leaked Start. Exit signal 0 until it
    // is reparented (then the kernel makes it SIGCHLD, for init).
    let b = unsafe { libc::clone(child_b, start.b_stack as *mut libc::c_void, libc::CLONE_VM | libc::CLONE_FILES, arg) };
    start.b_pid.store(if b > 0 { b } else { -1 }, Ordering::Release);
    0
}

/// B: the supervisor.
extern "C" fn child_b(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the leaked Start that spawn() passed to clone.
    let start = unsafe { &*(arg as *const Start) };
    // Before the gate: bare system calls only (the launcher's thread pointer).
    // SAFETY: setsid takes no arguments; rt_sigaction with a valid kernel sigaction (SIG_IGN,
    // no flags, empty mask) and no old-action pointer; rt_sigtimedwait with a valid 8-byte set,
    // no siginfo pointer and a valid zero timespec; rt_sigprocmask with a valid 8-byte set.
    unsafe {
        raw(libc::SYS_setsid, [0; 6]);
        let ign: [usize; 4] = [libc::SIG_IGN, 0, 0, 0];
        for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGHUP, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU, libc::SIGPIPE] {
            raw(libc::SYS_rt_sigaction, [sig as usize, ign.as_ptr() as usize, 0, 8, 0, 0]);
        }
        // Signals sent to the launcher's process group before the setsid (a `kill -TERM --
        // -PGID` at the command's start) are pending here, blocked since the clone: they were
        // meant for the command, and delivered once the mask is restored they would end the
        // supervisor (SIGTERM, SIGUSR1...) and leave the tree's socket calls failing. Taken
        // and dropped with a zero timeout; bounded (one per standard signal, a few queued
        // real-time ones).
        let all: u64 = !0;
        let zero: [i64; 2] = [0, 0];
        for _ in 0..256 {
            if raw(libc::SYS_rt_sigtimedwait, [&all as *const u64 as usize, 0, zero.as_ptr() as usize, 8, 0, 0]) < 0 {
                break;
            }
        }
        raw(libc::SYS_rt_sigprocmask, [libc::SIG_SETMASK as usize, &start.mask as *const u64 as usize, 0, 8, 0, 0]);
    }
    while start.gate.load(Ordering::Acquire) != 0 {
        // SAFETY: futex(word, FUTEX_WAIT, 1, NULL): the kernel reads the live 4-byte word; the
        // result (0, EAGAIN, EINTR) is ignored because the loop re-reads the word.
        unsafe { raw(libc::SYS_futex, [start.gate.as_ptr() as usize, libc::FUTEX_WAIT as usize, 1, 0, 0, 0]) };
    }
    let listener = start.listener.load(Ordering::Acquire);
    if listener < 0 {
        // The launcher ended without a successful exec: leave without touching its memory.
        // SAFETY: exit_group ends the process; nothing of ours runs after it.
        unsafe { raw(libc::SYS_exit_group, [0; 6]) };
    }
    // The launcher is gone from this address space. Still on its thread pointer: bare system
    // calls until the body's own thread.
    let responder = start.responder.load(Ordering::Acquire);
    // SAFETY: after the gate this process owns the address space alone (module comment).
    unsafe { prelude(start, listener, responder) };
    if !idle(listener, responder) {
        // The tree ended without a socket call or a question for us: nothing to tear down.
        // SAFETY: exit_group ends the process; nothing of ours runs after it.
        unsafe { raw(libc::SYS_exit_group, [0; 6]) };
    }
    // Ordinary code from here on, in a thread of its own.
    // SAFETY: the launcher never touches `main` after `set_main` and is gone; this is the only
    // reader, once.
    if let Some(main) = unsafe { (*start.main.get()).take() } {
        // A panic must not unwind out of this extern "C" frame: the supervisor's handlers catch
        // their own; anything left ends the supervisor, and the listener's close makes the
        // tree's pending socket calls fail (ENOSYS), never pass.
        let run = std::panic::AssertUnwindSafe(move || main(listener));
        // No thread to be had (a process limit): no supervisor; the listener closes with us
        // and the tree's notified calls fail (ENOSYS), never pass.
        if let Ok(t) = std::thread::Builder::new().name("tsproxy-supervisor".into()).spawn(move || std::panic::catch_unwind(run)) {
            let _ = t.join();
        }
    }
    // SAFETY: _exit has no preconditions; the supervisor's threads end with the process.
    unsafe { libc::_exit(0) }
}

/// What B does at once after the gate, before it waits: nothing of the launcher's that the
/// command's tree must not see held or shown stays.
/// - The launcher's argument area (what `ps` shows for this process, /proc/PID/cmdline) is
///   overwritten: `--proxy socks5://user:password@...` may be there, readable by every user,
///   for as long as the command runs.
/// - Every descriptor but the listener and the responder is closed: the table is the
///   launcher's as it was at the exec, the command's pipes and files included (close-on-exec
///   ones too, and its stderr: log lines go through the command's own descriptor 2,
///   stderr.rs); a pipe the command was given must reach EOF when the command's tree closes
///   it, not when the supervisor ends.
/// - Descriptors 0, 1 and 2 become /dev/null; the working directory becomes /.
///
/// Bare system calls and plain stores only (the launcher's thread pointer is still ours).
///
/// # Safety
/// Only after the gate, with the launcher gone from this address space: the argument area is
/// then this process's memory, which nothing else reads or writes.
unsafe fn prelude(start: &Start, listener: i32, responder: i32) {
    // SAFETY: the argument area is this process's memory now (the caller's contract).
    unsafe { crate::blank_args(start.args, b"tsproxy-supervisor") };
    // What descriptor 2 is now, for the log lines (stderr.rs): the supervisor keeps no
    // descriptor of it.
    // SAFETY: all-zero is a valid stat buffer; fstat writes into it, on this stack.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat of a descriptor number into a live stat buffer.
    let stderr = (unsafe { raw(libc::SYS_fstat, [2, &mut st as *mut libc::stat as usize, 0, 0, 0, 0]) } == 0).then_some((st.st_dev, st.st_ino));
    // A regular file's inode number is free for the next file once the file is deleted and
    // closed (ext4 hands it out again at once): an O_PATH reference keeps the inode, so
    // device and inode keep naming that file alone (stderr.rs). O_PATH, not a dup: no open
    // file description of the command's (its flock, its offset) is kept alive by us, and it
    // grants no read or write. Pipes, sockets and terminals are left alone: their numbers
    // are not handed out again in practice, and a reference to a pipe must not be held.
    let regular = stderr.is_some() && st.st_mode & libc::S_IFMT == libc::S_IFREG;
    let pin = if regular {
        // SAFETY: openat of a NUL-terminated path, O_PATH: opens nothing for I/O.
        let mut fd = unsafe {
            raw(libc::SYS_openat, [libc::AT_FDCWD as usize, c"/proc/self/fd/2".as_ptr() as usize, (libc::O_PATH | libc::O_CLOEXEC) as usize, 0, 0, 0])
        };
        if (0..3).contains(&fd) {
            // Descriptor 0 or 1 was closed: above 2, where /dev/null does not replace it.
            // SAFETY: fcntl F_DUPFD_CLOEXEC and close of our own descriptor.
            unsafe {
                let up = raw(libc::SYS_fcntl, [fd as usize, libc::F_DUPFD_CLOEXEC as usize, 3, 0, 0, 0]);
                raw(libc::SYS_close, [fd as usize, 0, 0, 0, 0, 0]);
                fd = up;
            }
        }
        fd as i32
    } else {
        -1
    };
    // Not the launcher's working directory: a directory held for the tree's whole life keeps
    // its file system from being unmounted.
    // SAFETY: chdir with a NUL-terminated path.
    unsafe { raw(libc::SYS_chdir, [c"/".as_ptr() as usize, 0, 0, 0, 0, 0]) };
    // Descriptors 0, 1 and 2 become /dev/null: the supervisor holds none of the command's stdin,
    // stdout or stderr, and no descriptor it makes later (a socket taken from the program)
    // can land on 0-2, where a stray write (a panic message) would go. Without /dev/null, the
    // root directory opened read-only does (a write there fails).
    // SAFETY: openat of NUL-terminated paths; dup2 of the result onto 0, 1 and 2; the spare
    // closed.
    unsafe {
        let mut null = raw(libc::SYS_openat, [libc::AT_FDCWD as usize, c"/dev/null".as_ptr() as usize, (libc::O_RDWR | libc::O_CLOEXEC) as usize, 0, 0, 0]);
        if null < 0 {
            null = raw(
                libc::SYS_openat,
                [libc::AT_FDCWD as usize, c"/".as_ptr() as usize, (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as usize, 0, 0, 0],
            );
        }
        if null >= 0 {
            for fd in 0..3usize {
                if null as usize != fd {
                    raw(libc::SYS_dup2, [null as usize, fd, 0, 0, 0, 0]);
                }
            }
            if null > 2 {
                raw(libc::SYS_close, [null as usize, 0, 0, 0, 0, 0]);
            }
        }
    }
    // The root, named by a pidfd for the log lines, as soon as possible after the exec: its pid
    // names another process only if the command has exited, been reaped and its pid been
    // reused since, and even then a line is written only into the very file that was the
    // command's stderr (stderr.rs).
    // SAFETY: pidfd_open of a pid, no flags.
    let pidfd = unsafe { raw(libc::SYS_pidfd_open, [start.root as usize, 0, 0, 0, 0, 0]) };
    let pidfd = if pidfd >= 0 { pidfd as i32 } else { -1 };
    // Without the pin (no /proc) a regular file's lines are dropped: its number could be the
    // next file's (stderr.rs).
    let stderr = stderr.filter(|_| pin >= 0 || !regular);
    super::stderr::remember(stderr, pidfd);
    let mut keep = [listener, responder, pidfd, pin];
    keep.sort_unstable();
    let mut next = 3i64;
    for k in keep {
        if k < 3 {
            continue;
        }
        if k as i64 > next {
            // SAFETY: close_range on a range of our own descriptor table.
            unsafe { raw(libc::SYS_close_range, [next as usize, (k - 1) as usize, 0, 0, 0, 0]) };
        }
        next = k as i64 + 1;
    }
    // SAFETY: as above, to the end of the table.
    unsafe { raw(libc::SYS_close_range, [next as usize, u32::MAX as usize, 0, 0, 0, 0]) };
}

/// Wait until the command's tree first needs the supervisor: a notification on the listener or
/// a datagram on the responder (true), or the tree is gone without either (false). Most
/// commands never make a socket call the filter stops; for them the supervisor never starts its
/// threads, reads no file and is gone a system call after the tree.
fn idle(listener: i32, responder: i32) -> bool {
    let mut fds = [libc::pollfd { fd: listener, events: libc::POLLIN, revents: 0 }, libc::pollfd { fd: responder, events: libc::POLLIN, revents: 0 }];
    let n = if responder >= 0 { 2 } else { 1 };
    loop {
        // SAFETY: poll on `n` valid pollfd entries of a live array, no timeout.
        let r = unsafe { raw(libc::SYS_poll, [fds.as_mut_ptr() as usize, n, -1isize as usize, 0, 0, 0]) };
        if r == -(libc::EINTR as isize) {
            continue;
        }
        if r < 0 {
            // Cannot wait: start the supervisor, which has its own loop and errors.
            return true;
        }
        if fds[0].revents & libc::POLLIN != 0 || (n == 2 && fds[1].revents & libc::POLLIN != 0) {
            return true;
        }
        if fds[0].revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            return false;
        }
    }
}

/// A system call with the bare `syscall` instruction: no errno, no libc (module comment).
///
/// # Safety
/// The arguments must be valid for system call `nr`.
unsafe fn raw(nr: libc::c_long, a: [usize; 6]) -> isize {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: forwarded to the caller.
    unsafe {
        tsproxy_core::sys::bare(nr, a.map(|v| v as libc::c_long)) as isize
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (nr, a);
        -(libc::ENOSYS as isize)
    }
}

//! Starting the supervisor process without a fork: a clone that shares the launcher's memory
//! and descriptor table and sleeps until the launcher has exec'd the command; from then on it
//! owns that memory alone, like a fork taken at the moment of the exec.
//!
//! Why not fork. The supervisor must be a separate process that outlives the exec, and the
//! command's start-up waits for whatever the launcher does before the exec. A fork copies the
//! launcher's page tables, and the former design forked twice (so that the supervisor was
//! nobody's child), waited for the middle process and handed the listener over a socket: about
//! 400 µs on the command's path, a third of a process start. `clone(CLONE_VM | CLONE_FILES)`
//! costs what starting a thread costs, and the child's own start (reading resolv.conf, threads,
//! sockets) runs after the exec, beside the command instead of before it.
//!
//! Why it is correct.
//! - The gate. Before cloning, the launcher names `Start::gate` (1) as its clear-child-tid word
//!   (`set_tid_address`). When the launcher's exec passes its point of no return, or when it
//!   exits, the kernel writes 0 there and wakes a futex waiter (`mm_release`, done because the
//!   address space has another user: the child) before the launcher leaves the address space.
//!   The child waits on that word; nothing else wakes it for good (spurious wake-ups and
//!   signals loop back into the wait).
//! - Before the gate opens, the child shares the launcher's thread pointer, so errno and every
//!   thread-local are the launcher's: the child only loads atomics and makes the futex system
//!   call with the bare instruction (`futex_wait`), which writes no errno, on its own stack.
//! - After the gate, no thread of the launcher runs in this address space any more: heap,
//!   globals and the main thread's thread-locals are the child's alone. The launcher was single
//!   threaded and inside the exec system call, so no lock of libc or std was held (std's
//!   environment lock is held for reading across an exec; the supervisor never writes the
//!   environment). glibc keeps the launcher's tid in the thread descriptor: it uses it for
//!   owner fields of error-checking mutexes and priority inheritance, which neither std nor the
//!   supervisor uses, and asks the kernel (gettid) where a signal is sent to the calling
//!   thread; `fork`, which the supervisor never calls, would set it right.
//! - The descriptor table is shared (CLONE_FILES): the listener that seccomp() gives the
//!   launcher after the clone is in the child's table too. The exec gives the command a copy of
//!   the table and closes the close-on-exec descriptors (listener, responder) in that copy only.
//! - The child is under neither the filter (installed afterwards, on the launcher's thread
//!   only, without TSYNC) nor no_new_privs.
//! - Exit signal 0: the command (the launcher's pid after the exec) is its parent but gets no
//!   SIGCHLD for it, and wait()/waitpid(-1) without __WALL never report it (a "clone" child).
//!   It normally outlives the command (it ends when every process of the tree is gone); when
//!   the command ends first the kernel reparents it, sets its exit signal to SIGCHLD, and init
//!   (or the nearest subreaper) reaps it.
//! - If the launcher fails after the clone (no filter, exec failed and it exits), the gate
//!   opens with no listener recorded and the child exits at once.
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, Ordering};

/// The child's stack: the supervisor's main thread runs on it for the rest of its life. Pages
/// are only committed when touched (MAP_NORESERVE).
const STACK: usize = 8 << 20;
const PAGE: usize = 4096;

/// The supervisor's body, given the listener.
pub type Main = Box<dyn FnOnce(i32)>;

/// The block both sides see. Leaked by the launcher (it execs right after), so it stays valid
/// for the child's whole life.
pub struct Start {
    /// 1 until the launcher has exec'd or exited; the kernel writes the 0.
    gate: AtomicU32,
    /// The seccomp listener, -1 until the launcher has installed the filter.
    listener: AtomicI32,
    /// The supervisor, prepared by the launcher; taken by the child only, after the gate.
    main: UnsafeCell<Option<Main>>,
}

impl Start {
    /// Record the listener: the child runs the supervisor only if this was called.
    pub fn set_listener(&self, fd: i32) {
        self.listener.store(fd, Ordering::Release);
    }
}

/// The block of this launcher's supervisor, for `cancel`.
static STARTED: AtomicPtr<Start> = AtomicPtr::new(std::ptr::null_mut());

/// The launcher will not exec after all (the command could not be exec'd): the child, woken
/// when the launcher exits, ends at once instead of starting a supervisor for nobody.
pub fn cancel() {
    let p = STARTED.load(Ordering::Acquire);
    // SAFETY: p is null or the leaked Start of spawn(), valid for the process's life.
    if let Some(start) = unsafe { p.as_ref() } {
        start.listener.store(-1, Ordering::Release);
    }
}

/// Clone the supervisor child; it runs `main(listener)` after the launcher's exec (if the
/// launcher recorded a listener) and exits when `main` returns. Returns the shared block and
/// the child's pid.
pub fn spawn(main: Main) -> Result<(&'static Start, i32), String> {
    if !cfg!(target_arch = "x86_64") {
        return Err("the supervisor's start is written for x86_64 only".into());
    }
    let start: &'static Start = Box::leak(Box::new(Start { gate: AtomicU32::new(1), listener: AtomicI32::new(-1), main: UnsafeCell::new(Some(main)) }));
    // SAFETY: an anonymous private mapping, no address hint; the result is checked.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(format!("supervisor stack: {}", std::io::Error::last_os_error()));
    }
    // A guard page at the low end: an overflow faults instead of writing into other memory.
    // SAFETY: the first page of the mapping just made, which nothing uses yet.
    unsafe { libc::mprotect(stack, PAGE, libc::PROT_NONE) };
    // The gate is named before the clone: if the launcher dies between the clone and its exec,
    // the kernel opens the gate (and the child, finding no listener, exits) instead of leaving
    // the child asleep forever.
    // SAFETY: the word is in a leaked allocation, valid for the rest of this address space's
    // life; the kernel writes 0 to it (at exec or exit), nothing else.
    unsafe { libc::syscall(libc::SYS_set_tid_address, start.gate.as_ptr()) };
    // SAFETY: the stack top is the end of our mapping (page aligned); `child` follows the clone
    // contract (runs on that stack and ends with _exit, never returning into the launcher's
    // frames); its argument is the leaked Start. Exit signal 0 and no CLONE_SETTLS: the module
    // comment says why sharing the launcher's thread pointer until the gate opens is sound.
    let pid =
        unsafe { libc::clone(child, (stack as *mut u8).add(STACK).cast(), libc::CLONE_VM | libc::CLONE_FILES, start as *const Start as *mut libc::c_void) };
    if pid < 0 {
        return Err(format!("clone: {}", std::io::Error::last_os_error()));
    }
    STARTED.store(start as *const Start as *mut Start, Ordering::Release);
    Ok((start, pid))
}

extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the leaked Start that spawn() passed to clone.
    let start = unsafe { &*(arg as *const Start) };
    while start.gate.load(Ordering::Acquire) != 0 {
        futex_wait(&start.gate, 1);
    }
    // The launcher is gone from this address space: ordinary code from here on.
    let listener = start.listener.load(Ordering::Acquire);
    // SAFETY: the launcher never touches `main` after spawn() and is gone; this is the only
    // reader, once.
    let main = unsafe { (*start.main.get()).take() };
    if let (Some(main), true) = (main, listener >= 0) {
        // A panic must not unwind out of this extern "C" frame (it would abort the process
        // with a message on the command's stderr): the supervisor's handlers catch their own;
        // anything left ends the supervisor quietly, and the listener's close makes the
        // tree's pending socket calls fail (ENOSYS), never pass.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || main(listener)));
    }
    // SAFETY: _exit has no preconditions; the supervisor's threads end with the process.
    unsafe { libc::_exit(0) }
}

/// FUTEX_WAIT (shared, matching the kernel's wake at clear-child-tid) on `word` while it holds
/// `val`, with the bare `syscall` instruction: no errno write, no libc.
fn futex_wait(word: &AtomicU32, val: u32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: futex(word, FUTEX_WAIT, val, NULL): the kernel reads the 4-byte word, which is
    // live; the result (0, EAGAIN, EINTR) is ignored because the caller re-reads the word.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") libc::SYS_futex => _,
            in("rdi") word.as_ptr(), in("rsi") libc::FUTEX_WAIT, in("rdx") val, in("r10") 0usize,
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (word, val);
}

//! Where the supervisor's log lines go.
//!
//! The supervisor lives as long as any process of the command's tree, so it must hold nothing
//! of the command's (spawn.rs, `prelude`) — its stderr included. Holding the launcher's
//! descriptor 2 kept the writing end of a pipe open for the tree's whole life: in
//! `tsproxy sh -c 'echo hi; exec 2>&-; sleep 3' 2>&1 | cat`, or `$(tsproxy daemon-start 2>&1)`,
//! the reader saw EOF only when the last daemon of the tree ended.
//!
//! So B notes which file descriptor 2 was (`remember`: device and inode, at the exec) and
//! puts /dev/null there. For a regular file it also keeps an O_PATH reference to the inode
//! (spawn.rs, `prelude`): once a file is deleted and closed, a file system hands its inode
//! number to the next file created (ext4 at once), and without the reference a data file the
//! command made later on descriptor 2 would pass for its stderr. The price: a deleted stderr
//! file's blocks are freed when the tree ends, not when the command closes it. Without /proc
//! (no way to take the reference) lines for a regular file are dropped. A log line then goes to that same file through the command's own
//! descriptor 2 (the root of the tree, the launcher's pid, named by a pidfd taken at the
//! exec): fetched with `pidfd_getfd` for the line and closed after it, and only while the
//! root still has that very file there. Once the
//! root has exited, or has put something else on its descriptor 2 (a daemon that reused it for
//! a connection), the supervisor's lines are dropped: nothing is ever written into a file the
//! command did not give us as its stderr. `TSPROXY_LOG=off` (`-q`) writes nothing anyway.
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, Ordering};
use tsproxy_core::syscall;

/// Before `remember`: the launcher's own process, which writes to its descriptor 2.
const DIRECT: u8 = 0;
/// In B: through the root's descriptor 2, if it is still the file noted.
const ROOT: u8 = 1;
/// In B, whose descriptor 2 was closed at the exec: nowhere.
const NONE: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(DIRECT);
static DEV: AtomicU64 = AtomicU64::new(0);
static INO: AtomicU64 = AtomicU64::new(0);
/// A pidfd of the root, taken at the exec (-1: none). A pidfd names that process, never a later
/// one with a recycled pid: once the root has exited, pidfd_getfd fails (ESRCH) and the
/// supervisor's lines are dropped.
static PIDFD: AtomicI32 = AtomicI32::new(-1);

/// In B after the gate (spawn.rs, `prelude`): the file on descriptor 2 right now (`Some` with
/// its device and inode, `None` if it was closed), and a pidfd of the root of the tree (or -1).
/// Plain stores only: this runs on the launcher's thread pointer, with no allocation and no
/// errno.
pub(super) fn remember(stderr: Option<(u64, u64)>, root_pidfd: i32) {
    PIDFD.store(root_pidfd, Ordering::Relaxed);
    match stderr {
        Some((dev, ino)) => {
            DEV.store(dev, Ordering::Relaxed);
            INO.store(ino, Ordering::Relaxed);
            MODE.store(ROOT, Ordering::Release);
        }
        None => MODE.store(NONE, Ordering::Release),
    }
}

/// Write one whole log line where this process's log lines go (module comment).
pub(super) fn write(line: &[u8]) {
    match MODE.load(Ordering::Acquire) {
        DIRECT => tsproxy_core::sys::write_all_fd(2, line),
        ROOT => {
            if let Some(fd) = fetch() {
                tsproxy_core::sys::write_all_fd(fd, line);
                let _ = syscall!(SYS_close, fd);
            }
        }
        _ => {}
    }
}

/// The root's descriptor 2 as one of ours, if it is still the file `remember` noted.
fn fetch() -> Option<i32> {
    let pidfd = PIDFD.load(Ordering::Relaxed);
    if pidfd < 0 {
        return None;
    }
    let fd = syscall!(SYS_pidfd_getfd, pidfd, 2, 0).ok()? as i32;
    // SAFETY: all-zero is a valid stat buffer; fstat only writes into it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let same =
        syscall!(SYS_fstat, fd, &mut st as *mut libc::stat).is_ok() && st.st_dev == DEV.load(Ordering::Relaxed) && st.st_ino == INO.load(Ordering::Relaxed);
    if same {
        Some(fd)
    } else {
        let _ = syscall!(SYS_close, fd);
        None
    }
}

//! The per-user name registry: what a placeholder address means, shared by every process of one
//! user, so an address resolved in one process (Chromium's browser process, `getent hosts`, a
//! parent that hands addresses to the workers it execs) reaches its name from any other.
//!
//! # Where, and why it cannot be changed by another user
//!
//! One file per effective uid, mapped `MAP_SHARED` by every process that needs it:
//! `/run/user/<euid>/tsproxy-names` when `/run/user/<euid>` is a directory owned by that uid
//! and closed to everyone else (systemd's per-user runtime directory: nobody else can create
//! anything in `/run/user`), else `/tmp/tsproxy-<euid>/names`, in a directory this uid created
//! with mode 0700. Before use, the directory and the file are checked (opened without
//! following symbolic links; owned by the euid; no group or other permission bits; the file a
//! regular file with one link): another user can neither read nor write what our placeholders
//! mean. A `/tmp/tsproxy-<euid>` made by somebody else (squatted) is never used: the process
//! then keeps its names to itself (`state()` says why; the library logs it once), which costs
//! only the sharing, never a wrong destination. A program in secure execution (setuid, setgid,
//! file capabilities: `AT_SECURE`) only reads an existing registry of its euid: another user
//! running it can make it neither create nor write a file.
//!
//! The location depends on nothing but the euid and the file system — not on the environment,
//! which differs between a login shell, cron and sshd — so every process of the user finds
//! the same file. Processes that do not share `/tmp` or `/run/user` (a systemd service with
//! `PrivateTmp=`) have separate registries; because a name's slot is a hash of the name (see
//! `names`), separate registries still agree on it unless two names collide in the 2^24 slots.
//!
//! # Layout and concurrency
//!
//! A 64-byte header (a magic number) and [`ENTRIES`] fixed entries of [`ENTRY`] bytes: a
//! 32-bit word (0 empty; the slot + 1 once taken; with [`BUSY`] while its name is being
//! written), the name's length and up to 253 bytes of name. The entry of a slot is found by
//! linear probing from a hash of the slot, so everyone looks at the same sequence; a slot is
//! taken by compare-and-swap of the first empty word on it, and entries are never removed or
//! changed, so a slot, once given a name, means that name for as long as the file exists. No
//! lock, nothing a fork child could inherit half-held: the mapping is inherited, and a process
//! killed while writing a name leaves one entry busy for ever (that slot is then skipped).
//! Only the same user can write the file; its contents are checked all the same (a name read
//! back must be a host name) before anything is sent to a proxy.
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering};

/// Entries in the file. 65,536 × [`ENTRY`] bytes: a 17 MiB sparse file whose pages are touched
/// only as names arrive.
pub const ENTRIES: usize = 65536;
/// Bytes per entry: the word, the length, 253 bytes of name, padding to a multiple of 8.
pub const ENTRY: usize = 264;
/// Set in an entry's word while its name is being written.
pub const BUSY: u32 = 1 << 31;
const HEADER: usize = 64;
const SIZE: usize = HEADER + ENTRIES * ENTRY;
const MAGIC: u64 = u64::from_le_bytes(*b"TSPXNM01");
/// How far a slot's probe sequence goes: past it the registry counts as full for that slot.
const PROBE: usize = 256;

/// The mapping: null until opened (or when unavailable: see `STATE`).
static BASE: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
/// 0 not tried, 1 ready, 2 unavailable.
static STATE: AtomicU8 = AtomicU8::new(0);
/// Secure execution: the registry is read, never written or created.
static READ_ONLY: AtomicBool = AtomicBool::new(false);
/// Why it is unavailable (an index into `WHY`).
static WHY_AT: AtomicU8 = AtomicU8::new(0);
const WHY: [&str; 8] = [
    "",
    "no usable directory (/run/user/<euid> and /tmp/tsproxy-<euid>)",
    "/tmp/tsproxy-<euid> belongs to another user or is open to others",
    "the registry file is not a private regular file of this user",
    "the registry file could not be created or sized",
    "the registry file could not be mapped",
    "the registry file has another format",
    "disabled",
];

/// What the registry said about a slot.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// The slot is now (or already was) this name's.
    Ours,
    /// The slot belongs to another name (given).
    Taken(String),
    /// The slot is being written by a process that did not finish; skip it.
    Unknown,
    /// No registry (or no room on this slot's probe sequence): decide in this process alone.
    Unavailable,
}

/// Is the registry usable in this process? `Err` says why not (for a log line).
pub fn state() -> Result<(), &'static str> {
    if base().is_some() {
        Ok(())
    } else {
        Err(WHY[WHY_AT.load(Ordering::Relaxed) as usize % WHY.len()])
    }
}

/// Use no registry in this process (tests of the single-process behaviour).
pub fn disable() {
    WHY_AT.store(7, Ordering::Relaxed);
    STATE.store(2, Ordering::Release);
}

fn base() -> Option<*mut u8> {
    match STATE.load(Ordering::Acquire) {
        1 => Some(BASE.load(Ordering::Acquire)),
        2 => None,
        _ => open(),
    }
}

fn fail(why: u8) -> Option<*mut u8> {
    WHY_AT.store(why, Ordering::Relaxed);
    STATE.store(2, Ordering::Release);
    None
}

/// Open and map the file. Idempotent and lock-free: threads that race each map it and the
/// losers unmap theirs (every step — mkdir, open with O_CREAT, growing the file to one fixed
/// size, setting the magic number by compare-and-swap — gives the same result done twice).
fn open() -> Option<*mut u8> {
    use crate::syscall;
    // SAFETY: geteuid and getauxval have no preconditions and cannot fail.
    let (euid, secure) = unsafe { (libc::geteuid(), libc::getauxval(libc::AT_SECURE) != 0) };
    if secure {
        // A setuid/setgid/file-capability program run by another user: that user must not make
        // it create or write a file (README, Threat model). It reads an existing registry of
        // its euid, and gives names of its own only in its own memory.
        READ_ONLY.store(true, Ordering::Relaxed);
    }
    let private_dir = |fd: i32| -> bool {
        // SAFETY: all-zero is a valid `stat`; fstat fills it for a valid fd.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        syscall!(SYS_fstat, fd, &mut st as *mut libc::stat).is_ok()
            && st.st_mode & libc::S_IFMT == libc::S_IFDIR
            && st.st_uid == euid
            && st.st_mode & 0o077 == 0
    };
    let open_dir = |path: &std::ffi::CStr| {
        syscall!(SYS_openat, libc::AT_FDCWD, path.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC).ok().map(|fd| fd as i32)
    };
    let run = std::ffi::CString::new(format!("/run/user/{euid}")).ok()?;
    let (dir, file) = match open_dir(&run) {
        Some(fd) if private_dir(fd) => (fd, c"tsproxy-names"),
        other => {
            if let Some(fd) = other {
                let _ = syscall!(SYS_close, fd);
            }
            let tmp = std::ffi::CString::new(format!("/tmp/tsproxy-{euid}")).ok()?;
            if !secure {
                let _ = syscall!(SYS_mkdirat, libc::AT_FDCWD, tmp.as_ptr(), 0o700);
            }
            let Some(fd) = open_dir(&tmp) else { return fail(1) };
            if !private_dir(fd) {
                let _ = syscall!(SYS_close, fd);
                return fail(2);
            }
            (fd, c"names")
        }
    };
    let mode = if secure { libc::O_RDONLY } else { libc::O_RDWR | libc::O_CREAT };
    let f = syscall!(SYS_openat, dir, file.as_ptr(), mode | libc::O_NOFOLLOW | libc::O_CLOEXEC, 0o600);
    let _ = syscall!(SYS_close, dir);
    let Ok(f) = f.map(|f| f as i32) else { return fail(4) };
    let done = |why: u8| {
        let _ = syscall!(SYS_close, f);
        fail(why)
    };
    // SAFETY: as above.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if syscall!(SYS_fstat, f, &mut st as *mut libc::stat).is_err()
        || st.st_mode & libc::S_IFMT != libc::S_IFREG
        || st.st_uid != euid
        || st.st_mode & 0o077 != 0
        || st.st_nlink != 1
    {
        return done(3);
    }
    if (st.st_size as usize) < SIZE && (secure || syscall!(SYS_ftruncate, f, SIZE).is_err()) {
        return done(4);
    }
    let prot = if secure { libc::PROT_READ } else { libc::PROT_READ | libc::PROT_WRITE };
    let p = syscall!(SYS_mmap, 0usize, SIZE, prot, libc::MAP_SHARED, f, 0usize);
    let _ = syscall!(SYS_close, f);
    let Ok(p) = p.map(|p| p as *mut u8) else { return fail(5) };
    // SAFETY: the mapping is SIZE bytes, page-aligned, so its first 8 bytes are an aligned u64
    // shared with other processes only through atomic operations.
    let magic = unsafe { &*(p as *const AtomicU64) };
    let m = match magic.load(Ordering::Acquire) {
        0 if !secure => magic.compare_exchange(0, MAGIC, Ordering::AcqRel, Ordering::Acquire).map_or_else(|theirs| theirs, |_| MAGIC),
        m => m,
    };
    if m != MAGIC {
        let _ = syscall!(SYS_munmap, p, SIZE);
        return fail(6);
    }
    match BASE.compare_exchange(std::ptr::null_mut(), p, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            STATE.store(1, Ordering::Release);
            Some(p)
        }
        Err(theirs) => {
            let _ = syscall!(SYS_munmap, p, SIZE);
            Some(theirs)
        }
    }
}

/// The word of entry `i`.
fn word(base: *mut u8, i: usize) -> &'static AtomicU32 {
    // SAFETY: i < ENTRIES, so the entry lies inside the SIZE-byte mapping, which is never
    // unmapped once published; HEADER and ENTRY are multiples of 8, so the word is aligned.
    unsafe { &*(base.add(HEADER + i * ENTRY) as *const AtomicU32) }
}

fn start(slot: u32) -> usize {
    (slot.wrapping_mul(0x9E37_79B1) >> 16) as usize % ENTRIES
}

/// Wait (briefly, bounded) for a busy entry to be finished; its final word, or None.
fn settled(w: &AtomicU32) -> Option<u32> {
    for i in 0..2000 {
        let v = w.load(Ordering::Acquire);
        if v & BUSY == 0 {
            return Some(v);
        }
        if i > 50 {
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        }
    }
    None
}

/// The name stored in entry `i` (whose word is final), if it is a host name.
fn read_name(base: *mut u8, i: usize) -> Option<String> {
    // SAFETY: the entry is inside the mapping (see `word`); its name was written before the
    // word was released, and is never written again.
    let (len, bytes) = unsafe {
        let e = base.add(HEADER + i * ENTRY);
        let len = (*e.add(4) as usize).min(crate::names::MAX_NAME_LEN);
        (len, std::slice::from_raw_parts(e.add(5), len))
    };
    let s = std::str::from_utf8(&bytes[..len]).ok()?;
    crate::names::is_host_name(s).then(|| s.to_owned())
}

/// The name registered for `slot`, if any (any process of this user may have put it there).
pub fn find(slot: u32) -> Option<String> {
    let base = base()?;
    let key = slot.checked_add(1)?;
    let s0 = start(slot);
    for k in 0..PROBE {
        let i = (s0 + k) % ENTRIES;
        let w = word(base, i);
        let v = w.load(Ordering::Acquire);
        if v == 0 {
            return None;
        }
        if v & !BUSY == key {
            return settled(w).and_then(|_| read_name(base, i));
        }
    }
    None
}

/// Give `slot` to `name` (already normalized and checked: a host name) unless it has a name.
/// Read-only (secure execution): what the registry says, never a new entry.
pub fn claim(slot: u32, name: &str) -> Claim {
    let Some(base) = base() else { return Claim::Unavailable };
    if READ_ONLY.load(Ordering::Relaxed) {
        return match find(slot) {
            Some(n) if n == name => Claim::Ours,
            Some(n) => Claim::Taken(n),
            None => Claim::Unavailable,
        };
    }
    let Some(key) = slot.checked_add(1).filter(|k| k & BUSY == 0) else { return Claim::Unavailable };
    if name.len() > crate::names::MAX_NAME_LEN {
        return Claim::Unavailable;
    }
    let s0 = start(slot);
    for k in 0..PROBE {
        let i = (s0 + k) % ENTRIES;
        let w = word(base, i);
        let mut v = w.load(Ordering::Acquire);
        if v == 0 {
            match w.compare_exchange(0, key | BUSY, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    // SAFETY: this entry is ours alone (its word went 0 -> busy by our CAS, and
                    // nobody reads a busy entry's name); it lies inside the mapping.
                    unsafe {
                        let e = base.add(HEADER + i * ENTRY);
                        *e.add(4) = name.len() as u8;
                        std::ptr::copy_nonoverlapping(name.as_ptr(), e.add(5), name.len());
                    }
                    w.store(key, Ordering::Release);
                    return Claim::Ours;
                }
                Err(now) => v = now,
            }
        }
        if v & !BUSY == key {
            return match settled(w).and_then(|_| read_name(base, i)) {
                Some(n) if n == name => Claim::Ours,
                Some(n) => Claim::Taken(n),
                None => Claim::Unknown,
            };
        }
    }
    Claim::Unavailable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_find_and_conflicts() {
        if state().is_err() {
            eprintln!("registry unavailable here: {:?}", state());
            return;
        }
        // A slot far from what the names used in other tests hash to, and names unique to
        // this run, so that an earlier run's entries (the file outlives the process) do not
        // change the outcome.
        let tag = std::process::id();
        let slot = 0x00ab_0000 + (tag % 0xffff);
        let a = format!("reg-a-{tag}");
        let b = format!("reg-b-{tag}");
        match find(slot) {
            None => {
                assert_eq!(claim(slot, &a), Claim::Ours);
                assert_eq!(claim(slot, &a), Claim::Ours);
                assert_eq!(claim(slot, &b), Claim::Taken(a.clone()));
                assert_eq!(find(slot), Some(a));
            }
            Some(old) => assert_eq!(claim(slot, &b), Claim::Taken(old)),
        }
    }

    #[test]
    fn probe_start_spreads() {
        let mut seen = std::collections::HashSet::new();
        for s in 0..1000u32 {
            seen.insert(start(s));
        }
        assert!(seen.len() > 990);
    }
}

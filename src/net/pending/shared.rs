//! A handshake's outcome in memory shared with fork() children, so a child that inherited a
//! socket still handshaking learns when the parent's handshake ends (the child never drives
//! it: see `driver`). One anonymous `MAP_SHARED` region per process, made on first need (a
//! child makes its own for the handshakes it starts); one word per table slot, holding the
//! conn's id and its state, so a word reused for a later conn is never mistaken for the old
//! one's.
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, Ordering};
use tsproxy_core::sys;

/// Words in a region: table slots beyond it just have no shared outcome (a child then waits
/// for the deadline).
const WORDS: usize = 4096;
const PENDING: u32 = 0;
const ENDED: u32 = 1;

static REGION: AtomicPtr<AtomicU32> = AtomicPtr::new(std::ptr::null_mut());
static OWNER: AtomicI32 = AtomicI32::new(0);

/// A conn's word, for the process that owns the conn.
#[derive(Clone, Copy)]
pub struct Word(*const AtomicU32);

// SAFETY: the pointer is to a process-lifetime mapping of atomics (never unmapped), valid
// from any thread.
unsafe impl Send for Word {}

fn word(id: u32, state: u32) -> u32 {
    (id << 1) | state
}

/// This process's region, made on first use (under the table lock).
fn region() -> Option<*mut AtomicU32> {
    let pid = sys::pid();
    let p = REGION.load(Ordering::Acquire);
    if !p.is_null() && OWNER.load(Ordering::Acquire) == pid {
        return Some(p);
    }
    let len = WORDS * std::mem::size_of::<AtomicU32>();
    let flags = libc::MAP_SHARED | libc::MAP_ANONYMOUS;
    let m = tsproxy_core::syscall!(SYS_mmap, 0usize, len, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0usize).ok()? as *mut AtomicU32;
    REGION.store(m, Ordering::Release);
    OWNER.store(pid, Ordering::Release);
    Some(m)
}

/// Publish "pending" for a new conn in `slot`.
pub fn start(slot: usize, id: u32) -> Option<Word> {
    if slot >= WORDS {
        return None;
    }
    let r = region()?;
    // SAFETY: slot < WORDS, inside the mapping; the mapping lives as long as the process.
    let w = unsafe { &*r.add(slot) };
    w.store(word(id, PENDING), Ordering::Release);
    Some(Word(w))
}

/// Publish "ended" (the parent side).
pub fn end(w: Word, id: u32) {
    // SAFETY: a word of a live mapping (see `Word`).
    unsafe { &*w.0 }.store(word(id, ENDED), Ordering::Release);
}

/// Has the handshake `id` ended, as its owner published? (A word that names another id means
/// the owner has moved on: it ended.)
pub fn ended(w: Word, id: u32) -> bool {
    // SAFETY: a word of a live mapping (see `Word`).
    unsafe { &*w.0 }.load(Ordering::Acquire) != word(id, PENDING)
}

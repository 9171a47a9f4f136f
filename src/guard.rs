//! Thread-local re-entrancy guard. While tsproxy's own logic runs on a thread, a hooked call
//! that libc makes on our behalf (for example the real getaddrinfo opening a DNS socket) must
//! not be intercepted again: it goes to libc, except that a tailnet destination is refused
//! rather than dialled directly (never leak).
use std::cell::Cell;

thread_local! {
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

pub struct Guard(());

impl Guard {
    /// None when this thread is already inside tsproxy.
    pub fn enter() -> Option<Guard> {
        INSIDE.with(|c| if c.replace(true) { None } else { Some(Guard(())) })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        INSIDE.with(|c| c.set(false));
    }
}

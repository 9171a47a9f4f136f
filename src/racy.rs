//! A write-once cell that never makes one thread wait for another: whoever finishes computing
//! first publishes with a compare-and-swap; a loser drops its copy. `std::sync::OnceLock` parks
//! the other threads while one initializes, and a fork() in that window leaves the child waiting
//! forever on a thread it does not have. Values are leaked on purpose: they live as long as the
//! process.
use std::sync::atomic::{AtomicPtr, Ordering};

pub struct Racy<T>(AtomicPtr<T>);

impl<T> Racy<T> {
    pub const fn new() -> Self {
        Racy(AtomicPtr::new(std::ptr::null_mut()))
    }

    pub fn get(&self) -> Option<&T> {
        let p = self.0.load(Ordering::Acquire);
        // SAFETY: a non-null pointer here came from Box::into_raw below and is never freed.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    pub fn get_or_init(&self, f: impl FnOnce() -> T) -> &T {
        if let Some(v) = self.get() {
            return v;
        }
        let fresh = Box::into_raw(Box::new(f()));
        match self.0.compare_exchange(std::ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
            // SAFETY: we just published `fresh`; it is never freed.
            Ok(_) => unsafe { &*fresh },
            Err(winner) => {
                // SAFETY: `fresh` was never published; `winner` is published and never freed.
                unsafe {
                    drop(Box::from_raw(fresh));
                    &*winner
                }
            }
        }
    }
}

// SAFETY: the cell only hands out shared references to a value published once; that is sound
// exactly when T itself may be shared between threads.
unsafe impl<T: Send + Sync> Sync for Racy<T> {}
// SAFETY: moving the cell moves a value that is itself Send, and a published value is only
// ever read, so sending it is sound when T is Send + Sync.
unsafe impl<T: Send + Sync> Send for Racy<T> {}

//! The one lock kind tsproxy uses: a spin lock (spinning briefly, then yielding) for tables
//! whose critical sections never block — only nonblocking syscalls and memory work happen under
//! it. Its whole state is one flag, so the fork handlers can hand a child a known-free lock.
//! (parking_lot's fair unlocking may pass a lock to a parked waiter; after fork that waiter is a
//! thread the child does not have, and the child deadlocks. A futex mutex has the same problem
//! with no way to reset it.)
use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

pub struct SpinLock<T> {
    locked: AtomicBool,
    data: UnsafeCell<T>,
}

// SAFETY: access to `data` is serialized by `locked`.
unsafe impl<T: Send> Sync for SpinLock<T> {}

pub struct Guard<'a, T>(&'a SpinLock<T>);

impl<T> SpinLock<T> {
    pub const fn new(v: T) -> Self {
        SpinLock { locked: AtomicBool::new(false), data: UnsafeCell::new(v) }
    }

    pub fn lock(&self) -> Guard<'_, T> {
        let mut spins = 0u32;
        while self.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
        Guard(self)
    }

    /// Take the lock for fork(): the guard is forgotten; `release_after_fork` ends it.
    pub fn hold_for_fork(&self) {
        std::mem::forget(self.lock());
    }

    /// In the parent and in the child after fork: free the lock `hold_for_fork` took.
    pub fn release_after_fork(&self) {
        self.locked.store(false, Ordering::Release);
    }
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held.
        unsafe { &*self.0.data.get() }
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves the lock is held, exclusively.
        unsafe { &mut *self.0.data.get() }
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        self.0.locked.store(false, Ordering::Release);
    }
}

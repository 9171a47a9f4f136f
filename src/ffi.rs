//! The boundary with C callers: no panic crosses it, errno is set last.
use std::panic::{catch_unwind, AssertUnwindSafe};

/// What a hook hands back: the C return value and, if it failed, the errno to leave behind.
pub struct Ret<T> {
    pub val: T,
    pub errno: Option<i32>,
}

impl<T> Ret<T> {
    pub fn ok(val: T) -> Self {
        Ret { val, errno: None }
    }
    pub fn err(val: T, e: i32) -> Self {
        Ret { val, errno: Some(e) }
    }
    /// After delegating to libc: keep whatever errno libc left.
    pub fn passed(val: T) -> Self {
        Ret { val, errno: Some(tsproxy_core::sys::errno()) }
    }
}

/// Run hook logic; on panic, answer `on_panic` (a fail-closed value). errno is restored to
/// what the caller had unless the hook reports one, and is written last.
pub fn shield<T>(on_panic: Ret<T>, f: impl FnOnce() -> Ret<T>) -> T {
    let saved = tsproxy_core::sys::errno();
    let r = catch_unwind(AssertUnwindSafe(f)).unwrap_or(on_panic);
    tsproxy_core::sys::set_errno(r.errno.unwrap_or(saved));
    r.val
}

/// Bookkeeping beside a libc call (no result of its own): never panics across, never touches
/// errno.
pub fn side(f: impl FnOnce()) {
    let saved = tsproxy_core::sys::errno();
    let _ = catch_unwind(AssertUnwindSafe(f));
    tsproxy_core::sys::set_errno(saved);
}

//! The one boundary every exported function goes through (after mirrord's layer): the
//! re-entrancy guard, `catch_unwind`, errno save/restore and "errno set last" happen here and
//! nowhere else, and the `hook!` macro is the only way a hook is exported, so none can forget
//! them.
//!
//! The vocabulary of a hook's logic is [`Detour`]: we answered (`Done`, `Return`), fail with an
//! [`Errno`] (`Fail`), hand the call to libc for a documented reason (`Bypass`), or wait
//! (`Wait`). Two rules are enforced by the shape of [`run`]:
//!
//! - **libc is called outside `catch_unwind`**, from the exported frame itself, with no value of
//!   ours alive that has a destructor. Many hooked functions (connect, read, poll, ...) are
//!   pthread cancellation points; cancellation is a forced unwind that must pass through our
//!   frame to the program's cleanup handlers. `catch_unwind` would stop it ("FATAL: exception
//!   not rethrown") and a destructor on the way would be undefined behaviour (RFC 2945: only
//!   "plain old frames" may be unwound by force). The exports are `extern "C-unwind"` for the
//!   same reason.
//! - **tsproxy itself only ever sleeps in libc's `poll`**, called by `run` for a
//!   `Detour::Wait` — again from the exported frame with nothing of ours alive, so a thread
//!   cancelled while we wait for a proxy unwinds cleanly, and a signal interrupts us exactly
//!   where it would interrupt the program's own call.
//!
//! Inside the logic, a hooked libc function that we (or libc on our behalf) call reaches our
//! hook again: the thread-local guard sends it to its `nested` logic, which must not take any
//! lock (the outer frame may hold it) — by default straight to libc; connect and the sends
//! still refuse a tailnet destination there (never dialled directly).
use libc::{c_int, nfds_t, pollfd};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use tsproxy_core::Errno;

/// What a hook's logic decided.
pub enum Detour<T> {
    /// We answered: return this, the caller's errno untouched.
    Done(T),
    /// Return this and leave this errno (for example what libc left, when we called it).
    Return(T, Errno),
    /// Return the hook's failure value with this errno.
    Fail(Errno),
    /// Not ours: call libc's own function with the caller's arguments. The reason is not
    /// acted on: it documents, at each return site, why libc is right.
    #[allow(dead_code)]
    Bypass(Bypass),
    /// Wait in libc's `poll` on these descriptors, then run the logic again (see [`Ctx::woke`]).
    Wait(Wait),
}

/// Why a call goes to libc untouched. Documentation as much as data: every bypass names one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bypass {
    /// The destination is not a tailnet one (loopback, LAN, public) or NO_PROXY lists it.
    NotTailnet,
    /// The descriptor is not one we track (no handshake pending or owed on it).
    NotOurs,
    /// This thread is already inside tsproxy: the call is libc's work on our behalf.
    Reentered,
    /// The arguments are not ones we interpret (other families, options, NULL pointers...):
    /// libc and the kernel judge them.
    NotApplicable,
}

/// A wait requested by the logic: `poll(fds, n, timeout_ms)` from the exported frame. The
/// array belongs to the caller (modified in place) or to the logic's thread-local storage.
#[derive(Clone, Copy)]
pub struct Wait {
    /// The descriptors to wait on.
    pub fds: *mut pollfd,
    /// How many.
    pub n: nfds_t,
    /// Milliseconds, -1 for no limit.
    pub timeout_ms: c_int,
    /// ppoll's signal mask (ppoll/pselect callers), or null for plain poll.
    pub sigmask: *const libc::sigset_t,
}

/// What the logic knows across its rounds: plain data only (no destructor may live on the
/// exported frame while libc runs).
pub struct Ctx {
    /// The result of the previous `Wait` (poll's return value and errno), if any.
    pub woke: Option<(c_int, Errno)>,
    /// How many waits happened in this call.
    pub round: u32,
    /// When the first round started, for deadlines that span rounds.
    pub start: Option<std::time::Instant>,
}

thread_local! {
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Marks this thread as inside tsproxy while alive.
pub struct Guard(());

impl Guard {
    /// None when this thread is already inside tsproxy.
    pub fn enter() -> Option<Guard> {
        INSIDE.try_with(|c| if c.replace(true) { None } else { Some(Guard(())) }).ok().flatten()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = INSIDE.try_with(|c| c.set(false));
    }
}

/// Run a hook: `logic` (or `nested` when this thread is already inside tsproxy) under
/// `catch_unwind` and the guard; a panic answers `Fail(on_panic)` — fail closed — and libc is
/// called outside, last. `fail` is the hook's failure return value (-1, NULL, an EAI_ code).
#[inline(always)]
pub fn run<T: Copy>(fail: T, on_panic: Errno, logic: impl Fn(&mut Ctx) -> Detour<T>, nested: impl FnOnce() -> Detour<T>, libc: impl FnOnce() -> T) -> T {
    let saved = Errno::last();
    let mut ctx = Ctx { woke: None, round: 0, start: None };
    let mut nested = Some(nested);
    loop {
        let d = match Guard::enter() {
            Some(g) => {
                let d = catch_unwind(AssertUnwindSafe(|| logic(&mut ctx))).unwrap_or(Detour::Fail(on_panic));
                drop(g);
                d
            }
            None => match nested.take() {
                Some(f) => catch_unwind(AssertUnwindSafe(f)).unwrap_or(Detour::Fail(on_panic)),
                None => Detour::Fail(on_panic),
            },
        };
        match d {
            Detour::Done(v) => {
                tsproxy_core::sys::set_errno(saved.raw());
                return v;
            }
            Detour::Return(v, e) => {
                tsproxy_core::sys::set_errno(e.raw());
                return v;
            }
            Detour::Fail(e) => {
                tsproxy_core::sys::set_errno(e.raw());
                return fail;
            }
            Detour::Bypass(_) => {
                tsproxy_core::sys::set_errno(saved.raw());
                return libc();
            }
            Detour::Wait(w) => {
                let r = if w.sigmask.is_null() {
                    let poll = real!(poll: fn(*mut pollfd, nfds_t, c_int) -> c_int);
                    // SAFETY: `w.fds` points to `w.n` pollfd entries that the logic keeps alive
                    // (the caller's own array, or thread-local storage) until it runs again.
                    unsafe { poll(w.fds, w.n, w.timeout_ms) }
                } else {
                    let ppoll = real!(ppoll: fn(*mut pollfd, nfds_t, *const libc::timespec, *const libc::sigset_t) -> c_int);
                    let ts = libc::timespec { tv_sec: (w.timeout_ms / 1000) as _, tv_nsec: ((w.timeout_ms % 1000) as i64 * 1_000_000) as _ };
                    let tsp = if w.timeout_ms < 0 { std::ptr::null() } else { &ts as *const libc::timespec };
                    // SAFETY: as for poll; `ts` lives across the call and the mask is the
                    // caller's.
                    unsafe { ppoll(w.fds, w.n, tsp, w.sigmask) }
                };
                ctx.woke = Some((r, Errno::last()));
                ctx.round += 1;
            }
        }
    }
}

/// Libc's answer, computed inside the logic: return it with the errno libc left.
pub fn passed<T>(v: T) -> Detour<T> {
    let e = Errno::last();
    Detour::Return(v, e)
}

/// The default `nested` logic: straight to libc (the outer frame may hold our locks).
pub fn to_libc<T>() -> Detour<T> {
    Detour::Bypass(Bypass::Reentered)
}

/// Export a hook through [`run`]. `fast` is checked first (a relaxed load or two) and sends the
/// call straight to libc; `logic` sees the real function as `$real`. An optional `real: NAME;`
/// takes the real function from another symbol first, then from its own (glibc's pre-2.34
/// `__res_query` is a non-default version since 2.34, which `dlsym` does not return, and the
/// same function as `res_query`; before 2.34 `__res_nquery` was the only name of its function).
///
/// ```ignore
/// hook! {
///     fn close(fd: c_int) -> c_int;
///     fast: !pending::active();
///     fail: -1, on_panic: EBADF;
///     |real, ctx| logic(...)
/// }
/// ```
macro_rules! hook {
    (@nested $ret:ty;) => {
        $crate::boundary::to_libc::<$ret>
    };
    (@nested $ret:ty; $nested:expr) => {
        // SAFETY: as for the logic.
        || -> $crate::boundary::Detour<$ret> { #[allow(unused_unsafe)] unsafe { $nested } }
    };
    (@real $name:ident; $($f:tt)*) => {
        real!($name: $($f)*)
    };
    (@real $name:ident $other:ident; $($f:tt)*) => {
        real!($other | $name: $($f)*)
    };
    (
        $(#[$m:meta])*
        fn $name:ident($($a:ident : $t:ty),* $(,)?) -> $ret:ty;
        $(real: $other:ident;)?
        fast: $fast:expr;
        fail: $fail:expr, on_panic: $on_panic:ident;
        $(nested: $nested:expr;)?
        |$real:ident, $ctx:ident| $body:expr
    ) => {
        $(#[$m])*
        #[no_mangle]
        pub unsafe extern "C-unwind" fn $name($($a: $t),*) -> $ret {
            let $real = hook!(@real $name $($other)?; fn($($t),*) -> $ret);
            if $fast {
                // SAFETY: the caller's arguments, passed on unchanged to the function they were
                // meant for.
                return unsafe { $real($($a),*) };
            }
            #[allow(unused_variables, unused_unsafe)]
            let logic = |$ctx: &mut $crate::boundary::Ctx| -> $crate::boundary::Detour<$ret> {
                // SAFETY: the logic receives the caller's arguments under this function's C
                // contract, which the caller upholds.
                unsafe { $body }
            };
            let nested = hook!(@nested $ret; $($nested)?);
            $crate::boundary::run(
                $fail,
                ::tsproxy_core::Errno(::libc::$on_panic),
                logic,
                nested,
                // SAFETY: the caller's arguments, passed on unchanged.
                || unsafe { $real($($a),*) },
            )
        }
    };
}

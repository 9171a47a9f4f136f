//! Resolving the next definition of a hooked symbol: `dlsym(RTLD_NEXT, name)`, cached in a
//! static. A missing symbol, or one that resolves back to our own hook, aborts loudly: calling
//! it would crash or recurse forever.
//!
//! We do not use `redhook` (last release 2020, no re-entrancy guard, open hang reports); this
//! macro is the whole of what we need from it.
use std::ffi::CStr;

/// Look `name` up after our library; abort if absent or if it is `ours`.
#[cold]
pub fn resolve(name: &CStr, ours: usize) -> usize {
    resolve_either(name, None, ours)
}

/// As `resolve`, trying `alt` when `name` is absent: glibc before 2.34 exports the `res_n*`
/// functions only as `__res_n*` (resolv.h renamed them), glibc since 2.34 only as `res_n*`
/// (the `__res_*` names became non-default versions, which dlsym does not return).
#[cold]
pub fn resolve_either(name: &CStr, alt: Option<&CStr>, ours: usize) -> usize {
    // SAFETY: RTLD_NEXT with a NUL-terminated name is the documented use of dlsym.
    let mut p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
    if let (0, Some(alt)) = (p, alt) {
        // SAFETY: as above.
        p = unsafe { libc::dlsym(libc::RTLD_NEXT, alt.as_ptr()) } as usize;
    }
    if p == 0 || p == ours {
        let why = if p == 0 { "missing" } else { "circular (resolves to tsproxy itself)" };
        let msg = format!("tsproxy: fatal: real symbol {} is {why}\n", name.to_string_lossy());
        tsproxy_core::sys::write_all_fd(2, msg.as_bytes());
        std::process::abort();
    }
    p
}

/// `real!(connect: fn(c_int, *const sockaddr, socklen_t) -> c_int)` evaluates to the next
/// `connect` after ours, as a callable `unsafe extern "C" fn`.
macro_rules! real {
    ($name:ident : fn($($arg:ty),* $(,)?) -> $ret:ty) => {{
        type F = unsafe extern "C-unwind" fn($($arg),*) -> $ret;
        static PTR: ::std::sync::atomic::AtomicUsize = ::std::sync::atomic::AtomicUsize::new(0);
        let mut p = PTR.load(::std::sync::atomic::Ordering::Relaxed);
        if p == 0 {
            let name = concat!(stringify!($name), "\0");
            let cname = ::std::ffi::CStr::from_bytes_with_nul(name.as_bytes()).expect("literal");
            p = $crate::real::resolve(cname, crate::hooks::$name as F as usize);
            PTR.store(p, ::std::sync::atomic::Ordering::Relaxed);
        }
        // SAFETY: `p` is the address dlsym gave for this symbol, whose C prototype is `F`.
        unsafe { ::std::mem::transmute::<usize, F>(p) }
    }};
    // `real!(res_nquery | __res_nquery: fn(...) -> c_int)`: the first name, else the second.
    ($name:ident | $alt:ident : fn($($arg:ty),* $(,)?) -> $ret:ty) => {{
        type F = unsafe extern "C-unwind" fn($($arg),*) -> $ret;
        static PTR: ::std::sync::atomic::AtomicUsize = ::std::sync::atomic::AtomicUsize::new(0);
        let mut p = PTR.load(::std::sync::atomic::Ordering::Relaxed);
        if p == 0 {
            let name = ::std::ffi::CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()).expect("literal");
            let alt = ::std::ffi::CStr::from_bytes_with_nul(concat!(stringify!($alt), "\0").as_bytes()).expect("literal");
            p = $crate::real::resolve_either(name, Some(alt), crate::hooks::$name as F as usize);
            PTR.store(p, ::std::sync::atomic::Ordering::Relaxed);
        }
        // SAFETY: `p` is the address dlsym gave for one of these symbols, whose C prototype is
        // `F` (the two names are the same function).
        unsafe { ::std::mem::transmute::<usize, F>(p) }
    }};
}

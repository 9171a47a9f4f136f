//! fd_set bits as the kernel reads them: an array of `unsigned long` words, bit `fd % 64` of
//! word `fd / 64`, as long as the program made it (glibc and the kernel accept sets larger than
//! FD_SETSIZE when the program allocates them). Plain arithmetic on the program's memory: no
//! FD_ISSET (which panics in the libc crate for fd >= FD_SETSIZE) and never a byte past the
//! words that `nfds` covers.
const BITS: usize = 8 * std::mem::size_of::<libc::c_ulong>();

/// Is `fd` in the set? `set` is null or holds at least `fd / BITS + 1` words.
///
/// # Safety
/// `set` is null or valid for the words that cover `fd`.
pub unsafe fn isset(set: *const libc::fd_set, fd: i32) -> bool {
    if set.is_null() || fd < 0 {
        return false;
    }
    let w = set.cast::<libc::c_ulong>();
    // SAFETY: the word covering fd is inside the set (contract); unaligned-tolerant read.
    let word = unsafe { std::ptr::read_unaligned(w.add(fd as usize / BITS)) };
    word >> (fd as usize % BITS) & 1 != 0
}

/// Add `fd` to the set.
///
/// # Safety
/// As `isset`, and writable.
pub unsafe fn set(set: *mut libc::fd_set, fd: i32) {
    if set.is_null() || fd < 0 {
        return;
    }
    let w = set.cast::<libc::c_ulong>().wrapping_add(fd as usize / BITS);
    // SAFETY: the word covering fd is inside the writable set (contract).
    unsafe { std::ptr::write_unaligned(w, std::ptr::read_unaligned(w) | (1 as libc::c_ulong) << (fd as usize % BITS)) };
}

/// Clear the words that cover descriptors `0..nfds` (what the kernel writes back, no more).
///
/// # Safety
/// `set` is null or valid and writable for `ceil(nfds / BITS)` words.
pub unsafe fn zero(set: *mut libc::fd_set, nfds: i32) {
    if set.is_null() || nfds <= 0 {
        return;
    }
    let words = (nfds as usize).div_ceil(BITS);
    let w = set.cast::<libc::c_ulong>();
    for i in 0..words {
        // SAFETY: i < words, inside the set (contract).
        unsafe { std::ptr::write_unaligned(w.add(i), 0) };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn large_sets_by_arithmetic() {
        let mut words = vec![0 as libc::c_ulong; 40]; // 2560 descriptors
        let s = words.as_mut_ptr().cast::<libc::fd_set>();
        // SAFETY: 40 words cover descriptors below 2560.
        unsafe {
            super::set(s, 1105);
            super::set(s, 3);
            assert!(super::isset(s, 1105));
            assert!(super::isset(s, 3));
            assert!(!super::isset(s, 1104));
            super::zero(s, 1106);
            assert!(!super::isset(s, 1105));
        }
        assert!(words.iter().all(|&w| w == 0));
    }
}

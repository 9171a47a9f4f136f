//! Handing a descriptor (the seccomp listener) from the launcher to the supervisor over a unix
//! socket (SCM_RIGHTS).
use std::io;
use tsproxy_core::syscall;

/// A one-byte message with room for one SCM_RIGHTS descriptor. The msghdr points into `byte`,
/// `iov` and `cbuf`, which the caller keeps alive (and unmoved) across the syscall.
fn fd_msg(byte: &mut [u8; 1], iov: &mut libc::iovec, cbuf: &mut Vec<u8>) -> libc::msghdr {
    *iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    // SAFETY: CMSG_SPACE is a pure computation on a length.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) } as usize;
    cbuf.resize(space, 0);
    // SAFETY: an all-zero msghdr is valid (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space;
    msg
}

pub fn send_fd(sock: i32, fd: i32) -> io::Result<()> {
    let (mut byte, mut iov, mut cbuf) = ([0u8; 1], libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }, Vec::new());
    let msg = fd_msg(&mut byte, &mut iov, &mut cbuf);
    // SAFETY: msg_control points to cbuf, CMSG_SPACE(sizeof int) bytes long, so CMSG_FIRSTHDR
    // is non-null and its header and CMSG_DATA (one int) lie inside cbuf.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), fd);
    }
    // Marked (`sys::SECCOMP_MARK` in the upper half of the flags, which the kernel ignores:
    // sendmsg takes `unsigned int flags`): the launcher sends the listener after installing
    // the filter, and an unmarked sendmsg would wait for the supervisor, which waits for the
    // listener.
    syscall!(SYS_sendmsg, sock, &msg as *const libc::msghdr, tsproxy_core::sys::SECCOMP_MARK).map(|_| ())
}

pub fn recv_fd(sock: i32) -> io::Result<i32> {
    let (mut byte, mut iov, mut cbuf) = ([0u8; 1], libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }, Vec::new());
    let mut msg = fd_msg(&mut byte, &mut iov, &mut cbuf);
    syscall!(SYS_recvmsg, sock, &mut msg as *mut libc::msghdr, libc::MSG_CMSG_CLOEXEC)?;
    // SAFETY: the kernel filled msg_control and set msg_controllen; CMSG_FIRSTHDR returns null
    // unless a whole cmsghdr fits, and an SCM_RIGHTS cmsg from our peer carries one int.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_level != libc::SOL_SOCKET || (*c).cmsg_type != libc::SCM_RIGHTS || ((*c).cmsg_len as usize) < libc::CMSG_LEN(4) as usize {
            return Err(io::Error::from_raw_os_error(libc::EPROTO));
        }
        Ok(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_a_descriptor() {
        let mut sv = [0i32; 2];
        syscall!(SYS_socketpair, libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, sv.as_mut_ptr()).unwrap();
        let mut p = [0i32; 2];
        syscall!(SYS_pipe2, p.as_mut_ptr(), libc::O_CLOEXEC).unwrap();
        send_fd(sv[0], p[1]).unwrap();
        let got = recv_fd(sv[1]).unwrap();
        assert!(got >= 0 && got != p[1]);
        syscall!(SYS_write, got, b"x".as_ptr(), 1usize).unwrap();
        let mut b = [0u8; 1];
        assert_eq!(syscall!(SYS_read, p[0], b.as_mut_ptr(), 1usize).unwrap(), 1);
        // A message without a descriptor is refused.
        syscall!(SYS_sendto, sv[0], b"y".as_ptr(), 1usize, 0, 0usize, 0usize).unwrap();
        assert_eq!(recv_fd(sv[1]).unwrap_err().raw_os_error(), Some(libc::EPROTO));
        for fd in [sv[0], sv[1], p[0], p[1], got] {
            let _ = syscall!(SYS_close, fd);
        }
    }
}

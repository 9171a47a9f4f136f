//! The BPF program the command runs under, written with symbolic jump labels and resolved by a
//! tiny assembler (`assemble`), so no jump offset is ever counted by hand.
//!
//! What it does (x86_64 only; `seccomp_data`: nr at 0, arch at 4, args[i] at 16 + 8i, low half
//! first):
//! - a foreign ABI (AUDIT_ARCH != x86_64: i386 via `int 0x80`) or an x32 syscall (nr has bit
//!   0x40000000): ERRNO(ENOSYS), the whole ABI, see `DENY_ABI`;
//! - `io_uring_setup`/`_enter`/`_register`: ERRNO(ENOSYS) (an io_uring submits connect and
//!   sendmsg without a syscall the filter sees; Docker's default profile does the same, and
//!   tokio, libuv and glibc fall back to epoll/plain syscalls);
//! - `connect`: notify, unless marked by libtsproxy.so (`sys::SECCOMP_MARK` in the upper,
//!   kernel-ignored half of the socklen_t argument);
//! - `sendto` with a non-NULL address: notify, unless marked the same way;
//! - `sendmsg`: notify (the address is inside the msghdr in the target's memory, out of the
//!   filter's reach), unless the upper half of the flags argument (ignored by the kernel: the
//!   syscall takes `unsigned int flags`) carries the mark; `sendmmsg`: notify;
//! - everything else: allow, at full speed.
use tsproxy_core::sys;

pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;
pub const RET_ALLOW: u32 = 0x7fff_0000;
pub const RET_NOTIFY: u32 = 0x7fc0_0000;
const RET_ERRNO: u32 = 0x0005_0000;

/// The answer to a foreign ABI or x32 syscall. ERRNO(ENOSYS) rather than KILL: it is what a
/// kernel built without that ABI answers for x32 (CONFIG_X86_X32_ABI=n, the usual distro
/// build), a program probing `int 0x80` gets an error it can handle instead of dying, and
/// nothing is sent either way. The whole ABI is refused, not only its socket calls: the filter
/// then knows one syscall table (x86_64), not two. A 32-bit program cannot run under the
/// supervisor (its first syscall fails): use --supervisor=off for it.
pub const DENY_ABI: u32 = RET_ERRNO | libc::ENOSYS as u32;
/// The answer to io_uring: ENOSYS, "not built in", so runtimes fall back quietly.
pub const DENY_IO_URING: u32 = RET_ERRNO | libc::ENOSYS as u32;

/// One instruction or a label. Jumps name their targets; `NEXT` is the next instruction.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    Label(&'static str),
    /// Load the 32-bit word at this offset of seccomp_data.
    Ld(u32),
    /// if A == k goto jt else goto jf
    Jeq(u32, &'static str, &'static str),
    /// if A & k != 0 goto jt else goto jf
    Jset(u32, &'static str, &'static str),
    /// if A > k goto jt else goto jf (unsigned)
    Jgt(u32, &'static str, &'static str),
    /// if A >= k goto jt else goto jf (unsigned)
    Jge(u32, &'static str, &'static str),
    Ret(u32),
}

pub const NEXT: &str = "";

const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JSET_K: u16 = 0x45;
const JGT_K: u16 = 0x25;
const JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;

/// Resolve labels into BPF jump offsets. Errors: an unknown or duplicate label, a backward
/// jump (classic BPF jumps forward only), a jump further than 255 instructions, or a program
/// that can run off its end (the last instruction must be a return).
pub fn assemble(ops: &[Op]) -> Result<Vec<libc::sock_filter>, String> {
    // A linear table, not a HashMap: the launcher assembles this on every start, and a
    // HashMap's first use costs a getrandom call and more than the whole assembly.
    let mut at: Vec<(&str, usize)> = Vec::new();
    let mut n = 0usize;
    for op in ops {
        match op {
            Op::Label(l) => {
                if l.is_empty() || at.iter().any(|(x, _)| x == l) {
                    return Err(format!("bad or duplicate label {l:?}"));
                }
                at.push((l, n));
            }
            _ => n += 1,
        }
    }
    let mut out = Vec::with_capacity(n);
    for op in ops {
        let pc = out.len();
        let off = |l: &str| -> Result<u8, String> {
            if l == NEXT {
                return Ok(0);
            }
            let t = at.iter().find(|(x, _)| *x == l).map(|&(_, i)| i).ok_or_else(|| format!("unknown label {l:?}"))?;
            let d = t.checked_sub(pc + 1).ok_or_else(|| format!("backward jump to {l:?}"))?;
            u8::try_from(d).map_err(|_| format!("jump to {l:?} too far"))
        };
        let s = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
        match *op {
            Op::Label(_) => {}
            Op::Ld(k) => out.push(s(LD_W_ABS, 0, 0, k)),
            Op::Jeq(k, t, f) => out.push(s(JEQ_K, off(t)?, off(f)?, k)),
            Op::Jset(k, t, f) => out.push(s(JSET_K, off(t)?, off(f)?, k)),
            Op::Jgt(k, t, f) => out.push(s(JGT_K, off(t)?, off(f)?, k)),
            Op::Jge(k, t, f) => out.push(s(JGE_K, off(t)?, off(f)?, k)),
            Op::Ret(k) => out.push(s(RET_K, 0, 0, k)),
        }
    }
    if out.last().map(|i| i.code) != Some(RET_K) {
        return Err("the program can run off its end".into());
    }
    Ok(out)
}

const NR: u32 = 0;
const ARCH: u32 = 4;
const fn arg_lo(i: u32) -> u32 {
    16 + 8 * i
}
const fn arg_hi(i: u32) -> u32 {
    16 + 8 * i + 4
}

/// The program, symbolically.
///
/// Shaped for the syscalls it lets through, which are nearly all of them: range tests take any
/// number outside 42..=46 (connect, sendto, sendmsg), 307 (sendmmsg) and 425..=427 (io_uring)
/// to ALLOW in at most eight instructions, the return included (x32 numbers, which all have
/// bit 30 set, are caught on the way above 427). That is paid on every system call of a supervised process, and
/// once per syscall number when the filter is installed: the kernel runs the program for each
/// number to build its allow cache, which made the launcher's seccomp() cost grow with the
/// length of this path (about 55 µs for an eleven-instruction path, on the command's start).
pub fn program() -> Vec<Op> {
    use Op::*;
    let mark = (sys::SECCOMP_MARK >> 32) as u32;
    let nr = |n: i64| n as u32;
    const _: () = assert!(libc::SYS_connect == 42 && libc::SYS_sendto == 44 && libc::SYS_sendmsg == 46);
    const _: () = assert!(libc::SYS_io_uring_setup + 1 == libc::SYS_io_uring_enter && libc::SYS_io_uring_enter + 1 == libc::SYS_io_uring_register);
    vec![
        Ld(ARCH),
        Jeq(AUDIT_ARCH_X86_64, "native", NEXT),
        Ret(DENY_ABI),
        Label("native"),
        Ld(NR),
        Jgt(nr(libc::SYS_sendmsg), "high", NEXT),
        Jge(nr(libc::SYS_connect), NEXT, "allow"),
        // 42..=46
        Jeq(nr(libc::SYS_connect), "connect", NEXT),
        Jeq(nr(libc::SYS_sendto), "sendto", NEXT),
        Jeq(nr(libc::SYS_sendmsg), "sendmsg", "allow"),
        Label("high"),
        Jge(nr(libc::SYS_io_uring_setup), NEXT, "mid"),
        Jgt(nr(libc::SYS_io_uring_register), NEXT, "deny_io_uring"),
        // x32: every number has bit 30 set, so only this branch can see one.
        Jset(X32_SYSCALL_BIT, "deny_abi", "allow"),
        Label("mid"),
        Jeq(nr(libc::SYS_sendmmsg), "notify", "allow"),
        Label("connect"),
        Ld(arg_hi(2)), // socklen_t addrlen, upper half
        Jeq(mark, "allow", "notify"),
        Label("sendmsg"),
        Ld(arg_hi(2)), // unsigned int flags, upper half
        Jeq(mark, "allow", "notify"),
        Label("sendto"),
        Ld(arg_hi(5)), // socklen_t addrlen, upper half
        Jeq(mark, "allow", NEXT),
        Ld(arg_lo(4)), // dest_addr
        Jeq(0, NEXT, "notify"),
        Ld(arg_hi(4)),
        Jeq(0, "allow", "notify"),
        Label("allow"),
        Ret(RET_ALLOW),
        Label("notify"),
        Ret(RET_NOTIFY),
        Label("deny_abi"),
        Ret(DENY_ABI),
        Label("deny_io_uring"),
        Ret(DENY_IO_URING),
    ]
}

/// The assembled program. The assembler's errors are programming errors, caught by the unit
/// tests; at run time they turn into "no supervisor", never a panic.
pub fn filter() -> Result<Vec<libc::sock_filter>, String> {
    assemble(&program())
}

/// Run a program on a seccomp_data the way the kernel does: its verdict and the number of
/// instructions executed. For tests: the unit tests below and tests/launcher_review.rs, which
/// compiles this file too.
#[cfg(test)]
pub fn emulate(prog: &[libc::sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> (u32, usize) {
    let mut data = [0u8; 64];
    data[0..4].copy_from_slice(&nr.to_le_bytes());
    data[4..8].copy_from_slice(&arch.to_le_bytes());
    for (i, a) in args.iter().enumerate() {
        data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_le_bytes());
    }
    let (mut pc, mut acc) = (0usize, 0u32);
    // Classic BPF jumps forward only: at most one pass over the program.
    for steps in 1..=prog.len() {
        let i = &prog[pc];
        let hit = match i.code {
            LD_W_ABS => {
                acc = u32::from_le_bytes(data[i.k as usize..i.k as usize + 4].try_into().unwrap());
                pc += 1;
                continue;
            }
            RET_K => return (i.k, steps),
            JEQ_K => acc == i.k,
            JSET_K => acc & i.k != 0,
            JGT_K => acc > i.k,
            JGE_K => acc >= i.k,
            c => panic!("opcode {c:#x}"),
        };
        pc += 1 + if hit { i.jt } else { i.jf } as usize;
    }
    panic!("the program did not return")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(prog: &[libc::sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        emulate(prog, nr, arch, args).0
    }

    fn run(nr: i64, args: [u64; 6]) -> u32 {
        exec(&filter().unwrap(), nr as u32, AUDIT_ARCH_X86_64, args)
    }

    const M: u64 = sys::SECCOMP_MARK;

    #[test]
    fn connect_and_addressed_sendto_notify_unless_marked() {
        assert_eq!(run(libc::SYS_connect, [3, 0x1000, 16, 0, 0, 0]), RET_NOTIFY);
        assert_eq!(run(libc::SYS_connect, [3, 0, 0, 0, 0, 0]), RET_NOTIFY);
        assert_eq!(run(libc::SYS_connect, [3, 0x1000, 16 | M, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(libc::SYS_connect, [3, 0x1000, 16 | 1 << 33, 0, 0, 0]), RET_NOTIFY);
        assert_eq!(run(libc::SYS_sendto, [3, 1, 1, 0, 0x7fff_0000_1000, 16]), RET_NOTIFY);
        assert_eq!(run(libc::SYS_sendto, [3, 1, 1, 0, 0x1000, 16]), RET_NOTIFY);
        assert_eq!(run(libc::SYS_sendto, [3, 1, 1, 0, 0x7fff_0000_0000, 16]), RET_NOTIFY);
        assert_eq!(run(libc::SYS_sendto, [3, 1, 1, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(libc::SYS_sendto, [3, 1, 1, 0, 0x1000, 16 | M]), RET_ALLOW);
    }

    #[test]
    fn sendmsg_and_sendmmsg_notify() {
        assert_eq!(run(libc::SYS_sendmsg, [3, 0x1000, 0, 0, 0, 0]), RET_NOTIFY);
        assert_eq!(run(libc::SYS_sendmsg, [3, 0x1000, libc::MSG_NOSIGNAL as u64, 0, 0, 0]), RET_NOTIFY);
        assert_eq!(run(libc::SYS_sendmsg, [3, 0x1000, M, 0, 0, 0]), RET_ALLOW);
        assert_eq!(run(libc::SYS_sendmmsg, [3, 0x1000, 2, 0, 0, 0]), RET_NOTIFY);
        assert_eq!(run(libc::SYS_sendmmsg, [3, 0x1000, 2, M, 0, 0]), RET_NOTIFY);
    }

    #[test]
    fn io_uring_is_enosys() {
        for nr in [libc::SYS_io_uring_setup, libc::SYS_io_uring_enter, libc::SYS_io_uring_register] {
            assert_eq!(run(nr, [8, 0x1000, 0, 0, 0, 0]), RET_ERRNO | libc::ENOSYS as u32, "nr {nr}");
        }
    }

    #[test]
    fn foreign_abis_and_x32_are_denied() {
        let prog = filter().unwrap();
        const AUDIT_ARCH_I386: u32 = 0x4000_0003;
        // i386 socketcall (102) and connect (362), and anything else.
        for nr in [102, 362, 1, 4] {
            assert_eq!(exec(&prog, nr, AUDIT_ARCH_I386, [0; 6]), DENY_ABI, "i386 nr {nr}");
        }
        assert_eq!(exec(&prog, libc::SYS_connect as u32, 0, [0; 6]), DENY_ABI);
        // x32: the x86_64 arch with bit 30 set in nr; connect is 42 there as well.
        for nr in [42, 44, 0, 1, 60, 231] {
            assert_eq!(exec(&prog, X32_SYSCALL_BIT | nr, AUDIT_ARCH_X86_64, [0; 6]), DENY_ABI, "x32 nr {nr}");
        }
    }

    #[test]
    fn everything_else_is_allowed() {
        for nr in
            [libc::SYS_read, libc::SYS_write, libc::SYS_socket, libc::SYS_recvfrom, libc::SYS_recvmsg, libc::SYS_bind, libc::SYS_exit_group, libc::SYS_execve]
        {
            assert_eq!(run(nr, [1; 6]), RET_ALLOW, "nr {nr}");
        }
    }

    /// Every native number up to past the last syscall, against the rule written plainly.
    #[test]
    fn every_number_gets_the_plain_rule() {
        let prog = filter().unwrap();
        let notified = [libc::SYS_connect, libc::SYS_sendto, libc::SYS_sendmsg, libc::SYS_sendmmsg];
        let uring = [libc::SYS_io_uring_setup, libc::SYS_io_uring_enter, libc::SYS_io_uring_register];
        for nr in 0..1024i64 {
            // Arguments that make connect/sendto/sendmsg notify (an address, no mark).
            let got = exec(&prog, nr as u32, AUDIT_ARCH_X86_64, [3, 0x1000, 16, 0, 0x1000, 16]);
            let want = if notified.contains(&nr) {
                RET_NOTIFY
            } else if uring.contains(&nr) {
                DENY_IO_URING
            } else {
                RET_ALLOW
            };
            assert_eq!(got, want, "nr {nr}");
        }
    }

    /// The allow path is short: at most 8 instructions (the return included) for any allowed
    /// number outside 42..=46.
    #[test]
    fn allowed_numbers_take_a_short_path() {
        let prog = filter().unwrap();
        for nr in 0..1024u32 {
            let (ret, steps) = emulate(&prog, nr, AUDIT_ARCH_X86_64, [0; 6]);
            if ret == RET_ALLOW && !(42..=46).contains(&nr) {
                assert!(steps <= 8, "nr {nr}: {steps} instructions");
            }
        }
    }

    #[test]
    fn assembler_resolves_and_rejects() {
        use Op::*;
        let p = assemble(&[Ld(0), Jeq(1, "b", NEXT), Jeq(2, "a", "b"), Label("a"), Ret(1), Label("b"), Ret(2)]).unwrap();
        assert_eq!((p[1].jt, p[1].jf), (2, 0));
        assert_eq!((p[2].jt, p[2].jf), (0, 1));
        assert!(assemble(&[Label("a"), Ld(0), Jeq(1, "a", NEXT), Ret(0)]).unwrap_err().contains("backward"));
        assert!(assemble(&[Jeq(1, "nope", NEXT), Ret(0)]).unwrap_err().contains("unknown"));
        assert!(assemble(&[Label("a"), Label("a"), Ret(0)]).unwrap_err().contains("duplicate"));
        assert!(assemble(&[Ld(0)]).unwrap_err().contains("off its end"));
        let mut far = vec![Jeq(0, "end", NEXT)];
        far.extend(std::iter::repeat(Ld(0)).take(256));
        far.extend([Label("end"), Ret(0)]);
        assert!(assemble(&far).unwrap_err().contains("too far"));
    }
}

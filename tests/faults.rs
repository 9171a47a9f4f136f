//! Reliability (no-root tier): a scriptable misbehaving proxy. For every fault the application
//! gets a clean errno from connect()/SO_ERROR (or a clean read error mid-stream), never waits past
//! its own timeout, never crashes, and its fd count returns to where it started — through a
//! blocking connect (tcpclient) and a nonblocking one under epoll (evloop).
mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
enum Fault {
    CloseAtGreeting,
    CloseAtAuth,
    CloseAfterRequest,
    GarbageGreeting,
    WrongVersion,
    TruncatedReply,
    UnknownAtyp,
    RejectAuth,
    Trickle,
    /// A valid reply with the longest BND address (a 255-byte domain), then a working tunnel.
    LongBndAddress,
    /// Tunnel up, the peer's banner relayed, then the proxy process "dies" (RST).
    KilledMidTransfer,
    HttpHugeHead,
    HttpGarbage,
    HttpCloseMidHead,
}

fn exact(s: &mut TcpStream, n: usize) -> Option<Vec<u8>> {
    let mut v = vec![0; n];
    s.read_exact(&mut v).ok().map(|_| v)
}

/// Read a SOCKS5 CONNECT request after the method exchange.
fn read_request(s: &mut TcpStream) -> Option<()> {
    let h = exact(s, 4)?;
    let rest = match h[3] {
        1 => 6,
        4 => 18,
        _ => exact(s, 1)?[0] as usize + 2,
    };
    exact(s, rest).map(|_| ())
}

fn session(mut s: TcpStream, f: Fault, banner: SocketAddr) -> Option<()> {
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    if matches!(f, Fault::HttpHugeHead | Fault::HttpGarbage | Fault::HttpCloseMidHead) {
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        match f {
            Fault::HttpHugeHead => {
                s.write_all(b"HTTP/1.1 200 OK\r\n").ok()?;
                for i in 0..400 {
                    s.write_all(format!("X-Filler-{i}: {}\r\n", "y".repeat(40)).as_bytes()).ok()?;
                }
                s.write_all(b"\r\n").ok()?;
            }
            Fault::HttpGarbage => s.write_all(b"\x00\x01garbage\r\n\r\n").ok()?,
            _ => s.write_all(b"HTTP/1.1 200 Conn").ok()?,
        }
        thread::sleep(Duration::from_millis(200));
        return Some(());
    }
    let h = exact(&mut s, 2)?;
    let methods = exact(&mut s, h[1] as usize)?;
    let wants_auth = methods.contains(&2) && matches!(f, Fault::CloseAtAuth | Fault::RejectAuth);
    match f {
        Fault::CloseAtGreeting => return Some(()),
        Fault::GarbageGreeting => return s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").ok(),
        Fault::WrongVersion => return s.write_all(&[4, 0]).ok(),
        _ => {}
    }
    s.write_all(&[5, if wants_auth { 2 } else { 0 }]).ok()?;
    if wants_auth {
        let v = exact(&mut s, 2)?;
        exact(&mut s, v[1] as usize)?;
        let pl = exact(&mut s, 1)?[0] as usize;
        exact(&mut s, pl)?;
        if matches!(f, Fault::CloseAtAuth) {
            return Some(());
        }
        return s.write_all(&[1, 1]).ok();
    }
    read_request(&mut s)?;
    match f {
        Fault::CloseAfterRequest => Some(()),
        Fault::TruncatedReply => s.write_all(&[5, 0, 0, 1, 0, 0]).ok(),
        Fault::UnknownAtyp => s.write_all(&[5, 0, 0, 9, 1, 2, 3, 4, 0, 80]).ok(),
        Fault::Trickle => {
            for b in [5u8, 0, 0, 1, 127, 0, 0, 1, 0, 80] {
                s.write_all(&[b]).ok()?;
                thread::sleep(Duration::from_secs(1));
            }
            Some(())
        }
        Fault::LongBndAddress | Fault::KilledMidTransfer => {
            let mut reply = vec![5, 0, 0, 3, 255];
            reply.extend(std::iter::repeat(b'b').take(255));
            reply.extend([0, 80]);
            let up = TcpStream::connect(banner).ok()?;
            s.write_all(&reply).ok()?;
            if matches!(f, Fault::KilledMidTransfer) {
                let mut up = up;
                let mut line = [0u8; 13];
                up.read_exact(&mut line).ok()?;
                s.write_all(&line).ok()?;
                thread::sleep(Duration::from_millis(200));
                // Die: reset the connection instead of closing it.
                let sock = s.try_clone().ok()?;
                set_linger_zero(&sock);
                drop(sock);
                drop(s);
                return Some(());
            }
            relay(s, up);
            Some(())
        }
        _ => Some(()),
    }
}

fn set_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    #[repr(C)]
    struct Linger {
        onoff: i32,
        linger: i32,
    }
    extern "C" {
        fn setsockopt(fd: i32, level: i32, name: i32, val: *const Linger, len: u32) -> i32;
    }
    let l = Linger { onoff: 1, linger: 0 };
    // SAFETY: a valid socket and a correctly sized option value. (SOL_SOCKET=1, SO_LINGER=13)
    unsafe { setsockopt(s.as_raw_fd(), 1, 13, &l, 8) };
}

fn fault_proxy(f: Fault) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    let banner = banner_peer("faulty");
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            thread::spawn(move || session(s, f, banner));
        }
    });
    a
}

fn url(f: Fault, addr: SocketAddr) -> String {
    match f {
        Fault::CloseAtAuth | Fault::RejectAuth => format!("socks5://user:pw@{addr}"),
        Fault::HttpHugeHead | Fault::HttpGarbage | Fault::HttpCloseMidHead => format!("http://{addr}"),
        _ => format!("socks5://{addr}"),
    }
}

fn run(prog: &str, args: &[&str], proxy: &str) -> (std::process::Output, Duration) {
    let t = Instant::now();
    let out = preloaded(harness(prog)).args(args).env("TSPROXY_PROXY", proxy).output().unwrap();
    (out, t.elapsed())
}

#[test]
fn every_fault_gives_a_clean_errno_blocking_and_nonblocking() {
    let refusing = [
        Fault::CloseAtGreeting,
        Fault::CloseAtAuth,
        Fault::CloseAfterRequest,
        Fault::GarbageGreeting,
        Fault::WrongVersion,
        Fault::TruncatedReply,
        Fault::UnknownAtyp,
        Fault::RejectAuth,
        Fault::HttpHugeHead,
        Fault::HttpGarbage,
        Fault::HttpCloseMidHead,
    ];
    for f in refusing {
        let proxy = url(f, fault_proxy(f));
        let (out, took) = run("tcpclient", &["-T", "3000", "100.64.0.2", "7"], &proxy);
        let k = kv(&out);
        assert_eq!(out.status.code(), Some(2), "{f:?} blocking: {}", text(&out));
        assert_eq!(k["errno"], "ECONNREFUSED", "{f:?} blocking: {}", text(&out));
        assert!(took < Duration::from_millis(2500), "{f:?} took {took:?}");
        let (out, took) = run("evloop", &["-m", "epoll", "-t", "3000", "100.64.0.2", "7"], &proxy);
        let k = kv(&out);
        let ctx = format!("{f:?} nonblocking: {}", text(&out));
        assert_eq!(k.get("connect").map(String::as_str), Some("EINPROGRESS"), "{ctx}");
        // The error is reported once, by whichever call looks first (as for a refused dial).
        assert!(k.values().any(|v| v == "ECONNREFUSED"), "{ctx}");
        assert!(!k.contains_key("result"), "failed, not timed out: {ctx}");
        assert_eq!(k["fds_before"], k["fds_after"], "{ctx}");
        assert!(took < Duration::from_millis(2500), "{f:?} took {took:?}");
    }
}

#[test]
fn a_trickling_proxy_never_holds_past_the_apps_timeout() {
    let proxy = url(Fault::Trickle, fault_proxy(Fault::Trickle));
    let (out, took) = run("tcpclient", &["-T", "1500", "100.64.0.2", "7"], &proxy);
    assert_eq!(kv(&out)["errno"], "ETIMEDOUT", "{}", text(&out));
    assert!(took >= Duration::from_millis(1400) && took < Duration::from_millis(2500), "{took:?}");
    let (out, took) = run("evloop", &["-m", "poll", "-t", "1500", "100.64.0.2", "7"], &proxy);
    let k = kv(&out);
    assert_eq!(k.get("result").map(String::as_str), Some("timeout"), "{}", text(&out));
    assert_eq!(k["fds_before"], k["fds_after"]);
    assert!(took < Duration::from_millis(2500), "{took:?}");
}

#[test]
fn longest_bnd_address_is_read_exactly() {
    let proxy = url(Fault::LongBndAddress, fault_proxy(Fault::LongBndAddress));
    let (out, _) = run("tcpclient", &["-r", "100.64.0.2", "7"], &proxy);
    assert_eq!(kv(&out).get("reply").map(String::as_str), Some("HELLO faulty"), "{}", text(&out));
    let (out, _) = run("evloop", &["-m", "epoll-et", "-r", "100.64.0.2", "7"], &proxy);
    assert_eq!(kv(&out).get("reply").map(String::as_str), Some("HELLO faulty"), "{}", text(&out));
}

#[test]
fn proxy_dying_mid_transfer_is_a_clean_read_error() {
    let proxy = url(Fault::KilledMidTransfer, fault_proxy(Fault::KilledMidTransfer));
    for (prog, args) in [("tcpclient", vec!["-r", "100.64.0.2", "7"]), ("evloop", vec!["-m", "epoll", "-r", "100.64.0.2", "7"])] {
        let (out, took) = run(prog, &args, &proxy);
        let k = kv(&out);
        assert_eq!(out.status.code(), Some(0), "{prog}: no crash: {}", text(&out));
        assert_eq!(k.get("reply").map(String::as_str), Some("HELLO faulty"), "{prog}: {}", text(&out));
        assert!(took < Duration::from_secs(5));
    }
}

#[test]
fn environment_values_are_parsed_never_executed() {
    let marker = std::env::temp_dir().join(format!("tsproxy-pwned-{}", std::process::id()));
    let evil = format!("socks5://$(touch {m})`touch {m}`@127.0.0.1:1;touch {m}", m = marker.display());
    let (out, _) = run("tcpclient", &["100.64.0.2", "7"], &evil);
    assert_eq!(kv(&out)["errno"], "ECONNREFUSED", "{}", text(&out));
    let out = std::process::Command::new(launcher()).args(["--proxy", &evil, "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(launcher()).arg("true").env("TSPROXY_LOG_FILE", format!("/tmp/$(touch {})", marker.display())).output().unwrap();
    assert!(out.status.success());
    assert!(!marker.exists(), "a value was executed");
}

#[test]
fn exec_chains_keep_working() {
    let n = net();
    let script = format!("exec sh -c 'exec sh -c \"exec {} -r peer-1 7\"'", harness("tcpclient").display());
    let out = std::process::Command::new(launcher()).args(["--proxy", &n.socks.url(), "sh", "-c", &script]).output().unwrap();
    assert_eq!(kv(&out).get("reply").map(String::as_str), Some("HELLO tailnet"), "{}", text(&out));
}

//! UDP to tailnet destinations through SOCKS5 UDP ASSOCIATE (issue 12), root tier: the
//! namespaces of tests/netns/topology.sh, UDP echo peers on 100.64.0.2 and fd7a:115c:a1e0::2
//! port 4002 in the "tailnet", dante-server (127.0.0.1:1081, user/pass) relaying, microsocks
//! (127.0.0.1:1080) as the proxy that refuses UDP ASSOCIATE. Real clients: python (connected,
//! unconnected, names, IPv6, asyncio, 20 in flight, fork), node `dgram`, c-harness/udp_calls
//! (sendmmsg/recvmmsg, MSG_PEEK|MSG_TRUNC, control messages, strangers, EMSGSIZE), and
//! c-harness/udp_lazy (static and dynamic: a connect opens no association, the first datagram
//! does; musl's getaddrinfo sorting; 200 idle connected sockets against the supervisor). Each run is
//! its own uid with its own leak meter (tests/common/world.rs), which must stay at zero.
mod common;

use common::world::*;
use common::{harness, supervisor_of};

const DANTE: &str = "socks5://tsproxy-px:px-pass-4711@127.0.0.1:1081";

fn py(m: &Meter, script: &str, proxy: &str) -> Outcome {
    m.attack(Via::Preload, &["python3", "-c", script]).env("TSPROXY_PROXY", proxy).secs(30).run()
}

#[test]
fn python_unconnected_connected_names_ipv6_through_dante() {
    let Some(m) = Meter::fresh() else { return };
    let script = r#"
import socket
def ask(fam, dest, payload):
    s = socket.socket(fam, socket.SOCK_DGRAM); s.settimeout(5)
    s.sendto(payload, dest)
    d, f = s.recvfrom(100)
    return s, d, f
for name, fam, host in [("v4", socket.AF_INET, "100.64.0.2"), ("v6", socket.AF_INET6, "fd7a:115c:a1e0::2"),
                        ("name", socket.AF_INET, "peer-1"), ("fqdn", socket.AF_INET, "peer-1.tail1234.ts.net"),
                        ("name6", socket.AF_INET6, "peer6")]:
    s, d, f = ask(fam, (host, 4002), b"u-" + name.encode())
    print(f"{name}_data={d.decode()}")
    print(f"{name}_from_ok={f[:2] == socket.getaddrinfo(host, 4002, fam, socket.SOCK_DGRAM)[0][4][:2]}")
    # The same socket, connected now: send/recv, getpeername.
    s.connect((host, 4002)); s.send(b"c-" + name.encode())
    print(f"{name}_conn={s.recv(100).decode()}")
    print(f"{name}_peer_ok={s.getpeername()[:2] == socket.getaddrinfo(host, 4002, fam, socket.SOCK_DGRAM)[0][4][:2]}")
    print(f"{name}_sockname_lo={s.getsockname()[0] in ('127.0.0.1', '::ffff:127.0.0.1')}")
    s.close()
# 20 datagrams in flight on one socket, then all 20 read back.
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
for i in range(20):
    s.sendto(b"f%02d" % i, ("100.64.0.2", 4002))
got = sorted(s.recvfrom(100)[0] for _ in range(20))
print("inflight_ok=%s" % (got == [b"f%02d" % i for i in range(20)]))
# The control connection: a high, close-on-exec descriptor of tsproxy's, gone with the socket.
import os, fcntl, resource
fds = lambda: set(int(x) for x in os.listdir("/proc/self/fd"))
before = fds()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
u.sendto(b"x", ("100.64.0.2", 4002)); u.recvfrom(10)
def valid(e):
    try:
        fcntl.fcntl(e, fcntl.F_GETFD); return True
    except OSError:
        return False  # the directory listdir had open
extra = sorted(e for e in fds() - before - {u.fileno()} if valid(e))
soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
print("ctl_high=%s" % (len(extra) == 1 and extra[0] >= min(soft, 65536) * 3 // 4))
print("ctl_cloexec=%s" % all(fcntl.fcntl(e, fcntl.F_GETFD) & fcntl.FD_CLOEXEC for e in extra))
try:
    os.close(extra[0]); print("ctl_closable=True")
except OSError as e:
    print("ctl_closable=False")
u.close()
print("ctl_gone=%s" % (not any(valid(e) for e in extra)))
"#;
    let r = py(&m, script, DANTE).expect_clean();
    let k = r.kv();
    for n in ["v4", "v6", "name", "fqdn", "name6"] {
        assert_eq!(k.get(&format!("{n}_data")).map(String::as_str), Some(format!("u-{n}").as_str()), "{}", r.text());
        assert_eq!(k[&format!("{n}_from_ok")], "True", "{n}: {}", r.text());
        assert_eq!(k[&format!("{n}_conn")], format!("c-{n}"), "{}", r.text());
        assert_eq!(k[&format!("{n}_peer_ok")], "True", "{n}: {}", r.text());
        assert_eq!(k[&format!("{n}_sockname_lo")], "False", "{n}: getsockname shows the relay's side: {}", r.text());
    }
    assert_eq!(k["inflight_ok"], "True", "{}", r.text());
    for (key, want) in [("ctl_high", "True"), ("ctl_cloexec", "True"), ("ctl_closable", "False"), ("ctl_gone", "True")] {
        assert_eq!(k[key], want, "{key}: {}", r.text());
    }
}

#[test]
fn python_asyncio_datagram_endpoint_and_fork() {
    let Some(m) = Meter::fresh() else { return };
    let script = r#"
import asyncio, socket, os
class P(asyncio.DatagramProtocol):
    def __init__(self): self.got = []; self.done = asyncio.get_event_loop().create_future()
    def datagram_received(self, d, a):
        self.got.append((d, a))
        if len(self.got) == 20 and not self.done.done(): self.done.set_result(None)
async def main():
    loop = asyncio.get_running_loop()
    t, p = await loop.create_datagram_endpoint(P, remote_addr=("100.64.0.2", 4002))
    for i in range(20): t.sendto(b"a%02d" % i)
    await asyncio.wait_for(p.done, 5)
    print("asyncio_ok=%s" % (sorted(d for d, _ in p.got) == [b"a%02d" % i for i in range(20)]))
    print("asyncio_from=%s:%d" % p.got[0][1][:2])
    t.close()
    t, p = await loop.create_datagram_endpoint(P, family=socket.AF_INET6, local_addr=("::", 0))
    for i in range(20): t.sendto(b"a%02d" % i, ("fd7a:115c:a1e0::2", 4002))
    await asyncio.wait_for(p.done, 5)
    print("asyncio6_ok=%s" % (sorted(d for d, _ in p.got) == [b"a%02d" % i for i in range(20)]))
    t.close()
asyncio.run(main())
# fork: the child keeps using the socket (and its association).
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
s.sendto(b"parent", ("100.64.0.2", 4002)); print("parent=%s" % s.recvfrom(100)[0].decode(), flush=True)
pid = os.fork()
if pid == 0:
    s.sendto(b"child", ("100.64.0.2", 4002)); print("child=%s" % s.recvfrom(100)[0].decode(), flush=True); os._exit(0)
os.waitpid(pid, 0)
s.sendto(b"after", ("100.64.0.2", 4002)); print("after=%s" % s.recvfrom(100)[0].decode())
"#;
    let r = py(&m, script, DANTE).expect_clean();
    let k = r.kv();
    assert_eq!(k.get("asyncio_ok").map(String::as_str), Some("True"), "{}", r.text());
    assert_eq!(k["asyncio_from"], "100.64.0.2:4002", "{}", r.text());
    assert_eq!(k.get("asyncio6_ok").map(String::as_str), Some("True"), "{}", r.text());
    assert_eq!((k["parent"].as_str(), k["child"].as_str(), k["after"].as_str()), ("parent", "child", "after"), "{}", r.text());
}

#[test]
fn node_dgram_connected_and_unconnected() {
    let Some(m) = Meter::fresh() else { return };
    if !tool("node") {
        return;
    }
    let script = r#"
const dgram = require('dgram');
const t = setTimeout(() => { console.log('timeout=1'); process.exit(1); }, 8000);
const s = dgram.createSocket('udp4');
s.on('message', (msg, rinfo) => {
  console.log(`unconnected=${msg} from=${rinfo.address}:${rinfo.port}`);
  s.close();
  const c = dgram.createSocket('udp6');
  c.connect(4002, 'fd7a:115c:a1e0::2', () => {
    c.send('node-conn');
    c.on('message', (m2, r2) => {
      console.log(`connected=${m2} from6=${r2.address} remote=${c.remoteAddress().address}`);
      clearTimeout(t); c.close();
    });
  });
});
s.send('node-unconn', 4002, '100.64.0.2');
"#;
    let r = m.attack(Via::Preload, &["node", "-e", script]).env("TSPROXY_PROXY", DANTE).secs(30).run().expect_clean();
    let out = r.run.stdout.clone();
    assert!(out.contains("unconnected=node-unconn from=100.64.0.2:4002"), "{}", r.text());
    assert!(out.contains("connected=node-conn from6=fd7a:115c:a1e0::2 remote=fd7a:115c:a1e0::2"), "{}", r.text());
}

#[test]
fn c_sendmmsg_recvmmsg_peek_trunc_cmsg_strangers_emsgsize() {
    let Some(m) = Meter::fresh() else { return };
    let prog = harness("udp_calls");
    for (ip, lo) in [("100.64.0.2", "127.0.0.1"), ("fd7a:115c:a1e0::2", "::1")] {
        let r = m.attack(Via::Preload, &[s(&prog), ip, "4002"]).env("TSPROXY_PROXY", DANTE).run().expect_clean();
        let k = r.kv();
        let want = [
            ("mmsg", "3"),
            ("mmsg_ok", "1"),
            ("peek", "100"),
            ("peek_trunc", "1"),
            ("peek_bytes_ok", "1"),
            ("read", "100"),
            ("read_ok", "1"),
            ("read_from_ok", "1"),
            ("cmsg", "1"),
            ("stranger", lo),
            ("stranger_bytes", "8"),
            ("big", "EMSGSIZE"),
            ("peer_ok", "1"),
            ("conn_rw", "1"),
            ("conn_stranger_dropped", "1"),
        ];
        for (key, v) in want {
            assert_eq!(k.get(key).map(String::as_str), Some(v), "{ip} {key}: {}", r.text());
        }
    }
}

#[test]
fn refusing_or_missing_proxy_means_enetunreach_never_a_direct_packet() {
    let Some(m) = Meter::fresh() else { return };
    let script = r#"
import socket, errno
for fam, host in [(socket.AF_INET, "100.64.0.2"), (socket.AF_INET6, "fd7a:115c:a1e0::2"), (socket.AF_INET, "peer-1")]:
    s = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        s.sendto(b"x", (host, 4002)); print(f"{host}=sent")
    except OSError as e:
        print(f"{host}={errno.errorcode[e.errno]}")
    try:
        s.connect((host, 4002)); print(f"{host}_connect=ok")
        s.send(b"y"); print(f"{host}_send=sent")
    except OSError as e:
        print(f"{host}_send={errno.errorcode[e.errno]}")
"#;
    // microsocks refuses UDP ASSOCIATE; port 1 has nothing; an HTTP proxy cannot carry UDP.
    for proxy in ["socks5://127.0.0.1:1080", "socks5://127.0.0.1:1", "http://tsuser:tspass@127.0.0.1:3128"] {
        let r = m.attack(Via::Preload, &["python3", "-c", script]).env("TSPROXY_PROXY", proxy).env("TSPROXY_LOG", "error").run().expect_clean();
        let k = r.kv();
        for h in ["100.64.0.2", "fd7a:115c:a1e0::2", "peer-1"] {
            assert_eq!(k[h], "ENETUNREACH", "{proxy} {h}: {}", r.text());
            // A connect opens no association (the first send does), so it succeeds.
            assert_eq!(k[&format!("{h}_connect")], "ok", "{proxy} {h}: {}", r.text());
            assert_eq!(k[&format!("{h}_send")], "ENETUNREACH", "{proxy} {h}: {}", r.text());
        }
        let err = r.run.stderr.clone();
        assert!(err.contains("no proxy relays UDP"), "{proxy}: one log line per refusal: {}", r.text());
    }
    // Control: the same uid and script with a relaying proxy gets its datagrams through (so
    // the refusals above are the proxies', not the script's).
    let r = m.attack(Via::Preload, &["python3", "-c", script]).env("TSPROXY_PROXY", DANTE).run().expect_clean();
    assert_eq!(r.get("100.64.0.2"), "sent", "{}", r.text());
    // And without tsproxy the datagram really is sent (the meter sees it: the attack is real).
    m.attack(Via::Plain, &["python3", "-c", script]).run().expect_leak();
}

#[test]
fn failover_from_microsocks_to_dante() {
    let Some(m) = Meter::fresh() else { return };
    let script = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
s.sendto(b"failover", ("100.64.0.2", 4002)); print("got=%s" % s.recvfrom(100)[0].decode())
"#;
    let r = m.attack(Via::Preload, &["python3", "-c", script]).env("TSPROXY_PROXY", &format!("socks5://127.0.0.1:1080,{DANTE}")).run().expect_clean();
    assert_eq!(r.get("got"), "failover", "{}", r.text());
}

/// `dig`'s answer lines (+short): one per record.
fn short(r: &Outcome) -> Vec<String> {
    r.run.stdout.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect()
}

/// The questions MagicDNS (topology.sh: dns_server.py --magic on 100.100.100.100) has seen.
fn magic_log() -> String {
    std::fs::read_to_string(format!("{RUN_DIR}/dns-magic.log")).unwrap_or_default()
}

#[test]
fn dig_and_nslookup_ask_magicdns_at_100_100_100_100_through_the_relay() {
    let Some(m) = Meter::fresh() else { return };
    if !tool("dig") {
        return;
    }
    // dig 9.18 sends on a connected socket through libuv; libuv before 1.45 with
    // syscall(SYS_sendmmsg)/syscall(SYS_recvmmsg): the syscall() dispatcher's path.
    let dig = |extra: &[&str], name: &str, proxy: &str| {
        let mut argv = vec!["dig", "@100.100.100.100", "+short", "+time=3", "+tries=1"];
        argv.extend_from_slice(extra);
        argv.push(name);
        m.attack(Via::Preload, &argv).env("TSPROXY_PROXY", proxy).secs(30).run()
    };
    for (extra, name, want) in [
        (&[][..], "peer-1.tail1234.ts.net", "100.64.0.2"),
        (&[][..], "peer-1", "100.64.0.2"),
        (&["AAAA"][..], "peer6.tail1234.ts.net", "fd7a:115c:a1e0::2"),
        // DNS over TCP to the same server (a tunnelled connect) for comparison.
        (&["+tcp"][..], "peer-1.tail1234.ts.net", "100.64.0.2"),
    ] {
        let r = dig(extra, name, DANTE).expect_clean();
        assert!(r.run.ok(), "dig {extra:?} {name}: {}", r.text());
        // MagicDNS's own answer (the peer's real address), not a placeholder of tsproxy's.
        assert_eq!(short(&r), vec![want.to_string()], "dig {extra:?} {name}: {}", r.text());
    }
    // The questions did reach the server in the tailnet, from the proxy's side of the veth
    // (dante's external address), over UDP and over TCP.
    let log = magic_log();
    for line in [
        "100.100.100.100 udp A peer-1.tail1234.ts.net from 10.200.0.1",
        "100.100.100.100 udp A peer-1 from 10.200.0.1",
        "100.100.100.100 udp AAAA peer6.tail1234.ts.net from 10.200.0.1",
        "100.100.100.100 tcp A peer-1.tail1234.ts.net from 10.200.0.1",
    ] {
        assert!(log.lines().any(|l| l == line), "MagicDNS never saw {line:?}: {log}");
    }
    // A name MagicDNS does not know: its NXDOMAIN, relayed as it is.
    let r = m
        .attack(Via::Preload, &["dig", "@100.100.100.100", "+time=3", "+tries=1", "nobody.tail1234.ts.net"])
        .env("TSPROXY_PROXY", DANTE)
        .secs(30)
        .run()
        .expect_clean();
    assert!(r.run.stdout.contains("status: NXDOMAIN"), "{}", r.text());
    if tool("nslookup") {
        let r = m
            .attack(Via::Preload, &["nslookup", "-timeout=3", "-retry=1", "peer-1.tail1234.ts.net", "100.100.100.100"])
            .env("TSPROXY_PROXY", DANTE)
            .secs(30)
            .run()
            .expect_clean();
        let out = r.run.stdout.clone();
        assert!(out.contains("Address: 100.64.0.2"), "nslookup: {}", r.text());
        assert!(out.contains("100.100.100.100#53"), "nslookup names the server it asked: {}", r.text());
    }
    // microsocks refuses UDP ASSOCIATE: dig gets no answer (ENETUNREACH on its send), and
    // nothing leaves directly.
    let r = dig(&[], "peer-1.tail1234.ts.net", "socks5://127.0.0.1:1080").expect_clean();
    assert!(!short(&r).iter().any(|l| l == "100.64.0.2"), "{}", r.text());
    // Control: without tsproxy dig's datagram is sent to 100.100.100.100 directly (the meter
    // counts it, the tailnet is unreachable from the workspace, so no answer).
    let c = m.attack(Via::Plain, &["dig", "@100.100.100.100", "+short", "+time=1", "+tries=1", "peer-1"]).secs(30).run().expect_leak();
    assert!(!short(&c).iter().any(|l| l == "100.64.0.2"), "{}", c.text());
}

#[test]
fn control_connection_killed_means_the_next_send_associates_again() {
    let Some(m) = Meter::fresh() else { return };
    if !tool("ss") {
        return;
    }
    // Two sockets, unconnected and connected; each reports the local port of its control
    // connection (the one new descriptor: a high one of tsproxy's), the test kills those TCP
    // connections (ss -K: a reset to dante, which ends the associations and closes their
    // relays), and each socket must send and receive again, through a new association.
    let script = r#"
import os, socket, sys, time
fds = lambda: set(int(x) for x in os.listdir("/proc/self/fd"))
def ctl_port(before, mine):
    for e in sorted(fds() - before - {mine}):
        try:
            c = socket.socket(fileno=e)
        except OSError:
            continue
        try:
            if c.type == socket.SOCK_STREAM:
                return c.getsockname()[1]
        finally:
            c.detach()
ports = []
before = fds()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
u.sendto(b"u1", ("100.64.0.2", 4002)); print("u1=%s" % u.recvfrom(100)[0].decode())
ports.append(ctl_port(before, u.fileno()))
before = fds()
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(5)
c.connect(("100.64.0.2", 4002)); c.send(b"c1"); print("c1=%s" % c.recv(100).decode())
ports.append(ctl_port(before, c.fileno()))
print("ports=%s" % ",".join(str(p) for p in ports), flush=True)
sys.stdin.readline()
time.sleep(0.5)  # past the 200 ms between looks at the control connection
u.sendto(b"u2", ("100.64.0.2", 4002)); print("u2=%s" % u.recvfrom(100)[0].decode())
c.send(b"c2")
try:
    print("c2=%s" % c.recv(100).decode())
except OSError as e:
    print("c2=%s" % e)
print("peer=%s:%d" % c.getpeername(), flush=True)
"#;
    let l0 = m.leak();
    let mut p = m.attack(Via::Preload, &["python3", "-c", script]).env("TSPROXY_PROXY", DANTE).env("TSPROXY_LOG", "info").secs(30).spawn();
    let mut lines = vec![p.line(), p.line()];
    let ports = p.line();
    lines.push(ports.clone());
    let ports: Vec<String> = ports.trim().strip_prefix("ports=").unwrap_or_else(|| panic!("{lines:?}")).split(',').map(String::from).collect();
    assert_eq!(ports.len(), 2, "{lines:?}");
    for port in &ports {
        assert!(port.parse::<u16>().is_ok(), "no control connection found: {lines:?}");
        let o = std::process::Command::new("ip")
            .args(["netns", "exec", "tsp-ws", "ss", "-K", "-t", "state", "established", &format!("( sport = :{port} and dport = :1081 )")])
            .output()
            .unwrap();
        assert!(o.status.success(), "ss -K: {}", String::from_utf8_lossy(&o.stderr));
        // Control: the kill took (ss lists it no more).
        let o = std::process::Command::new("ip")
            .args(["netns", "exec", "tsp-ws", "ss", "-Htn", "state", "established", &format!("( sport = :{port} )")])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&o.stdout).trim().is_empty(), "still there: {}", String::from_utf8_lossy(&o.stdout));
    }
    p.send("go\n");
    let run = p.finish();
    let leaked = m.leak() - l0;
    let all = format!("{lines:?}\n{}\n{}", run.stdout, run.stderr);
    assert_eq!(leaked, 0, "{all}");
    assert!(run.ok(), "{all}");
    for want in ["u1=u1", "c1=c1"] {
        assert!(lines.iter().any(|l| l.trim() == want), "{all}");
    }
    for want in ["u2=u2", "c2=c2", "peer=100.64.0.2:4002"] {
        assert!(run.stdout.lines().any(|l| l.trim() == want), "{want}: {all}");
    }
    // Both noticed the closed association and made a new one.
    assert_eq!(run.stderr.matches("the proxy closed the association; associating again").count(), 2, "{all}");
}

/// A static Go program (no libc, raw syscalls: only the supervisor sees it) with a connected
/// UDP socket to tailnet peers, v4 and v6, through dante's UDP ASSOCIATE relayed by the
/// supervisor (wrapper/src/supervisor/udp.rs). Control: the same program without tsproxy
/// leaks (the meter counts it); with microsocks, which refuses UDP ASSOCIATE, it is refused
/// and nothing leaks.
#[test]
fn static_go_connected_udp_through_the_supervisor() {
    let Some(m) = Meter::fresh() else { return };
    let Some(go) = common::go_client() else { return };
    let go = s(&go);
    let plain = m.attack(Via::Plain, &[go, "udp", "100.64.0.2:4002", "ctl"]).secs(20).run();
    assert!(m.leak() > 0, "control: the static program's datagram was not seen by the meter: {}", plain.text());
    let Some(m) = Meter::fresh() else { return };
    for dest in ["100.64.0.2:4002", "[fd7a:115c:a1e0::2]:4002"] {
        let r = m.attack(Via::Launcher, &[go, "udp", dest, "hello-static-udp"]).env("TSPROXY_PROXY", DANTE).secs(30).run();
        assert_eq!(r.run.stdout.trim(), "hello-static-udp", "{dest}: {}", r.text());
    }
    let r = m.attack(Via::Launcher, &[go, "udp", "100.64.0.2:4002", "x"]).env("TSPROXY_PROXY", "socks5://127.0.0.1:1080").secs(30).run();
    assert!(r.run.stdout.starts_with("ERR"), "microsocks refuses UDP ASSOCIATE: refused, not sent: {}", r.text());
    assert_eq!(m.leak(), 0);
}

// ---- The association opens at the first datagram, not at connect (issue 11 follow-up). ----

const MICROSOCKS: &str = "socks5://127.0.0.1:1080";

/// This uid's TCP connections to the proxies (SYNs to 127.0.0.1:1080 and :1081), counted by a
/// rule without a verdict at the head of chain `out` (tsp-ws). The counter's name, for
/// `counter`. Once per meter.
fn proxy_connections(m: &Meter) -> String {
    let name = format!("px_u{}", m.uid);
    let batch = format!(
        "add counter inet tsproxy {name}\n\
         insert rule inet tsproxy out ip daddr 127.0.0.1 tcp dport {{ 1080, 1081 }} tcp flags & (syn | ack) == syn meta skuid {} counter name {name}\n",
        m.uid
    );
    let mut c = std::process::Command::new("ip")
        .args(["netns", "exec", "tsp-ws", "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut c.stdin.take().unwrap(), batch.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success(), "the proxy connection counter: {}", String::from_utf8_lossy(&out.stderr));
    name
}

/// c-harness/udp_lazy.c, static (musl: the supervisor's case) or dynamic (the library's).
fn udp_lazy(musl: bool) -> Option<std::path::PathBuf> {
    if musl {
        build("udp_lazy", "udp_lazy-musl", true, &[])
    } else {
        build("udp_lazy", "udp_lazy", false, &[])
    }
}

/// A static musl program's getaddrinfo of a tailnet name under the launcher: the supervisor's
/// responder answers with placeholders of both families, and musl sorts them (RFC 3484) by
/// connecting a UDP socket to each and asking getsockname, sending nothing. Those connects
/// open no association: the proxy gets no connection, and with microsocks (no UDP ASSOCIATE)
/// nothing is printed. (Before, each answer opened a control connection, and microsocks'
/// refusals were error lines on the program's stderr.)
#[test]
fn static_musl_getaddrinfo_sorting_opens_no_association() {
    let Some(m) = Meter::fresh() else { return };
    let Some(p) = udp_lazy(true) else { return };
    let px = proxy_connections(&m);
    for proxy in [MICROSOCKS, DANTE] {
        for name in ["peer-1", "peer-1.tail1234.ts.net", "peer6"] {
            let c0 = counter(&px);
            let r = m.attack(Via::Launcher, &[s(&p), "gai", name]).env("TSPROXY_PROXY", proxy).run().expect_clean();
            // Two answers or more, one of them IPv6: musl sorts (it skips the sort otherwise).
            assert_eq!((r.get("rc").as_str(), r.get("v6").as_str()), ("0", "1"), "{proxy} {name}: {}", r.text());
            assert!(r.get("n").parse::<u32>().is_ok_and(|n| n >= 2), "{proxy} {name}: {}", r.text());
            assert_eq!(r.run.stderr.trim(), "", "{proxy} {name}: nothing printed: {}", r.text());
            assert_eq!(counter(&px), c0, "{proxy} {name}: a connection to the proxy for a lookup: {}", r.text());
        }
    }
}

/// A static program's connected UDP socket that sends: its first datagram opens the
/// association (one connection to the proxy: the counter's control) and is relayed end to end
/// through dante, v4 and v6, the reply back. With microsocks the association fails at the
/// first datagram: one error line, the datagram dropped, nothing sent directly.
#[test]
fn static_musl_connected_udp_associates_at_the_first_datagram() {
    let Some(m) = Meter::fresh() else { return };
    let Some(p) = udp_lazy(true) else { return };
    let px = proxy_connections(&m);
    for dest in ["100.64.0.2", "fd7a:115c:a1e0::2"] {
        let c0 = counter(&px);
        let r = m.attack(Via::Launcher, &[s(&p), "send", dest, "4002", "hello-lazy"]).env("TSPROXY_PROXY", DANTE).secs(30).run().expect_clean();
        assert_eq!((r.get("sent").as_str(), r.get("reply").as_str()), ("ok", "hello-lazy"), "{dest}: {}", r.text());
        assert!(counter(&px) > c0, "{dest}: the first datagram opened an association: {}", r.text());
    }
    let r = m.attack(Via::Launcher, &[s(&p), "send", "100.64.0.2", "4002", "x"]).env("TSPROXY_PROXY", MICROSOCKS).secs(30).run().expect_clean();
    assert_eq!(r.get("sent"), "ok", "the send itself goes to the loopback socket: {}", r.text());
    assert_eq!(r.get("reply"), "", "{}", r.text());
    assert_eq!(r.run.stderr.matches("no proxy relays UDP").count(), 1, "one line for the failed association: {}", r.text());
}

/// The supervisor's threads (but its dial workers: a pool of at most 12 that stay, started
/// when a connect finds none free), its descriptors, and its UDP threads (waiter, relays).
fn sup_load(sup: u32) -> (usize, usize, usize) {
    let comms: Vec<String> = std::fs::read_dir(format!("/proc/{sup}/task"))
        .map(|d| d.flatten().filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok()).collect())
        .unwrap_or_default();
    let fds = std::fs::read_dir(format!("/proc/{sup}/fd")).map(|d| d.count()).unwrap_or(0);
    let threads = comms.iter().filter(|c| !c.starts_with("tsproxy-dial")).count();
    (threads, fds, comms.iter().filter(|c| c.starts_with("tsproxy-udp")).count())
}

/// Wait (at most 12 s: a few of the supervisor's 2 s looks) until `f` holds.
fn settle(f: impl Fn() -> bool) -> bool {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < std::time::Duration::from_secs(12) {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    f()
}

/// 200 UDP sockets of a static program connected to a tailnet address and held, sending
/// nothing: one thread of the supervisor waits for all of them (no thread each, no
/// association, no connection to the proxy); once the program has closed them, the
/// supervisor's threads and descriptors are back where they were.
#[test]
fn static_musl_200_idle_connected_sockets_cost_one_thread_and_nothing_after_close() {
    let Some(m) = Meter::fresh() else { return };
    let Some(p) = udp_lazy(true) else { return };
    let px = proxy_connections(&m);
    let (c0, l0) = (counter(&px), m.leak());
    let mut run = m.attack(Via::Launcher, &[s(&p), "idle", "100.64.0.2", "4002", "200"]).env("TSPROXY_PROXY", DANTE).secs(60).spawn();
    let mut lines = vec![run.line(), run.line()];
    let pid: u32 = lines[1].strip_prefix("pid=").and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{lines:?}"));
    assert_eq!(lines[0], "warm=ok", "{lines:?}");
    // The supervisor: the holder of the responder socket named in the program's environment.
    let sup: u32 = supervisor_of(pid as i32).map(|s| s as u32).unwrap_or_else(|| panic!("no supervisor found for {pid}"));
    // The warm-up socket is closed: its waiter ends within a look or two.
    assert!(settle(|| sup_load(sup).2 == 0), "the warm-up's waiter did not end: {:?}", sup_load(sup));
    let (t0, f0, _) = sup_load(sup);
    run.send("go\n");
    lines.push(run.line());
    assert_eq!(lines[2], "held=200", "{lines:?}");
    let (t1, f1, u1) = sup_load(sup);
    eprintln!("supervisor {sup}: threads {t0} -> {t1} (udp {u1}), descriptors {f0} -> {f1} with 200 idle sockets");
    assert!(t1 <= t0 + 1 && u1 <= 1, "one waiter for all, no thread each: threads {t0} -> {t1}, udp threads {u1}");
    // Two each: `near`, and the supervisor's copy of the program's socket, which keeps the
    // program's address bound until the entry ends (another user cannot take it: below).
    assert!(f1 <= f0 + 400 + 4, "two descriptors each: {f0} -> {f1}");
    run.send("go\n");
    lines.push(run.line());
    assert_eq!(lines[3], "closed=200", "{lines:?}");
    let back = settle(|| {
        let (t, f, u) = sup_load(sup);
        t == t0 && f == f0 && u == 0
    });
    let (t2, f2, u2) = sup_load(sup);
    eprintln!("supervisor {sup}: after the close: threads {t2} (udp {u2}), descriptors {f2}");
    assert!(back, "not back after the close: threads {t0} -> {t2} (udp {u2}), descriptors {f0} -> {f2}");
    run.send("go\n");
    let end = run.finish();
    let all = format!("{lines:?}\n{}", end.text());
    assert!(end.ok(), "{all}");
    assert_eq!(end.stderr.trim(), "", "nothing printed: {all}");
    assert_eq!(counter(&px), c0, "no connection to the proxy: {all}");
    assert_eq!(m.leak(), l0, "{all}");
}

/// The library (dynamic programs): a UDP connect to a tailnet address, a name's placeholder
/// or an IPv6 peer opens no association either (no control connection: no new descriptor, no
/// connection at the proxy, nothing printed with microsocks); getsockname and getpeername
/// answer as before. The first send associates and is relayed, the socket keeping its port.
#[test]
fn library_udp_connect_opens_no_association_until_the_first_send() {
    let Some(m) = Meter::fresh() else { return };
    let Some(p) = udp_lazy(false) else { return };
    let px = proxy_connections(&m);
    let script = r#"
import os, socket
fds = lambda: len(os.listdir("/proc/self/fd"))
for tag, fam, host in [("v4", socket.AF_INET, "100.64.0.2"), ("v6", socket.AF_INET6, "fd7a:115c:a1e0::2"), ("name", socket.AF_INET, "peer-1")]:
    extra, ports, peers = 0, 0, 0
    for i in range(20):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        n0 = fds()
        s.connect((host, 4002))
        extra += fds() - n0
        me = s.getsockname()
        ports += me[1] != 0 and me[0] not in ("127.0.0.1", "::1")
        peers += s.getpeername()[:2] == socket.getaddrinfo(host, 4002, fam, socket.SOCK_DGRAM)[0][4][:2]
        s.close()
    print(f"{tag}_extra={extra}")
    print(f"{tag}_sockname={ports}")
    print(f"{tag}_peer={peers}")
"#;
    for proxy in [MICROSOCKS, DANTE] {
        let c0 = counter(&px);
        let r = py(&m, script, proxy).expect_clean();
        let k = r.kv();
        for tag in ["v4", "v6", "name"] {
            for (key, want) in [("extra", "0"), ("sockname", "20"), ("peer", "20")] {
                assert_eq!(k.get(&format!("{tag}_{key}")).map(String::as_str), Some(want), "{proxy} {tag}_{key}: {}", r.text());
            }
        }
        assert_eq!(r.run.stderr.trim(), "", "{proxy}: nothing printed: {}", r.text());
        assert_eq!(counter(&px), c0, "{proxy}: a connection to the proxy for a connect: {}", r.text());
    }
    for dest in ["100.64.0.2", "fd7a:115c:a1e0::2"] {
        let c0 = counter(&px);
        let r = m.attack(Via::Preload, &[s(&p), "send", dest, "4002", "hello-lib"]).env("TSPROXY_PROXY", DANTE).secs(30).run().expect_clean();
        assert_eq!((r.get("sent").as_str(), r.get("reply").as_str()), ("ok", "hello-lib"), "{dest}: {}", r.text());
        assert!(r.get("port") != "0" && r.get("port") == r.get("port_after"), "{dest}: the socket keeps its port: {}", r.text());
        assert!(counter(&px) > c0, "{dest}: the first send opened an association: {}", r.text());
    }
}

/// Another local user against the supervisor's relay of a static program's connected UDP
/// socket: the program exchanges a datagram with a tailnet echo peer through dante (with the
/// proxy's password), then closes its socket. Its address (127.0.0.1:port, connected to the
/// supervisor's loopback socket `near`: both in /proc/net/udp for anyone to read) must not be
/// takeable by another uid. Before 2026-12-07 the supervisor dropped its copy of the program's
/// socket at once and noticed the close only at its next look (up to 2 s): the other uid bound
/// the address, sent to `near`, and got its datagram relayed to the peer and the echo back —
/// the program's association, on the program's proxy credentials. Now the supervisor holds the
/// socket (so its address) until the entry ends: the bind fails.
#[test]
fn another_user_cannot_take_over_the_association_of_a_closed_socket() {
    let Some(m) = Meter::fresh() else { return };
    let Some(other) = Meter::fresh() else { return };
    let Some(p) = build("u_udp_stale", "u_udp_stale-musl", true, &[]) else { return };
    let mut run = m.attack(Via::Launcher, &[s(&p), "hold", "100.64.0.2", "4002"]).env("TSPROXY_PROXY", DANTE).secs(30).spawn();
    let lines = [run.line(), run.line(), run.line()];
    assert_eq!(lines[0], "echo=victim-hello", "the program's own exchange: {lines:?}");
    let port = lines[1].strip_prefix("local=").unwrap_or_else(|| panic!("{lines:?}")).to_string();
    let near = lines[2].strip_prefix("near=").unwrap_or_else(|| panic!("{lines:?}")).to_string();
    run.send("go\n");
    assert_eq!(run.line(), "closed=1");
    let r = other.attack(Via::Plain, &[s(&p), "squat", &port, &near]).secs(10).run();
    assert_eq!(r.get("reply"), "none", "another uid was relayed on the program's association: {}", r.text());
    assert_eq!(r.get("bound"), "0", "the program's address was free for another uid: {}", r.text());
    run.send("go\n");
    let end = run.finish();
    assert!(end.ok(), "{}", end.text());
    assert_eq!(m.leak() + other.leak(), 0);
}

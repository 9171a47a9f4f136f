#!/usr/bin/env python3
"""A real DNS server for the root tier (stdlib only), UDP and TCP on one address, port 53.

    dns_server.py LOG ADDR...
    dns_server.py --magic LOG ADDR...

Listens on every ADDR (one per test in tests/names.rs, so a test reads only the questions its
own programs asked). Answers `public.example` and every name under it: A -> 198.51.100.10 (the topology's public
server), any other type NOERROR without data; every other name NXDOMAIN. Appends one line per
question to LOG ("ADDR udp|tcp TYPE name": the address asked, the name as it arrived), flushed at once, so a test can
assert that no tailnet name ever reached it. It stands in for the system resolver of a program
whose resolv.conf names ADDR (tests/names.rs bind-mounts one).
The log is what the tests assert on: no tailnet name may ever appear in it.

With --magic it is MagicDNS instead (topology.sh runs it on 100.100.100.100 in the tailnet, for
programs that ask it themselves through tsproxy's UDP relay: `dig @100.100.100.100 peer-1`):
it answers the tailnet's names as tailscaled's resolver does (the short name and the FQDN under
tail1234.ts.net: A for peer-1, AAAA for peer6), the other types of those names NOERROR without
data, every other name NXDOMAIN; the log then shows which questions reached the tailnet.
"""
import socket
import struct
import sys
import threading

MAGIC = len(sys.argv) > 1 and sys.argv[1] == "--magic"
ARGS = sys.argv[2:] if MAGIC else sys.argv[1:]
LOG, ADDRS = ARGS[0], ARGS[1:]
PUBLIC = bytes([198, 51, 100, 10])
# MagicDNS's view (the proxies' /etc/hosts in topology.sh holds the same): name -> {qtype: rdata}.
TAILNET = {
    "peer-1": {1: bytes([100, 64, 0, 2])},
    "peer6": {28: bytes.fromhex("fd7a115ca1e000000000000000000002")},
}
TAILNET_DOMAIN = "tail1234.ts.net"
TYPES = {1: "A", 28: "AAAA", 5: "CNAME", 15: "MX", 16: "TXT", 33: "SRV", 12: "PTR", 65: "HTTPS", 64: "SVCB"}
log_lock = threading.Lock()
log = open(LOG, "a", buffering=1)


def question(msg):
    """(name, qtype, end offset of the question) of the first question, or None."""
    if len(msg) < 12 or struct.unpack(">H", msg[4:6])[0] < 1:
        return None
    labels, i = [], 12
    for _ in range(128):
        if i >= len(msg):
            return None
        n = msg[i]
        if n == 0:
            i += 1
            break
        if n & 0xC0:  # a pointer in a question: not from any client we test
            return None
        labels.append(msg[i + 1 : i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    else:
        return None
    if i + 4 > len(msg):
        return None
    qtype = struct.unpack(">H", msg[i : i + 2])[0]
    return ".".join(labels), qtype, i + 4


def answer(msg, addr, proto, peer):
    q = question(msg)
    ident, flags = struct.unpack(">HH", msg[:4]) if len(msg) >= 4 else (0, 0)
    rd = flags & 0x0100
    if q is None:
        # FORMERR, header only.
        return struct.pack(">HHHHHH", ident, 0x8000 | rd | 0x0080 | 1, 0, 0, 0, 0)
    name, qtype, end = q
    with log_lock:
        line = "%s %s %s %s" % (addr, proto, TYPES.get(qtype, str(qtype)), name)
        # MagicDNS also logs who asked (the proxy's address in the tailnet, for relayed questions).
        log.write(line + (" from %s" % peer[0] if MAGIC else "") + "\n")
    qsec = msg[12:end]
    low = name.lower().rstrip(".")
    if MAGIC:
        host = low[: -len(TAILNET_DOMAIN) - 1] if low.endswith("." + TAILNET_DOMAIN) else low
        rrs = TAILNET.get(host)
        ours = rrs is not None
        data = rrs.get(qtype) if ours else None
    else:
        ours = low == "public.example" or low.endswith(".public.example")
        data = PUBLIC if ours and qtype == 1 else None
    rcode = 0 if ours else 3
    answers = b""
    if data is not None:
        # Name: a pointer to the question (offset 12); TTL 60.
        answers = struct.pack(">HHHIH", 0xC00C, qtype, 1, 60, len(data)) + data
    # QR, AA, RD as asked, RA.
    hdr = struct.pack(">HHHHHH", ident, 0x8000 | 0x0400 | rd | 0x0080 | rcode, 1, 1 if answers else 0, 0, 0)
    return hdr + qsec + answers


def udp(addr):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 53))
    while True:
        msg, peer = s.recvfrom(4096)
        try:
            s.sendto(answer(msg, addr, "udp", peer), peer)
        except OSError:
            pass


def tcp_conn(c, addr):
    c.settimeout(10)
    try:
        for _ in range(64):
            hdr = b""
            while len(hdr) < 2:
                b = c.recv(2 - len(hdr))
                if not b:
                    return
                hdr += b
            n = struct.unpack(">H", hdr)[0]
            msg = b""
            while len(msg) < n:
                b = c.recv(n - len(msg))
                if not b:
                    return
                msg += b
            r = answer(msg, addr, "tcp", c.getpeername())
            c.sendall(struct.pack(">H", len(r)) + r)
    except OSError:
        pass
    finally:
        c.close()


def tcp(addr):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, 53))
    s.listen(64)
    while True:
        c, _ = s.accept()
        threading.Thread(target=tcp_conn, args=(c, addr), daemon=True).start()


threads = []
for a in ADDRS:
    for f in (udp, tcp):
        t = threading.Thread(target=f, args=(a,), daemon=True)
        t.start()
        threads.append(t)
for t in threads:
    t.join()

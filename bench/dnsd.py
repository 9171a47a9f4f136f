#!/usr/bin/env python3
"""The bench's system resolver: a plain UDP DNS server (stdlib only) that answers every A query
with 198.51.100.10 and every other query NOERROR without data, TTL 0 (nothing may be cached).
It answers tailnet-looking names too, as a resolver with MagicDNS would: the row "no preload,
tailnet name" is then what a lookup through the network costs."""
import socket, struct, sys

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
while True:
    q, a = s.recvfrom(2048)
    if len(q) < 17:
        continue
    i = 12
    while i < len(q) and q[i]:
        i += 1 + q[i]
    qtype = struct.unpack(">H", q[i + 1:i + 3])[0]
    ans = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 0, 4) + bytes([198, 51, 100, 10]) if qtype == 1 else b""
    s.sendto(q[:2] + b"\x81\x80" + q[4:6] + (b"\x00\x01" if ans else b"\x00\x00") + b"\x00\x00\x00\x00" + q[12:i + 5] + ans, a)

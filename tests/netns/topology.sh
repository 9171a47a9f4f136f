#!/usr/bin/env bash
# The root test tier's world, built from real parts:
#
#   netns tsp-ws ("workspace")                      netns tsp-tn ("tailnet")
#     lo: microsocks 127.0.0.1:1080 (no auth)          peers (python3 http.server):
#         danted     127.0.0.1:1081 (user/pass,          100.64.0.2 / fd7a:115c:a1e0::2 :8080
#                    also UDP ASSOCIATE)
#         tinyproxy  127.0.0.1:3128 (HTTP CONNECT,       100.64.0.3  refuses (nothing listens)
#                                   Basic auth)          100.64.0.4  never answers (dropped)
#     ws0 10.200.0.1 fd00:200::1  <--- veth --->     tn0 10.200.0.2 fd00:200::2
#                                                      100.64.0.5  slow: every dial takes ~1 s
#                                                      198.51.100.10:8080 a "public" server
#                                                      UDP echo: 100.64.0.2 / fd7a:115c:a1e0::2 :4002
#                                                      100.64.0.2:8081 a second peer port
#                                                        (only tests/names.rs dials it)
#                                                      tn0 10.200.0.3, .11-.20 :53 a real
#                                                        DNS server (dns_server.py)
#                                                      sshd on 100.64.0.2 and
#                                                        fd7a:115c:a1e0::2 port 22
#                                                      100.100.100.100:53 MagicDNS
#                                                        (dns_server.py --magic)
#
# The proxies run as user tsproxy-px, each with its own /etc/hosts that knows the MagicDNS
# names. The workspace's applications see the machine's /etc/hosts (no tailnet names; one
# tailnet address, 100.64.0.77 lan-printer, is added) and a
# resolv.conf that points at 10.200.0.2, where nothing answers: a name that wrongly reaches
# the system resolver shows up on the `dns` counter.
#
# A real system resolver for tests that need one (tests/names.rs): dns_server.py on 10.200.0.3
# and 10.200.0.11-20 (one address per test) answers public.example and logs every question,
# with the address asked, to $RUN/dns-real.log; MagicDNS (dns_server.py --magic on
# 100.100.100.100, UDP and TCP) answers the tailnet's names and logs to $RUN/dns-magic.log; a test bind-mounts a resolv.conf naming one of
# them ($RUN/resolv.real: 10.200.0.3) over /etc/resolv.conf in a mount namespace of its own. sshd (if installed) accepts key auth for root with the keys in $RUN/ssh_authorized_keys.
#
# Leak meter (nft, table inet tsproxy in tsp-ws): every packet to 100.64.0.0/10 or
# fd7a:115c:a1e0::/48 not sent by tsproxy-px is rejected and counted in counter `leak`.
#
#   topology.sh up     (re)build everything; runs a self-check that the meter counts
#   topology.sh down   remove everything
#   topology.sh counters   print leak, dns, dns_other, public_direct, public_via_proxy, and
#                          the per-peer dial counters (SYNs sent by the proxies' uid)
set -euo pipefail

# The peers and proxies started below outlive this script; they must not inherit the caller's
# descriptors. Under `flock /run/tsproxy-netns.lock cargo test ...` one of those is the lock:
# held open by a daemon, it would never be released after the tests end (every other
# worktree then waits forever). 255 is bash's own descriptor of this script.
for fd in /proc/$$/fd/*; do
    n=${fd##*/}
    if [ "$n" -gt 2 ] && [ "$n" != 255 ]; then eval "exec $n>&-"; fi
done

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WS=tsp-ws TN=tsp-tn PXUSER=tsproxy-px PXPASS=px-pass-4711
RUN=/run/tsproxy-test
PEERS_PORT=8080

ws() { ip netns exec "$WS" "$@"; }
tn() { ip netns exec "$TN" "$@"; }

down() {
    if [ -d "$RUN" ]; then
        for p in "$RUN"/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true; done
    fi
    ip netns pids "$WS" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns pids "$TN" 2>/dev/null | xargs -r kill 2>/dev/null || true
    sleep 0.2
    ip netns pids "$WS" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns pids "$TN" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$WS" 2>/dev/null || true
    ip netns del "$TN" 2>/dev/null || true
    if [ -f "$RUN/created-etc-tsproxy.conf" ] && [ ! -s /etc/tsproxy.conf ]; then rm -f /etc/tsproxy.conf; fi
    rm -rf "/etc/netns/$WS" "$RUN"
}

counter() { ws nft list counter inet tsproxy "$1" | sed -n 's/.*packets \([0-9]*\).*/\1/p'; }

counters() {
    for c in leak dns dns_other public_direct public_via_proxy dns_real refuser_dial slow_dial peer1_8081_dial; do echo "$c=$(counter $c)"; done
}

wait_port() { # ns host port
    for _ in $(seq 1 100); do
        if ip netns exec "$1" bash -c "exec 3<>/dev/tcp/$2/$3" 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "topology: $2:$3 in $1 did not come up" >&2
    return 1
}

up() {
    down
    mkdir -p "$RUN" "/etc/netns/$WS"
    id "$PXUSER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$PXUSER"
    echo "$PXUSER:$PXPASS" | chpasswd
    PXUID=$(id -u "$PXUSER")

    ip netns add "$WS"
    ip netns add "$TN"
    ip link add ws0 type veth peer name tn0
    ip link set ws0 netns "$WS"
    ip link set tn0 netns "$TN"
    ws ip link set lo up
    tn ip link set lo up
    ws ip addr add 10.200.0.1/24 dev ws0
    ws ip addr add fd00:200::1/64 dev ws0 nodad
    ws ip link set ws0 up
    tn ip addr add 10.200.0.2/24 dev tn0
    tn ip addr add fd00:200::2/64 dev tn0 nodad
    for a in 3 $(seq 11 20); do tn ip addr add "10.200.0.$a/24" dev tn0; done
    for a in 100.64.0.2/32 100.64.0.3/32 100.64.0.4/32 100.64.0.5/32 198.51.100.10/32; do tn ip addr add "$a" dev lo; done
    # MagicDNS's address (tests/udp.rs: dig @100.100.100.100 through the UDP relay).
    tn ip addr add 100.100.100.100/32 dev lo
    tn ip addr add fd7a:115c:a1e0::2/128 dev lo nodad
    tn ip link set tn0 up
    ws ip route add 100.64.0.0/10 via 10.200.0.2
    ws ip route add 198.51.100.0/24 via 10.200.0.2
    ws ip -6 route add fd7a:115c:a1e0::/48 via fd00:200::2
    # 100.64.0.4 never answers. 100.64.0.5 is slow: the first SYN of every connection is
    # dropped, so a dial takes one SYN retransmission (~1 s).
    tn nft -f - <<NFT
table inet blackhole {
    set seen { type ipv4_addr . inet_service; flags dynamic,timeout; timeout 30s; }
    chain in {
        type filter hook input priority 0; policy accept;
        ip daddr 100.64.0.4 drop
        ip daddr 100.64.0.5 tcp flags & (syn | ack) == syn ip saddr . tcp sport @seen accept
        ip daddr 100.64.0.5 tcp flags & (syn | ack) == syn update @seen { ip saddr . tcp sport } drop
    }
}
NFT
    # The leak meter.
    ws nft -f - <<NFT
table inet tsproxy {
    counter leak {}
    counter dns {}
    counter dns_other {}
    counter public_direct {}
    counter public_via_proxy {}
    counter dns_real {}
    counter refuser_dial {}
    counter slow_dial {}
    counter peer1_8081_dial {}
    chain out {
        type filter hook output priority 0; policy accept;
        ip daddr 100.64.0.0/10 meta skuid != $PXUID counter name leak reject
        ip6 daddr fd7a:115c:a1e0::/48 meta skuid != $PXUID counter name leak reject
        ip daddr 10.200.0.2 udp dport 53 counter name dns
        ip daddr 10.200.0.2 tcp dport 53 counter name dns
        ip daddr 10.200.0.9 udp dport 53 counter name dns_other
        ip daddr 198.51.100.10 tcp flags syn meta skuid $PXUID counter name public_via_proxy
        ip daddr 198.51.100.10 tcp flags syn meta skuid != $PXUID counter name public_direct
        ip daddr { 10.200.0.3, 10.200.0.11-10.200.0.20 } udp dport 53 counter name dns_real
        ip daddr { 10.200.0.3, 10.200.0.11-10.200.0.20 } tcp dport 53 counter name dns_real
        ip daddr 100.64.0.3 tcp flags & (syn | ack) == syn meta skuid $PXUID counter name refuser_dial
        ip daddr 100.64.0.5 tcp flags & (syn | ack) == syn meta skuid $PXUID counter name slow_dial
        ip daddr 100.64.0.2 tcp dport 8081 tcp flags & (syn | ack) == syn meta skuid $PXUID counter name peer1_8081_dial
    }
}
NFT
    # What the workspace's applications resolve with: a resolver where nothing answers.
    echo "nameserver 10.200.0.2" > "/etc/netns/$WS/resolv.conf"
    echo "options timeout:1 attempts:1" >> "/etc/netns/$WS/resolv.conf"
    # Their /etc/hosts: the machine's, plus one tailnet address an administrator named (no
    # tailnet name): a reverse lookup of it is glibc's files answer, with tsproxy as without.
    { cat /etc/hosts; echo "100.64.0.77 lan-printer"; } > "/etc/netns/$WS/hosts"
    chmod 644 "/etc/netns/$WS/hosts"
    # The proxies on the workspace's loopback (microsocks) run as $PXUSER, and tsproxy writes
    # to a loopback proxy only when root, the program's own user or a TSPROXY_PROXY_OWNER uid
    # owns its socket: the workspace's system file trusts $PXUSER, as an administrator whose
    # proxy runs as its own user would. `ip netns exec` binds it over /etc/tsproxy.conf, which
    # must exist for that: an empty one is created if there is none (and removed by down).
    echo "TSPROXY_PROXY_OWNER=$PXUID" > "/etc/netns/$WS/tsproxy.conf"
    chmod 644 "/etc/netns/$WS/tsproxy.conf"
    if [ ! -e /etc/tsproxy.conf ]; then
        : > /etc/tsproxy.conf
        chmod 644 /etc/tsproxy.conf
        touch "$RUN/created-etc-tsproxy.conf"
    fi
    # A second resolver address (nothing there either) for tests that expect a real lookup.
    printf 'nameserver 10.200.0.9\noptions timeout:1 attempts:1\n' > "$RUN/resolv.other"
    # A resolver that answers (dns_server.py, below).
    printf 'nameserver 10.200.0.3\noptions timeout:2 attempts:2\n' > "$RUN/resolv.real"

    # Peers.
    mkdir -p "$RUN/www"
    echo "hello from peer" > "$RUN/www/index.html"
    local i=0
    for a in 100.64.0.2 fd7a:115c:a1e0::2 198.51.100.10 100.64.0.5; do
        tn python3 -m http.server --bind "$a" --directory "$RUN/www" "$PEERS_PORT" >"$RUN/peer$i.log" 2>&1 &
        echo $! > "$RUN/peer$i.pid"
        i=$((i + 1))
    done
    tn python3 -m http.server --bind 100.64.0.2 --directory "$RUN/www" 8081 >"$RUN/peer8081.log" 2>&1 &
    echo $! > "$RUN/peer8081.pid"
    # The real DNS server.
    : > "$RUN/dns-real.log"
    # shellcheck disable=SC2046
    tn python3 "$HERE/dns_server.py" "$RUN/dns-real.log" 10.200.0.3 $(seq -f 10.200.0.%g 11 20) >"$RUN/dns-real.out" 2>&1 &
    echo $! > "$RUN/dns-real.pid"
    # MagicDNS on its address in the tailnet (reached only through a proxy, like any peer).
    : > "$RUN/dns-magic.log"
    tn python3 "$HERE/dns_server.py" --magic "$RUN/dns-magic.log" 100.100.100.100 >"$RUN/dns-magic.out" 2>&1 &
    echo $! > "$RUN/dns-magic.pid"
    # sshd on peer-1's addresses (tests/names.rs: ssh -6 by name), when installed.
    if [ -x /usr/sbin/sshd ] && command -v ssh-keygen >/dev/null; then
        ssh-keygen -q -t ed25519 -N '' -f "$RUN/ssh_host_ed25519_key"
        : > "$RUN/ssh_authorized_keys"
        mkdir -p /run/sshd
        cat > "$RUN/sshd_config" <<SSHD
ListenAddress 100.64.0.2:22
ListenAddress [fd7a:115c:a1e0::2]:22
HostKey $RUN/ssh_host_ed25519_key
PidFile $RUN/sshd.realpid
AuthorizedKeysFile $RUN/ssh_authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
SSHD
        tn /usr/sbin/sshd -D -e -f "$RUN/sshd_config" >"$RUN/sshd.log" 2>&1 &
        echo $! > "$RUN/sshd.pid"
    fi

    # UDP echo peers (tests/udp.rs): each datagram back to its sender, unchanged.
    for a in 100.64.0.2 fd7a:115c:a1e0::2; do
        tn python3 -c '
import socket, sys
a = sys.argv[1]
s = socket.socket(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((a, 4002))
while True:
    d, f = s.recvfrom(65535)
    s.sendto(d, f)
' "$a" >"$RUN/udpecho$i.log" 2>&1 &
        echo $! > "$RUN/udpecho$i.pid"
        i=$((i + 1))
    done

    # The proxies' own view of MagicDNS.
    cat > "$RUN/hosts" <<HOSTS
127.0.0.1 localhost
100.64.0.2 peer-1 peer-1.tail1234.ts.net
fd7a:115c:a1e0::2 peer6 peer6.tail1234.ts.net
100.64.0.3 refuser refuser.tail1234.ts.net
100.64.0.4 blackhole blackhole.tail1234.ts.net
100.64.0.5 slow-peer slow-peer.tail1234.ts.net
HOSTS
    chmod 644 "$RUN/hosts"
    asproxy() { # name, command...: in the workspace, own hosts file, as tsproxy-px (or root for danted)
        local name=$1; shift
        ws unshare -m sh -c "mount --bind $RUN/hosts /etc/hosts && exec \"\$@\"" sh "$@" >"$RUN/$name.log" 2>&1 &
        echo $! > "$RUN/$name.pid"
    }
    asproxy microsocks setpriv --reuid="$PXUSER" --regid="$PXUSER" --clear-groups microsocks -i 127.0.0.1 -p 1080

    cat > "$RUN/danted.conf" <<DANTE
logoutput: $RUN/danted.out
internal: 127.0.0.1 port = 1081
external: ws0
socksmethod: username
clientmethod: none
user.privileged: root
user.unprivileged: $PXUSER
client pass { from: 127.0.0.0/8 to: 0.0.0.0/0 }
socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 command: connect udpassociate }
socks pass { from: 127.0.0.0/8 to: ::/0 command: connect udpassociate }
socks pass { from: 0.0.0.0/0 to: 127.0.0.0/8 command: udpreply }
socks pass { from: ::/0 to: 127.0.0.0/8 command: udpreply }
DANTE
    asproxy danted danted -f "$RUN/danted.conf" -p "$RUN/danted.realpid"

    cat > "$RUN/tinyproxy.conf" <<TINY
User $PXUSER
Group $PXUSER
Port 3128
Listen 127.0.0.1
Timeout 30
LogLevel Info
MaxClients 200
Allow 127.0.0.1
BasicAuth tsuser tspass
DisableViaHeader Yes
TINY
    asproxy tinyproxy tinyproxy -d -c "$RUN/tinyproxy.conf"

    wait_port "$TN" 100.64.0.2 "$PEERS_PORT"
    wait_port "$TN" fd7a:115c:a1e0::2 "$PEERS_PORT"
    wait_port "$TN" 198.51.100.10 "$PEERS_PORT"
    wait_port "$WS" 127.0.0.1 1080
    wait_port "$WS" 127.0.0.1 1081
    wait_port "$WS" 127.0.0.1 3128
    wait_port "$TN" 100.64.0.2 8081
    wait_port "$TN" 10.200.0.3 53
    wait_port "$TN" 10.200.0.20 53
    wait_port "$TN" 100.100.100.100 53
    if [ -f "$RUN/sshd.pid" ]; then
        wait_port "$TN" 100.64.0.2 22
        wait_port "$TN" fd7a:115c:a1e0::2 22
    fi
    # The real DNS server answers from the workspace (UDP), then its log starts empty.
    ws timeout 5 python3 - <<'PY' || { echo "topology: the DNS server on 10.200.0.3 does not answer" >&2; cat "$RUN/dns-real.out" >&2; exit 1; }
import socket, struct
q = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + b"\x06public\x07example\x00" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
s.sendto(q, ("10.200.0.3", 53))
r = s.recv(512)
assert r[:2] == b"\x42\x42" and r[-4:] == bytes([198, 51, 100, 10]), r
PY
    : > "$RUN/dns-real.log"

    # Self-check: a direct dial to a tailnet address must be rejected and counted.
    if ws timeout 5 bash -c "exec 3<>/dev/tcp/100.64.0.2/$PEERS_PORT" 2>/dev/null; then
        echo "topology: self-check failed: a direct dial reached the tailnet" >&2; exit 1
    fi
    local counted
    counted=$(counter leak)
    [ "$counted" -ge 1 ] || { echo "topology: self-check failed: leak meter did not count" >&2; exit 1; }
    # ... and the proxies themselves must get through.
    ws timeout 10 curl -sf --socks5-hostname 127.0.0.1:1080 "http://peer-1:$PEERS_PORT/" >/dev/null \
        || { echo "topology: microsocks cannot reach peer-1" >&2; exit 1; }
    ws timeout 10 curl -sf --socks5-hostname "$PXUSER:$PXPASS@127.0.0.1:1081" "http://peer6:$PEERS_PORT/" >/dev/null \
        || { echo "topology: danted cannot reach peer6" >&2; cat "$RUN/danted.out" >&2; exit 1; }
    ws timeout 10 curl -sf -p -x http://tsuser:tspass@127.0.0.1:3128 "http://peer-1:$PEERS_PORT/" >/dev/null \
        || { echo "topology: tinyproxy cannot reach peer-1" >&2; cat "$RUN/tinyproxy.log" >&2; exit 1; }
    [ "$(counter leak)" -eq "$counted" ] || { echo "topology: proxies' own traffic was counted as a leak" >&2; exit 1; }
    ws nft reset counters table inet tsproxy >/dev/null
    echo "topology up"
}

# Opt-in, for one test at a time (tests/names.rs, under the root tier's lock): every TCP dial
# of ADDR:PORT (from the workspace) takes ~1 s, as 100.64.0.5's always do: the tailnet side
# drops the first SYN of each connection, so the dialler's first retransmission gets through.
# (A netem delay would do as well; this kernel has no sch_netem.) The SYNs sent to ADDR:PORT
# from the workspace (the proxies' dials or a program's own) are counted in counter
# `slow_syn`. `noslow` removes both.
slow() { # addr port
    noslow
    tn nft -f - <<NFT
table inet slowtest {
    set seen { type ipv4_addr . inet_service; flags dynamic,timeout; timeout 30s; }
    chain in {
        type filter hook input priority 0; policy accept;
        ip daddr $1 tcp dport $2 tcp flags & (syn | ack) == syn ip saddr . tcp sport @seen accept
        ip daddr $1 tcp dport $2 tcp flags & (syn | ack) == syn update @seen { ip saddr . tcp sport } drop
    }
}
NFT
    ws nft add counter inet tsproxy slow_syn
    ws nft insert rule inet tsproxy out ip daddr "$1" tcp dport "$2" tcp flags '&' '(syn | ack)' == syn counter name slow_syn comment '"slowtest"'
}

noslow() {
    tn nft delete table inet slowtest 2>/dev/null || true
    local h
    for h in $(ws nft -a list chain inet tsproxy out 2>/dev/null | sed -n 's/.*comment "slowtest" # handle \([0-9]*\).*/\1/p'); do
        ws nft delete rule inet tsproxy out handle "$h"
    done
    ws nft delete counter inet tsproxy slow_syn 2>/dev/null || true
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    counters) counters ;;
    slow) slow "$2" "$3" ;;
    noslow) noslow ;;
    *) echo "usage: $0 up|down|counters|slow ADDR PORT|noslow" >&2; exit 2 ;;
esac

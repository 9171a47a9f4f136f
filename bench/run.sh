#!/usr/bin/env bash
# make bench: install what it needs, build release, bring up the topology, run bench.py.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "make bench needs root (it builds network namespaces)" >&2
    exit 1
fi
bash scripts/test-deps.sh
missing=()
command -v proxychains4 >/dev/null || missing+=(proxychains4)
command -v iperf3 >/dev/null || missing+=(iperf3)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
bash scripts/build.sh --release -q
mkdir -p target/release/c-harness
cc -O2 -Wall -o target/release/c-harness/connbench c-harness/connbench.c
cc -O2 -Wall -o target/release/c-harness/udpbench c-harness/udpbench.c
mkdir -p target/release/go
(cd bench && CGO_ENABLED=0 GO111MODULE=off GOCACHE="$PWD/../target/go-cache" GOPATH="$PWD/../target/go-path" go build -o ../target/release/go/gobench gobench.go)
bash tests/netns/topology.sh up
RUN=/run/tsproxy-test
cat > "$RUN/proxychains.conf" <<CONF
strict_chain
quiet_mode
proxy_dns
remote_dns_subnet 224
tcp_read_time_out 15000
tcp_connect_time_out 8000
[ProxyList]
socks5 127.0.0.1 1080
CONF
ip netns exec tsp-tn target/release/c-harness/connbench serve 9000 >/dev/null 2>&1 &
echo $! > "$RUN/bench-serve.pid"
ip netns exec tsp-tn iperf3 -s -B 100.64.0.2 >/dev/null 2>&1 &
echo $! > "$RUN/bench-iperf.pid"
# The bench's system resolver (bench/dnsd.py) on a second address of the tailnet side's link.
ip netns exec tsp-tn ip addr add 10.200.0.53/24 dev tn0 2>/dev/null || true
ip netns exec tsp-tn python3 bench/dnsd.py 10.200.0.53 >/dev/null 2>&1 &
echo $! > "$RUN/bench-dnsd.pid"
printf 'nameserver 10.200.0.53\noptions timeout:1 attempts:2\n' > "$RUN/bench-resolv.conf"
sleep 0.5
trap 'bash tests/netns/topology.sh down' EXIT
python3 bench/bench.py

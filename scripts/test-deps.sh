#!/usr/bin/env bash
# Install what `make test` needs (Debian/Ubuntu, as root). Installs only what is missing.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have cc || need+=(gcc libc6-dev)
have microsocks || need+=(microsocks)
have danted || need+=(dante-server)
have tinyproxy || need+=(tinyproxy)
have nft || need+=(nftables)
have ip || need+=(iproute2)
have curl || need+=(curl)
have wget || need+=(wget)
have python3 || need+=(python3)
have node || need+=(nodejs)
have setpriv || need+=(util-linux)
have unshare || need+=(util-linux)
have chpasswd || need+=(passwd)
have go || need+=(golang-go)
have musl-gcc || need+=(musl-tools)
have setcap || need+=(libcap2-bin)
have ps || need+=(procps)
# tests/other_uid.rs: a syscall delay (strace inject) to widen a race window on purpose.
have strace || need+=(strace)
have chroot || need+=(coreutils)
# tests/names.rs: real programs with their own DNS clients and processes, and a real sshd.
have chromium || need+=(chromium)
have dig || need+=(dnsutils)
have nc || need+=(netcat-openbsd)
have sshd || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
have ssh || need+=(openssh-client)
have ssh-keygen || need+=(openssh-client)
have aria2c || need+=(aria2)
have getent || need+=(libc-bin)
# tests/deb.rs: build the package, lint it, install it in a fresh rootfs.
have dpkg-shlibdeps || need+=(dpkg-dev)
have mmdebstrap || need+=(mmdebstrap)
have lintian || need+=(lintian)
# The image tier (tests/image.rs): rootful podman with runc, mmdebstrap for the base image,
# catatonit (also installed inside the image, where it is PID 1).
have podman || need+=(podman)
have runc || need+=(runc)
have catatonit || need+=(catatonit)
[ -e /usr/include/liburing.h ] || need+=(liburing-dev)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || need+=(libc6-dev)
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "test-deps: missing ${need[*]}; run as root to install them (the root test tier needs them)" >&2
    exit 0
fi
echo "test-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null

#!/usr/bin/env bash
# Build the workspace image with rootful podman (see podman-env.sh for the settings).
#
#   IMAGE=tsproxy-workspace          tag
#   BASE=localhost/debian:trixie     any Debian/Ubuntu image; the default is made here with
#                                    mmdebstrap (cached) and imported, no registry needed
#   TAILSCALE=apt|standin            apt: tailscale from pkgs.tailscale.com (needs the keyring,
#                                    see fetch-tailscale-key.sh); standin: the test stand-in
#   TSPROXY_INSTALL=make|deb         make: `make install` of a release build made in the image;
#                                    deb: install image/tsproxy.deb (from the packaging work)
#   SYSTEMD=0|1                      1: systemd as PID 1, tailscaled started by its unit + drop-in
#   BUILD_ARGS="..."                 more podman build arguments
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
. "$here/podman-env.sh"

IMAGE=${IMAGE:-tsproxy-workspace}
BASE=${BASE:-localhost/debian:trixie}
TAILSCALE=${TAILSCALE:-apt}
TSPROXY_INSTALL=${TSPROXY_INSTALL:-make}
SYSTEMD=${SYSTEMD:-0}
MAX_AGE_DAYS=${TSPROXY_BASE_MAX_AGE_DAYS:-14}

if [ "$BASE" = localhost/debian:trixie ]; then
    tar="$TSPROXY_IMAGE_CACHE/trixie-minbase.tar"
    # Rebuilt when missing or older than MAX_AGE_DAYS (security updates); CI reuses it otherwise.
    if [ ! -s "$tar" ] || [ -n "$(find "$tar" -mtime +"$MAX_AGE_DAYS" 2>/dev/null)" ]; then
        command -v mmdebstrap >/dev/null || { echo "build.sh: mmdebstrap not installed (apt-get install mmdebstrap)" >&2; exit 1; }
        echo "build.sh: making the base with mmdebstrap (trixie, minbase)"
        mmdebstrap --quiet --variant=minbase trixie "$tar.new.tar"
        mv "$tar.new.tar" "$tar"
        podman image rm -f "$BASE" >/dev/null 2>&1 || true
    fi
    # Imported again when the tarball is newer than the imported image.
    stamp="$TSPROXY_IMAGE_STATE/base.imported"
    if ! podman image exists "$BASE" || [ ! -e "$stamp" ] || [ "$tar" -nt "$stamp" ]; then
        echo "build.sh: importing $tar as $BASE"
        podman import --quiet "$tar" "$BASE" >/dev/null
        touch "$stamp"
    fi
fi

args=(--pull=never --network=host -f "$here/Dockerfile" -t "$IMAGE"
      --build-arg "BASE=$BASE" --build-arg "TAILSCALE=$TAILSCALE"
      --build-arg "TSPROXY_INSTALL=$TSPROXY_INSTALL" --build-arg "SYSTEMD=$SYSTEMD")
[ "$SYSTEMD" = 1 ] && args+=(--build-arg "DEFAULT_CMD=/sbin/init" --build-arg "STOP_SIGNAL=SIGRTMIN+3")
# The host's CA bundle for cargo in the build stage (see the Dockerfile); only that RUN reads it.
host_ca=${TSPROXY_IMAGE_HOST_CA:-/etc/ssl/certs/ca-certificates.crt}
[ -s "$host_ca" ] && args+=(-v "$host_ca:/host-ca.crt:ro")
# shellcheck disable=SC2206
[ -n "${BUILD_ARGS:-}" ] && args+=($BUILD_ARGS)
start=$(date +%s)
podman build "${args[@]}" "$repo"
# Each source change leaves the previous build's images untagged; drop those older than two
# days so the storage stays bounded (younger ones are the layer cache of today's builds).
podman image prune -f --filter until=48h >/dev/null 2>&1 || true
echo "build.sh: built $IMAGE in $(( $(date +%s) - start )) s (TAILSCALE=$TAILSCALE TSPROXY_INSTALL=$TSPROXY_INSTALL SYSTEMD=$SYSTEMD)"

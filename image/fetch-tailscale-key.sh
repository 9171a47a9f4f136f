#!/usr/bin/env bash
# Fetch Tailscale's apt repository key into image/files/usr/share/keyrings/ and keep it only if
# it is the key pinned here (run once, on a machine that reaches pkgs.tailscale.com; commit the
# result). The Dockerfile checks the same fingerprint again at build time.
#
# The fingerprint is the one Tailscale's repository has signed with since 2020 ("Tailscale Inc.
# (Package repository signing key) <info@tailscale.com>", rsa4096, 2020-02-25), as shown by
# apt (NO_PUBKEY 458CA832957F5868) and by dnf when it imports pkgs.tailscale.com/stable/*/repo.gpg.
set -euo pipefail
FPR=2596A99EAAB33821893C0A79458CA832957F5868
SUITE=${1:-trixie}
URL=${TAILSCALE_KEY_URL:-https://pkgs.tailscale.com/stable/debian/$SUITE.noarmor.gpg}
out="$(cd "$(dirname "$0")" && pwd)/files/usr/share/keyrings/tailscale-archive-keyring.gpg"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
curl -fsSL --proto '=https' --tlsv1.2 -o "$tmp" "$URL"
bash "$(dirname "$0")/verify-keyring.sh" "$tmp" "$FPR"
install -m 0644 "$tmp" "$out"
echo "fetch-tailscale-key: $out holds $FPR"

#!/usr/bin/env bash
# verify-keyring.sh FILE FINGERPRINT: FILE must hold exactly one primary key, with FINGERPRINT.
# Used by fetch-tailscale-key.sh and by the Dockerfile (TAILSCALE=apt) before apt sees the file.
set -euo pipefail
file=$1 want=$2
home=$(mktemp -d)
trap 'rm -rf "$home"' EXIT
# The primary keys' fingerprints: an "fpr" line right after each "pub" line.
got=$(gpg --homedir "$home" --batch --with-colons --show-keys "$file" 2>/dev/null \
      | awk -F: '$1 == "pub" { p = 1; next } p && $1 == "fpr" { print $10; p = 0 }')
if [ "$got" != "$want" ]; then
    echo "verify-keyring: $file holds [${got//$'\n'/ }], expected exactly $want; refusing it" >&2
    exit 1
fi

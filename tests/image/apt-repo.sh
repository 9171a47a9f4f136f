#!/usr/bin/env bash
# apt-repo.sh DIR: a signed apt repository shaped like pkgs.tailscale.com/stable/debian, for the
# image's TAILSCALE=apt path (tests/image.rs). Throwaway ed25519 key in DIR/gnupg; the repository
# in DIR/repo/stable/debian (suite trixie, component main) holds
#   tailscale 1.99.0  the stand-in daemon and CLI (image/standin), packaged
#   curl 99.0         a package Debian also has, at a version that would win without the pin
# Prints the key's fingerprint; the binary keyring is DIR/tailscale-archive-keyring.gpg.
set -euo pipefail
dir=$1
here=$(cd "$(dirname "$0")" && pwd)
standin="$here/../../image/standin"
export GNUPGHOME="$dir/gnupg"
rm -rf "$dir" && mkdir -p "$GNUPGHOME" && chmod 700 "$GNUPGHOME"
# gpg starts its agent itself and gives up when the agent is slow to come up ("can't connect
# to the agent"), which happens while the other image tests build beside us: start it
# ourselves and try the key up to three times.
for try in 1 2 3; do
    gpgconf --launch gpg-agent 2>/dev/null || true
    if gpg --batch --quiet --pinentry-mode loopback --passphrase '' --quick-gen-key "tsproxy test repository <repo@example.invalid>" ed25519 sign never; then
        break
    fi
    [ "$try" = 3 ] && exit 1
    sleep 2
done
fpr=$(gpg --batch --with-colons --list-keys 2>/dev/null | awk -F: '$1 == "fpr" { print $10; exit }')
gpg --batch --quiet --output "$dir/tailscale-archive-keyring.gpg" --export "$fpr"

repo="$dir/repo/stable/debian"
mkdir -p "$repo/pool" "$repo/dists/trixie/main/binary-amd64"
pkg() { # name version depends, then files from a tree
    local name=$1 ver=$2 dep=$3 tree=$4 b="$dir/build/$1"
    mkdir -p "$b/DEBIAN"
    [ -n "$tree" ] && cp -a "$tree/." "$b/"
    { echo "Package: $name"; echo "Version: $ver"; echo "Architecture: amd64";
      echo "Maintainer: tsproxy tests <repo@example.invalid>"; [ -n "$dep" ] && echo "Depends: $dep";
      echo "Description: $name (tsproxy test repository)"; } >"$b/DEBIAN/control"
    dpkg-deb --root-owner-group --build "$b" "$repo/pool/${name}_${ver}_amd64.deb" >/dev/null
}
mkdir -p "$dir/tree/usr/share/doc/curl-fake"
echo "if this file is in the image, the pin did not hold" >"$dir/tree/usr/share/doc/curl-fake/README"
pkg tailscale 1.99.0 python3 "$standin"
pkg curl 99.0 "" "$dir/tree"
(cd "$repo" && dpkg-scanpackages --multiversion pool /dev/null 2>/dev/null >dists/trixie/main/binary-amd64/Packages)
p=dists/trixie/main/binary-amd64/Packages
{
    echo "Origin: Tailscale"
    echo "Label: Tailscale"
    echo "Suite: trixie"
    echo "Codename: trixie"
    echo "Date: $(date -Ru)"
    echo "Architectures: amd64"
    echo "Components: main"
    echo "SHA256:"
    echo " $(sha256sum "$repo/$p" | cut -d' ' -f1) $(stat -c %s "$repo/$p") main/binary-amd64/Packages"
} >"$repo/dists/trixie/Release"
gpg --batch --quiet --local-user "$fpr" --digest-algo SHA256 --clearsign --output "$repo/dists/trixie/InRelease" "$repo/dists/trixie/Release"
echo "$fpr"

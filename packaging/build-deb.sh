#!/usr/bin/env bash
# `make deb`: build target/debian/tsproxy_<version>_<arch>.deb with dpkg-deb (no debhelper, no
# cargo-deb: the package is one binary, one library and text files).
#
#   packaging/build-deb.sh            release build, stage, dpkg-deb; prints the .deb's path
#   packaging/build-deb.sh --gen DIR  only the generated text (tsproxy.conf, the man pages) into
#                                     DIR: no cargo, no root (tests/deb.rs checks them)
#
# The package never touches /etc/ld.so.preload: system-wide mode stays an explicit
# `tsproxy install --system`. Its one maintainer script, prerm, only reads that file, to refuse
# removal while it still names the library (packaging/prerm.in).
set -euo pipefail
cd "$(dirname "$0")/.."
P=packaging
CARGO=${CARGO:-cargo}
REVISION=1

die() { echo "build-deb: $*" >&2; exit 1; }

# The parser's key list (tsproxy_core::conffile::KEYS) and the documented one (keys.txt) must be
# the same set, in the same order: the shipped file is generated from keys.txt, so a key added to
# the parser without a description stops the build here.
code_keys() { sed -n '/^pub const KEYS: &\[&str\] = &\[/,/^\];/p' core/src/conffile.rs | grep -o '"[A-Z_]*"' | tr -d '"'; }
doc_keys() { awk '/^#/ { next } /^$/ { inblk = 0; next } !inblk { inblk = 1; split($0, kv, "="); print kv[1] }' "$P/keys.txt"; }
check_keys() {
    local c d
    c=$(code_keys); d=$(doc_keys)
    [ -n "$c" ] || die "found no KEYS list in core/src/conffile.rs"
    [ "$c" = "$d" ] || die "$P/keys.txt and core/src/conffile.rs KEYS differ:
$(diff <(echo "$c") <(echo "$d") || true)"
}

# keys.txt as awk records: KEY, EXAMPLE, TEXT (description joined with spaces). @LIBDIR@ in an
# example is the package's library directory.
blocks() {
    awk -v libdir="$LIBDIR" '
        /^#/ { next }
        /^$/ { if (k != "") print k "\t" ex "\t" txt; k = ""; next }
        k == "" { i = index($0, "="); k = substr($0, 1, i - 1); ex = substr($0, i + 1); gsub(/@LIBDIR@/, libdir, ex); txt = ""; next }
        { txt = (txt == "" ? $0 : txt " " $0) }
        END { if (k != "") print k "\t" ex "\t" txt }' "$P/keys.txt"
}

gen_conf() {
    {
        cat <<'EOF'
# /etc/tsproxy.conf: the system configuration of tsproxy (see tsproxy.conf(5)).
#
# KEY=VALUE lines with the names of the TSPROXY_* environment variables. The environment
# overrides this file, and the user's ~/.config/tsproxy/config overrides it too (except in
# setuid, setgid and setcap processes, which read this file only). Every key is listed below,
# commented out, with an example value; uncomment the ones you need. Nothing is expanded;
# a '#' starting a line is a comment, later in a line it is part of the value.
#
# Installing the package does not load tsproxy into any process by itself: run programs with
# `tsproxy CMD`, or make every process load it with `tsproxy install --system` (root).
EOF
        blocks | while IFS=$'\t' read -r k ex txt; do
            echo
            echo "$k: $txt" | fmt -w 94 | sed 's/^/# /'
            echo "#$k=$ex"
        done
    } > "$1"
}

# roff for one line of plain text: backslashes, and a leading . or ' (a request otherwise).
roff_text() { sed -e 's/\\/\\e/g' -e "s/^\([.']\)/\\\\\&\1/" -e 's/-/\\-/g'; }

gen_man() {
    local out=$1 keys
    keys=$(blocks | while IFS=$'\t' read -r k ex txt; do
        printf '.TP\n.B %s\n' "$k"
        echo "$txt" | fmt -w 94 | roff_text
        printf '.br\nExample: \\fB%s=%s\\fR\n' "$k" "$(echo "$ex" | roff_text)"
    done)
    cp "$P/man/tsproxy.1" "$out/tsproxy.1"
    # ENVIRON, not -v: awk would turn the \f of \fB into a form feed.
    KEYS_ROFF=$keys awk '$0 == "@KEYS@" { print ENVIRON["KEYS_ROFF"]; next } { print }' "$P/man/tsproxy.conf.5.in" > "$out/tsproxy.conf.5"
    sed -i -e "s/@VERSION@/$VERSION/g" -e "s/@DATE@/$DATE/g" -e "s,@LIBDIR@,$(echo "$LIBDIR" | sed 's/-/\\\\-/g'),g" "$out/tsproxy.1" "$out/tsproxy.conf.5"
}

VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
[ -n "$VERSION" ] || die "no [workspace.package] version in Cargo.toml"
# The Debian changelog is written by hand; its top entry must be this version.
CHVER=$(dpkg-parsechangelog -l "$P/changelog" -SVersion)
[ "$CHVER" = "$VERSION-$REVISION" ] || die "$P/changelog's top entry is $CHVER, Cargo.toml says $VERSION (revision $REVISION)"
# Reproducible: every timestamp is the changelog entry's.
SOURCE_DATE_EPOCH=$(dpkg-parsechangelog -l "$P/changelog" -STimestamp)
export SOURCE_DATE_EPOCH
DATE=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)
ARCH=$(dpkg --print-architecture)
MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
LIBDIR=/usr/lib/$MULTIARCH/tsproxy

check_keys

if [ "${1:-}" = --gen ]; then
    [ -n "${2:-}" ] || die "--gen needs a directory"
    mkdir -p "$2"
    gen_conf "$2/tsproxy.conf"
    gen_man "$2"
    exit 0
fi

# dpkg-deb --root-owner-group: files owned by root in the package without fakeroot.
for tool in dpkg-deb dpkg-shlibdeps; do
    command -v "$tool" >/dev/null || die "$tool missing (apt-get install dpkg-dev)"
done

CARGO="$CARGO" bash scripts/build.sh --release --quiet
BIN=target/release/tsproxy
LIB=target/release/libtsproxy.so

OUT=target/debian
STAGE=$OUT/stage
rm -rf "$STAGE"
mkdir -p "$STAGE/DEBIAN"
umask 022

install -Dm755 "$BIN" "$STAGE/usr/bin/tsproxy"
install -Dm644 "$LIB" "$STAGE$LIBDIR/libtsproxy.so"
gen_conf "$OUT/tsproxy.conf"
install -Dm644 "$OUT/tsproxy.conf" "$STAGE/etc/tsproxy.conf"
gen_man "$OUT"
install -d "$STAGE/usr/share/man/man1" "$STAGE/usr/share/man/man5"
gzip -9n < "$OUT/tsproxy.1" > "$STAGE/usr/share/man/man1/tsproxy.1.gz"
gzip -9n < "$OUT/tsproxy.conf.5" > "$STAGE/usr/share/man/man5/tsproxy.conf.5.gz"
install -Dm644 "$P/completions/tsproxy.bash" "$STAGE/usr/share/bash-completion/completions/tsproxy"
install -Dm644 "$P/completions/_tsproxy" "$STAGE/usr/share/zsh/vendor-completions/_tsproxy"
install -Dm644 "$P/completions/tsproxy.fish" "$STAGE/usr/share/fish/vendor_completions.d/tsproxy.fish"
DOC=$STAGE/usr/share/doc/tsproxy
install -Dm644 "$P/copyright" "$DOC/copyright"
install -Dm644 "$P/lintian-overrides" "$STAGE/usr/share/lintian/overrides/tsproxy"
gzip -9n < "$P/changelog" > "$DOC/changelog.Debian.gz"
gzip -9n < README.md > "$DOC/README.md.gz"
chmod 644 "$DOC"/*.gz "$STAGE"/usr/share/man/man*/*.gz

# The launcher must find the library where the package puts it (its ../lib/<multiarch>/tsproxy/).
# `tsproxy env` prints the path it found; nothing beside the staged binary can shadow it.
found=$(env -u TSPROXY_LIB -u LD_PRELOAD XDG_CONFIG_HOME=/nonexistent HOME=/nonexistent "$STAGE/usr/bin/tsproxy" env --shell sh)
case "$found" in
    *"$(readlink -f "$STAGE$LIBDIR/libtsproxy.so")"*) ;;
    *) die "the staged launcher does not find $LIBDIR/libtsproxy.so (tsproxy env said: $found); wrapper/src/main.rs MULTIARCH and dpkg-architecture disagree?" ;;
esac

# Depends: what dpkg-shlibdeps derives from the two ELF objects (libc6, libgcc-s1 for unwinding).
SHL=$(mktemp -d)
trap 'rm -rf "$SHL"' EXIT
mkdir -p "$SHL/debian"
printf 'Source: tsproxy\n\nPackage: tsproxy\nArchitecture: any\n' > "$SHL/debian/control"
ABS_STAGE=$(readlink -f "$STAGE")
DEPENDS=$(cd "$SHL" && dpkg-shlibdeps -O "$ABS_STAGE/usr/bin/tsproxy" "$ABS_STAGE$LIBDIR/libtsproxy.so" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$DEPENDS" ] || die "dpkg-shlibdeps gave no dependencies"

INSTALLED_SIZE=$(du -sk --apparent-size --exclude=DEBIAN "$STAGE" | cut -f1)
sed -e "s/@VERSION@/$VERSION-$REVISION/" -e "s/@ARCH@/$ARCH/" -e "s/@DEPENDS@/$DEPENDS/" -e "s/@SIZE@/$INSTALLED_SIZE/" \
    "$P/control.in" > "$STAGE/DEBIAN/control"
echo /etc/tsproxy.conf > "$STAGE/DEBIAN/conffiles"
sed "s,@LIBDIR@,$LIBDIR,g" "$P/prerm.in" > "$STAGE/DEBIAN/prerm"
(cd "$STAGE" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) > "$STAGE/DEBIAN/md5sums"
chmod 644 "$STAGE"/DEBIAN/*
chmod 755 "$STAGE/DEBIAN/prerm"
find "$STAGE" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

DEB=$OUT/tsproxy_${VERSION}-${REVISION}_${ARCH}.deb
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$DEB" >/dev/null
echo "$DEB"

#!/usr/bin/env bash
# Build the workspace, then the launcher once more as a static binary (glibc, static-pie):
#
#   scripts/build.sh [--release] [-q]
#
# Why static: the launcher's own start is on the path of every command it runs. Dynamically
# linked, loading and relocating libc and libgcc_s cost about 250 us on our machines, a sixth of
# `env LD_PRELOAD=... /bin/true`; static, it starts faster than `env` does (docs/BENCHMARKS.md).
# Why a second step: `-C target-feature=+crt-static` cannot be set for one crate of a workspace
# through cargo's configuration, and set for all it drops the preload library (a cdylib cannot
# be built with it). `cargo rustc` passes it to the launcher's final crate only. Cargo keeps both
# builds of the launcher and links target/<profile>/tsproxy to the one built last, so
# `cargo build` alone gives the dynamic launcher again (it works the same, starts slower); this
# script, `make` and the tests (tests/common) end with the static one.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
args=()
for a in "$@"; do
    case "$a" in
        --release | -q | --quiet) args+=("$a") ;;
        *) echo "build.sh: unknown argument $a" >&2; exit 2 ;;
    esac
done
# $CARGO unquoted on purpose: it may hold options (CARGO="cargo --locked").
$CARGO build --workspace "${args[@]}"
$CARGO rustc -p tsproxy-launcher --bin tsproxy "${args[@]}" -- -C target-feature=+crt-static

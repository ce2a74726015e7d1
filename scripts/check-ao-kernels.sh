#!/usr/bin/env bash
# Runs the ao-loop's GPU kernels (harness/src/sys/ao_kernels.cu) on the host and checks their
# arithmetic (scripts/ao-kernels-host-check.cpp): the check a machine without a GPU can make.
# Needs clang++ (Debian: apt-get install clang-14). scripts/build-ptx.sh runs it first.
set -euo pipefail
cd "$(dirname "$0")"
cxx="${CXX_CLANG:-$(command -v clang++-14 || command -v clang++ || true)}"
[ -n "$cxx" ] || { echo "check-ao-kernels.sh: needs clang++ (Debian: apt-get install clang-14), or CXX_CLANG=..." >&2; exit 1; }
bin="$(mktemp -d)/ao-kernels-host-check"
"$cxx" -std=c++17 -O1 -pthread -Wall -Wno-unknown-attributes -DAO_HOST_EMULATION \
    ao-kernels-host-check.cpp -o "$bin"
"$bin"

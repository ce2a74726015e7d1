#!/usr/bin/env bash
# Regenerates harness/src/sys/ao_kernels.ptx from ao_kernels.cu (the ao-loop's GPU kernels).
# Checks the kernels on the host first (scripts/check-ao-kernels.sh).
# Needs clang with the NVPTX target (Debian: apt-get install clang-14); no CUDA toolkit:
# the source uses clang's NVPTX builtins only. The PTX targets sm_70 (PTX ISA 6.0), which
# the driver JIT-compiles for any later card (H100, H200) when the module is loaded.
set -euo pipefail
"$(dirname "$0")/check-ao-kernels.sh"
cd "$(dirname "$0")/../harness/src/sys"
clang="${CLANG:-$(command -v clang-14 || command -v clang || true)}"
[ -n "$clang" ] || { echo "build-ptx.sh: needs clang with the NVPTX target (Debian: apt-get install clang-14), or CLANG=..." >&2; exit 1; }
"$clang" -x cuda --cuda-device-only --cuda-gpu-arch=sm_70 -nocudainc -nocudalib -O3 \
    -S -o ao_kernels.ptx ao_kernels.cu
# The source's digest, which a unit test compares with ao_kernels.cu (a stale PTX fails it).
echo "// ao_kernels.cu sha1 $(sha1sum ao_kernels.cu | cut -d' ' -f1)" >>ao_kernels.ptx
echo "wrote harness/src/sys/ao_kernels.ptx with $("$clang" --version | head -1)"

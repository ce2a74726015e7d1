#!/usr/bin/env bash
# The library's unit and integration tests (with the tokio feature), then the CLI's tests
# (which run the `shmstream` binary built the same way), under AddressSanitizer: heap and
# stack overflows, use after free, double free, and leaks (LeakSanitizer). Not run in CI.
#
# Needs the nightly toolchain (`rustup toolchain install nightly`; -Zsanitizer is unstable)
# and, for the Python peer tests, SHMSTREAM_PYTHON or .venv (scripts/test.sh makes it).
# Builds into target-asan/ (its own flags; the explicit --target keeps build scripts and proc
# macros uninstrumented). Arguments go to the test binaries (a filter, --test-threads).
#
# ASAN_OPTIONS:
# - allocator_may_return_null=1: read.rs's frame_vec test asks for isize::MAX bytes to see
#   `try_reserve_exact` fail with ENOMEM, which ASan otherwise aborts on (allocation-size-
#   too-big), an ASan behaviour, not a defect;
# - fast_unwind_on_malloc=0: whole allocation stacks, without which the suppressions in
#   scripts/lsan.supp (leaks the tests make on purpose) do not match in child processes.
#
# Run here (2 cores shared with other builds, Dec 2026): about 25 min to build from scratch,
# 133 s to run. Found nothing: no ASan report in any test binary, parents or the children
# they spawn (library unit tests, tests/*.rs, the CLI's unit and integration tests), and no
# leak but the suppressed test-made ones. tests/gpu.rs skips without a driver; soak.rs's
# long soak stays #[ignore]d.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="$PWD/target-asan"
export RUSTFLAGS="-Zsanitizer=address" RUSTDOCFLAGS="-Zsanitizer=address"
export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1:fast_unwind_on_malloc=0"
export LSAN_OPTIONS="suppressions=$PWD/scripts/lsan.supp"
export SHMSTREAM_PYTHON="${SHMSTREAM_PYTHON:-$PWD/.venv/bin/python}"
target=(--target x86_64-unknown-linux-gnu)
cargo +nightly test --locked -p shmstream --features tokio "${target[@]}" --lib --tests -- "$@"
cargo +nightly test --locked -p shmstream-cli "${target[@]}" --bins --tests -- "$@"

#!/usr/bin/env bash
# The lints every commit is held to (not run by CI, which runs the tests and the gate):
# rustfmt; clippy with warnings denied on the workspace (async waits built), on the library
# with CUDA and with no default features; rustdoc with warnings denied on every package,
# public items as `cargo doc` documents them and private items too (their links are read
# by whoever works on the code); `cargo package` on the published packages.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTDOCFLAGS="-D warnings"
cargo fmt --check
cargo clippy --workspace --all-targets --features shmstream/tokio -- -D warnings
cargo clippy -p shmstream --all-targets --features cuda -- -D warnings
cargo clippy -p shmstream --all-targets --no-default-features -- -D warnings
cargo doc --workspace --no-deps
# Both documented and checked; cargo warns that the CLI binary `shmstream` and the library
# write the same index.html (rust-lang/cargo#6313): only the pages are shared.
cargo doc --workspace --no-deps --document-private-items
cargo doc -p shmstream --no-deps --document-private-items --features cuda
# The packages a user would publish: path dependencies carry versions, and each package
# holds its own files only (the library's `include`), under crates.io's 10 MB limit.
rm -rf target/package
cargo package --workspace --exclude harness --no-verify --locked --allow-dirty
too_big=$(find target/package -maxdepth 1 -name '*.crate' -size +10M)
if [[ -n $too_big ]]; then
    echo "scripts/lint.sh: packages over crates.io's 10 MB limit: $too_big" >&2
    exit 1
fi
echo "scripts/lint.sh: clean"

#!/usr/bin/env bash
# The whole test suite, as CI runs it: creates .venv with pyshmem 1.4.0 + numpy if missing,
# then runs every test with the Python peer required (SHMSTREAM_REQUIRE_PYTHON=1).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import importlib.metadata as m, numpy, astropy; assert m.version("pyshmem") == "1.4.0"' 2>/dev/null; then
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check 'pyshmem==1.4.0' numpy astropy
fi
export SHMSTREAM_PYTHON="$PWD/.venv/bin/python"
export SHMSTREAM_REQUIRE_PYTHON=1
cargo test --workspace --features shmstream/tokio "$@"

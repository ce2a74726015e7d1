#!/usr/bin/env bash
# The whole test suite, as CI runs it: creates .venv with pyshmem 1.4.0, numpy and astropy
# (exact versions, so a new release on PyPI cannot change what the tests run against) if it
# is missing or holds other versions, then runs every test with the Python peer required
# (SHMSTREAM_REQUIRE_PYTHON=1).
set -euo pipefail
cd "$(dirname "$0")/.."
# With what they pull in: pyshmem's lock is portalocker's (the lock interop tests depend on
# it), astropy's pyerfa, astropy-iers-data (released weekly), PyYAML and packaging.
pins=(pyshmem==1.4.0 numpy==2.4.6 astropy==8.0.2 portalocker==4.4.2 pyerfa==2.0.1.5
    astropy-iers-data==0.2026.11.16.0.37.44 PyYAML==6.0.4 packaging==26.4)
has_pins() {
    .venv/bin/python - "${pins[@]}" <<'PY' 2>/dev/null
import importlib.metadata as m, sys
for pin in sys.argv[1:]:
    name, version = pin.split("==")
    assert m.version(name) == version, pin
PY
}
if [ ! -x .venv/bin/python ] || ! has_pins; then
    # numpy 2.4 and astropy 8 need Python 3.11 or later; Debian's python3 needs python3-venv.
    python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || {
        echo "scripts/test.sh: needs python3 >= 3.11 with venv (Debian: apt-get install python3-venv)" >&2
        exit 1
    }
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check "${pins[@]}"
fi
export SHMSTREAM_PYTHON="$PWD/.venv/bin/python"
export SHMSTREAM_REQUIRE_PYTHON=1
# --locked: the crates of Cargo.lock, never a new resolution.
cargo test --locked --workspace --features shmstream/tokio "$@"

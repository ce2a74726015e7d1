#!/usr/bin/env bash
# Runs the CI gate (scripts/smoke-gate.sh, gate part only) N times (default 10) and counts
# passes and failures, with each try's time; set SHMSTREAM_TEST_SLOWDOWN to prove that a
# slowdown is caught (scenarios/README.md, "The CI gate"). Extra arguments go to the gate's
# harness runs.
set -uo pipefail
cd "$(dirname "$0")/.."
n=${1:-10}
shift || true
pass=0 fail=0
mkdir -p target/gate-proof
for i in $(seq 1 "$n"); do
    start=$(date +%s)
    log="target/gate-proof/${SHMSTREAM_TEST_SLOWDOWN:-none}-$i.log"
    if GATE_ONLY=1 scripts/smoke-gate.sh "$@" > "$log" 2>&1; then pass=$((pass + 1)); r=pass; else fail=$((fail + 1)); r=FAIL; fi
    echo "try $i: $r in $(( $(date +%s) - start )) s (slowdown: ${SHMSTREAM_TEST_SLOWDOWN:-none}; load $(cut -d' ' -f1-3 /proc/loadavg))"
done
echo "gate: $pass passed, $fail failed (slowdown: ${SHMSTREAM_TEST_SLOWDOWN:-none})"

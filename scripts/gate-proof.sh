#!/usr/bin/env bash
# Runs the CI gate (scripts/smoke-gate.sh, gate part only) N times (default 10) and counts
# passes and failures, with each try's time; set SHMSTREAM_TEST_SLOWDOWN to prove that a
# slowdown is caught (scenarios/README.md, "The CI gate"). A failed try counts as caught
# only when the gate's final table has a REGRESSION line for the case of every slowed path
# (write: op-write, read: op-read, lock: op-lock*, wake: op-wake*, mvm: op-kernel); any
# other failure (a crashed case, a compare error, another case) is counted apart, with its
# log. Extra arguments go to the gate's harness runs.
set -uo pipefail
cd "$(dirname "$0")/.."
n=${1:-10}
shift || true
slowdown=${SHMSTREAM_TEST_SLOWDOWN:-}
# The compare labels ("case shape …") the slowed paths must regress, as line patterns.
patterns=()
unknown=
IFS=',' read -r -a paths <<< "$slowdown"
for p in "${paths[@]}"; do
    # As the library reads the list: spaces ignored, empty items skipped.
    p=${p//[[:space:]]/}
    [ -n "$p" ] || continue
    case "${p%%:*}" in
        write) patterns+=('^op-write ') ;;
        read) patterns+=('^op-read ') ;;
        lock) patterns+=('^op-lock[^ ]* ') ;;
        wake) patterns+=('^op-wake[^ ]* ') ;;
        mvm) patterns+=('^op-kernel ') ;;
        *) unknown+=" ${p%%:*}" ;;
    esac
done
[ -z "$unknown" ] || echo "warning: no gate case for slowed path(s)$unknown: their tries cannot count as caught" >&2
# Whether the last compare table in log $1 has a REGRESSION line for every slowed path.
caught() {
    [ -n "$slowdown" ] && [ -z "$unknown" ] || return 1
    local table
    table=$(awk '/^best of [0-9]+ run[(]s[)] against /{t=""} {t=t $0 "\n"} END{printf "%s", t}' "$1")
    for pat in "${patterns[@]}"; do
        # A drop past the band; "REGRESSION (no ratio in NEW)" is a lost measurement.
        grep -E "$pat" <<< "$table" | grep -q 'REGRESSION (>' || return 1
    done
}
pass=0 hit=0 other=0
mkdir -p target/gate-proof
for i in $(seq 1 "$n"); do
    start=$(date +%s)
    log="target/gate-proof/${slowdown:-none}-$i.log"
    if GATE_ONLY=1 scripts/smoke-gate.sh "$@" > "$log" 2>&1; then
        pass=$((pass + 1)); r=pass
    elif caught "$log"; then
        hit=$((hit + 1)); r="FAIL (caught: the slowed case regressed)"
    else
        other=$((other + 1)); r="FAIL (not the slowed case: see $log)"
    fi
    echo "try $i: $r in $(( $(date +%s) - start )) s (slowdown: ${slowdown:-none}; load $(cut -d' ' -f1-3 /proc/loadavg))"
done
echo "gate: $pass passed, $hit caught the slowdown, $other failed otherwise (slowdown: ${slowdown:-none})"

#!/usr/bin/env bash
# GPU check, in two halves:
#   scripts/gpu-check.sh build   (on the build machine, with Rust): builds the release GPU test
#                                binary, the gpu_bench example and the harness into .gpu-bin/
#   scripts/gpu-check.sh run     (on the GPU machine, no Rust needed): runs the GPU tests (each
#                                in its own process, 60 s each; as is, then with
#                                SHMSTREAM_GPU_PUBLISH=sync), then the harness's GPU
#                                rows of scenarios/io.toml, scenarios/mvm.toml and
#                                scenarios/ao-gpu.toml (the ao-loop's GPU form)
#                                (`--cases cuda --no-peer`), once as is and (io, mvm) under MPS,
#                                as is and with SHMSTREAM_GPU_PUBLISH=sync (-mps-sync), writing
#                                everything to ${OUT:-reports/gpu-run}
# The run records the publication path the probe picks (issue #11) in env.txt.
# Knobs for `run`: HARNESS_FLAGS (default --quick), GPU_CHECK_AO=0 skips scenarios/ao-gpu.toml,
# GPU_CHECK_AO_DIRECT=1 runs scenarios/ao-gpu.toml again with direct launches instead of one CUDA
# graph a frame (SHMSTREAM_AO_GPU_GRAPH=0, reports ao-gpu-direct; ~70 s),
# GPU_CHECK_SYNC=0 skips the -mps-sync pass, GPU_CHECK_ONLY=mps runs the tests (as is) and the
# MPS pass only, GPU_CHECK_BENCH=1 also runs gpu_bench
# (default, event-ordering and MPS passes, as the first H200 report did).
# The GPU machine gets .gpu-bin/ by carrying it (it is git-ignored: name it in the carry list).
# `build` needs jq and strip (binutils) besides cargo.
# Only a few files come back from it, so run the check into a scratch folder and tar it, e.g.
#   R=/tmp/gpurun; OUT=$R timeout 540 scripts/gpu-check.sh run >$R.log 2>&1; tar czf $OUT/gpu-run.tgz -C /tmp gpurun
# (2026-11-29, H200, --quick: 150-157 s; 2026-11-30 with the GPU-consumer rows and tests, a full
# run needs ~350 s: budget one run and a rerun of GPU_CHECK_ONLY=mps within 15 minutes of device time;
# the inner timeouts add up to more than 540 s only when tests or rows hang).
# The run fails (exit 1, and `exit 1` in env.txt) unless the GPU work really ran: a missing test
# binary or an empty test list, a GPU test that skipped for want of a GPU, a harness GPU row
# skipped, or MPS that did not start all count as failures, not as passes.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
build)
    set -e
    cargo build --release --test gpu --example gpu_bench --message-format=json-render-diagnostics >/tmp/gpu-build.json
    cargo build --release -p harness
    mkdir -p .gpu-bin
    cp target/release/harness .gpu-bin/harness
    jq -r 'select(.reason=="compiler-artifact" and .executable!=null) | .executable' /tmp/gpu-build.json |
        grep -E '/(gpu-[0-9a-f]+|gpu_bench)$' | while read -r f; do
            case "$f" in */examples/*) cp "$f" .gpu-bin/gpu_bench ;; *) cp "$f" .gpu-bin/gpu_tests ;; esac
        done
    strip .gpu-bin/harness .gpu-bin/gpu_tests .gpu-bin/gpu_bench # the carry limit is 64 MiB; unstripped ~100 MB
    # The commit these binaries are built from (the GPU machine's copy of the tree may not
    # name it): run exports it for the harness's report and writes it to env.txt.
    echo "$(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD -- . ':!.gpu-bin' || echo -dirty)" >.gpu-bin/commit
    ls -la .gpu-bin
    ;;
run)
    out="${OUT:-reports/gpu-run}"
    mkdir -p "$out"
    {
        echo "# GPU check $(date -u +%FT%TZ)"
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
        uname -r
        echo "binaries built from $(cat .gpu-bin/commit 2>/dev/null || echo 'an unknown commit')"
    } >"$out/env.txt"
    HARNESS_BUILT_FROM="$(cat .gpu-bin/commit 2>/dev/null)"
    export HARNESS_BUILT_FROM
    # cudarc loads libcuda/libcublas by name: make the toolkit's and pip's cuBLAS findable.
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib $(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null); do
        [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
    done
    echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}" >>"$out/env.txt"
    rc=0
    mps_up=0
    ended=0
    # However the run ends (a failure, or killed by the outer timeout's TERM: bash runs this
    # then, and dies at once, with no trap of its own to wait for the command in flight), the
    # MPS daemon is stopped and env.txt says how it ended.
    finish() {
        local st=$?
        [ "$mps_up" = 1 ] && echo quit | nvidia-cuda-mps-control >/dev/null 2>&1
        # (`$?` says nothing of a signal: it is the last command's status.)
        if [ "$ended" = 1 ]; then
            echo "exit $rc"
        else
            echo "exit 143 (killed: a signal, e.g. the outer timeout; last status $st)"
        fi >>"$out/env.txt"
    }
    trap finish EXIT
    if [ ! -x .gpu-bin/gpu_tests ] || [ ! -x .gpu-bin/harness ]; then
        echo "no .gpu-bin/gpu_tests or .gpu-bin/harness: run \`scripts/gpu-check.sh build\` and carry .gpu-bin/" | tee "$out/tests.log"
        rc=1 ended=1
        exit 1
    fi
    echo "== GPU tests" | tee "$out/tests.log"
    only="${GPU_CHECK_ONLY:-}"
    # Each test in a process of its own with its own timeout: one that hangs costs 60 s and
    # hides no other (a hang in one binary run hid the tests after it, 2026-11-30).
    gpu_tests() { # $1: label
        local t failed=0 listed list_rc tests
        # The list's stderr says why a binary that cannot run here lists nothing (a glibc
        # older than the build machine's, a missing library).
        listed=$(.gpu-bin/gpu_tests --list 2>"$out/list.err")
        list_rc=$?
        tests=$(sed -n 's/: test$//p' <<<"$listed")
        if [ -z "$tests" ]; then
            echo "FAIL: .gpu-bin/gpu_tests lists no test (exit $list_rc); its stderr:" | tee -a "$out/tests.log"
            sed 's/^/    /' "$out/list.err" | tee -a "$out/tests.log"
            rm -f "$out/list.err"
            return 1
        fi
        rm -f "$out/list.err"
        for t in $tests; do
            if timeout 60 .gpu-bin/gpu_tests --exact "$t" --nocapture >"$out/test.tmp" 2>&1; then
                # A test that found no GPU skips and returns: not a pass on the GPU machine.
                # (libtest prints it after `test NAME ... ` when it runs one test at a time.)
                if grep -q 'SKIP [^ ]*: no GPU' "$out/test.tmp"; then
                    echo "FAIL $t (skipped: no GPU)" | tee -a "$out/tests.log"
                    failed=1
                else
                    echo "PASS $t" | tee -a "$out/tests.log"
                fi
            else
                echo "FAIL $t (exit $?; 124 = timed out)" | tee -a "$out/tests.log"
                failed=1
            fi
            grep -v '^$' "$out/test.tmp" | grep -v '^running\|^test result\|^$' >>"$out/tests.log"
        done
        rm -f "$out/test.tmp"
        echo "== $1: $(grep -c '^PASS' "$out/tests.log") passed so far, failed: $failed" | tee -a "$out/tests.log"
        return $failed
    }
    gpu_tests "GPU tests" || rc=1
    # The synchronize path forced (no probe): the fallback passes the same tests.
    if [ "$only" != mps ]; then
        echo "== GPU tests, SHMSTREAM_GPU_PUBLISH=sync" | tee -a "$out/tests.log"
        SHMSTREAM_GPU_PUBLISH=sync gpu_tests "GPU tests, sync" || rc=1
    fi
    # The probe's answer under each setting (the trial write runs unless `sync`).
    grep -o 'publication path cuda:0: .*' "$out/tests.log" | sort -u >>"$out/env.txt" ||
        echo "publication path: not printed" >>"$out/env.txt"
    # The harness's GPU rows; its children re-execute .gpu-bin/harness. No Python peer there.
    hflags="${HARNESS_FLAGS:---quick}"
    harness_pass() { # $1: suffix of the report folders; $2: scenario:timeout_s pairs
        for sc in $2; do
            t="${sc#*:}" sc="${sc%%:*}"
            echo "== harness scenarios/$sc.toml --cases cuda $hflags${1:+ ($1)}" | tee -a "$out/harness.log"
            # shellcheck disable=SC2086
            timeout "$t" .gpu-bin/harness "scenarios/$sc.toml" --cases cuda --no-peer --quiet $hflags \
                --out "$out/$sc$1" 2>&1 | tee -a "$out/harness.log" || rc=1
            # A GPU row the harness skipped (no device, no driver, MPS clients refused) did
            # not run: the check fails, naming it.
            if [ -f "$out/$sc$1/details.json" ]; then
                # Exits 1 when a row was skipped, or when it cannot tell (no python3, another
                # layout): a check that cannot look does not pass.
                if ! python3 - "$out/$sc$1/details.json" >>"$out/harness.log" 2>&1 <<'PY'; then
import json, sys
skipped = [j for j in json.load(open(sys.argv[1]))["jobs"] if j.get("skipped")]
for j in skipped:
    print(f"FAIL: row {j['job'].get('case', '?')} skipped: {j['skipped']}")
sys.exit(1 if skipped else 0)
PY
                    echo "FAIL: a harness row of $sc$1 skipped, or its report unreadable (see harness.log)"
                    rc=1
                fi
            else
                echo "FAIL: no report in $out/$sc$1" | tee -a "$out/harness.log"
                rc=1
            fi
        done
    }
    # The ao-loop's GPU form runs one GPU process (camera and DM are CPU processes), so it
    # runs once, not again under MPS.
    # GPU_CHECK_AO=0 leaves the ao-loop's GPU form out (its streams are host streams).
    if [ "$only" = mps ]; then
        :
    elif [ "${GPU_CHECK_AO:-1}" = 1 ]; then
        harness_pass "" "io:90 mvm:60 ao-gpu:150"
        if [ "${GPU_CHECK_AO_DIRECT:-0}" = 1 ]; then
            SHMSTREAM_AO_GPU_GRAPH=0 harness_pass "-direct" "ao-gpu:150"
        fi
        # Which launch path the GPU form's stage and floor ran (the `device work` notes: one
        # CUDA graph a frame, or direct launches and why).
        for d in "$out"/ao-gpu*; do
            [ -f "$d/details.json" ] || continue
            grep -o '"device work": "[^"]*"' "$d/details.json" | sort | uniq -c |
                sed "s|^|$(basename "$d"): |" >>"$out/env.txt"
        done
    else
        harness_pass "" "io:90 mvm:60"
    fi
    if [ "${GPU_CHECK_BENCH:-0}" = 1 ]; then
        echo "== gpu_bench" | tee "$out/bench.log"
        timeout 120 .gpu-bin/gpu_bench "$out/bench.json" 2>&1 | tee -a "$out/bench.log" || rc=1
        echo "== gpu_bench, experimental SHMSTREAM_GPU_IPC_EVENT=1 (event ordering instead of writer-side sync)" | tee -a "$out/bench.log"
        SHMSTREAM_GPU_IPC_EVENT=1 timeout 120 .gpu-bin/gpu_bench "$out/bench-ipc-event.json" 2>&1 | tee -a "$out/bench.log" || rc=1
    fi
    if command -v nvidia-cuda-mps-control >/dev/null; then
        echo "== under MPS (nvidia-cuda-mps-control -d: processes share the GPU without time-slicing)" | tee -a "$out/harness.log"
        export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
        mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
        if nvidia-cuda-mps-control -d; then
            mps_up=1
            harness_pass "-mps" "io:90 mvm:60"
            # The synchronize path in the same run, for comparison (each row's `publication`
            # note in details.json says which path its writer used).
            if [ "${GPU_CHECK_SYNC:-1}" = 1 ] && [ "$only" != mps ]; then
                SHMSTREAM_GPU_PUBLISH=sync harness_pass "-mps-sync" "io:90 mvm:60"
            fi
            if [ "${GPU_CHECK_BENCH:-0}" = 1 ]; then
                timeout 120 .gpu-bin/gpu_bench "$out/bench-mps.json" 2>&1 | tee -a "$out/bench.log" || rc=1
            fi
            echo quit | nvidia-cuda-mps-control
            mps_up=0
        else
            echo "FAIL: MPS did not start" | tee -a "$out/harness.log"
            rc=1
        fi
    else
        echo "FAIL: no nvidia-cuda-mps-control on this machine (the MPS rows did not run)" | tee -a "$out/harness.log"
        rc=1
    fi
    # Which publication path the GPU rows' writers used, per report folder.
    for d in "$out"/*/; do
        [ -f "$d/details.json" ] || continue
        grep -ho '"publication": "[^"]*"' "$d/details.json" | sort | uniq -c |
            sed "s|^|$(basename "$d"): |" >>"$out/env.txt"
    done
    ended=1
    exit $rc
    ;;
*)
    echo "usage: $0 build|run" >&2
    exit 2
    ;;
esac

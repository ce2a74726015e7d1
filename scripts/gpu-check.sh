#!/usr/bin/env bash
# GPU check, in two halves:
#   scripts/gpu-check.sh build   (on the build machine, with Rust): builds the release GPU test
#                                binary and the gpu_bench example into .gpu-bin/
#   scripts/gpu-check.sh run     (on the GPU machine, no Rust needed): runs them, writing the
#                                report folder to ${OUT:-reports/gpu-run}
# The GPU machine gets .gpu-bin/ by carrying it (add `/.gpu-bin/` to .git/info/exclude).
set -uo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
build)
    set -e
    cargo build --release --test gpu --example gpu_bench --message-format=json-render-diagnostics >/tmp/gpu-build.json
    mkdir -p .gpu-bin
    jq -r 'select(.reason=="compiler-artifact" and .executable!=null) | .executable' /tmp/gpu-build.json |
        grep -E '/(gpu-[0-9a-f]+|gpu_bench)$' | while read -r f; do
            case "$f" in */examples/*) cp "$f" .gpu-bin/gpu_bench ;; *) cp "$f" .gpu-bin/gpu_tests ;; esac
        done
    ls -la .gpu-bin
    ;;
run)
    out="${OUT:-reports/gpu-run}"
    mkdir -p "$out"
    {
        echo "# GPU check $(date -u +%FT%TZ)"
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
        uname -r
    } >"$out/env.txt"
    # cudarc loads libcuda/libcublas by name: make the toolkit's and pip's cuBLAS findable.
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib $(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null); do
        [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
    done
    echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}" >>"$out/env.txt"
    rc=0
    echo "== GPU tests" | tee "$out/tests.log"
    timeout 150 .gpu-bin/gpu_tests --test-threads=1 --nocapture 2>&1 | tee -a "$out/tests.log" || rc=1
    echo "== gpu_bench" | tee "$out/bench.log"
    timeout 120 .gpu-bin/gpu_bench "$out/bench.json" 2>&1 | tee -a "$out/bench.log" || rc=1
    echo "== gpu_bench, experimental SHMSTREAM_GPU_IPC_EVENT=1 (event ordering instead of writer-side sync)" | tee -a "$out/bench.log"
    SHMSTREAM_GPU_IPC_EVENT=1 timeout 120 .gpu-bin/gpu_bench "$out/bench-ipc-event.json" 2>&1 | tee -a "$out/bench.log" || rc=1
    if command -v nvidia-cuda-mps-control >/dev/null; then
        echo "== gpu_bench under MPS (nvidia-cuda-mps-control -d: processes share the GPU without time-slicing)" | tee -a "$out/bench.log"
        export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
        mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
        if nvidia-cuda-mps-control -d; then
            timeout 120 .gpu-bin/gpu_bench "$out/bench-mps.json" 2>&1 | tee -a "$out/bench.log" || rc=1
            echo quit | nvidia-cuda-mps-control
        else
            echo "MPS did not start" | tee -a "$out/bench.log"
        fi
    else
        echo "no nvidia-cuda-mps-control on this machine" | tee -a "$out/bench.log"
    fi
    echo "exit $rc" >>"$out/env.txt"
    exit $rc
    ;;
*)
    echo "usage: $0 build|run" >&2
    exit 2
    ;;
esac

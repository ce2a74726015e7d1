#!/usr/bin/env bash
# The `shmstream record` targets of issue #12, measured in one run (a measurement, not a test):
#  1. a 240x240 uint16 stream with history(256) written at 2 kHz (examples/camera) recorded for
#     SECONDS, once as .npy cubes and once as FITS: frames lost, and every frame's id and content
#     checked (scripts/record_check.py, numpy / astropy);
#  2. recording throughput with the camera flat out, against a plain sequential write of the
#     same bytes into the same directory, same run (target >= 0.8x).
# Usage: scripts/record-target.sh [OUT_DIR] [SECONDS]   (defaults: a temp dir under /tmp, 30)
# Needs ~7 GB free in OUT_DIR for 30 s; recordings are deleted as soon as they are checked.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-$(mktemp -d "${TMPDIR:-/tmp}/record-target.XXXXXX")}
SECS=${2:-30}
ROWS=240 COLS=240 DEPTH=256 RATE=2000
FRAMES=$((RATE * SECS))
PY=${PYTHON:-.venv/bin/python}
cargo build --release -q -p shmstream-cli || exit 1
cargo build --release -q -p shmstream --example camera || exit 1
BIN=target/release/shmstream
CAMERA=target/release/examples/camera
mkdir -p "$OUT"
trap 'rm -rf "$OUT"/rec-* "$OUT/plain"' EXIT

wait_for_stream() {
    for _ in $(seq 500); do "$BIN" stat "$1" >/dev/null 2>&1 && return 0; sleep 0.01; done
    echo "record-target: stream $1 never appeared" >&2
    return 1
}

for fmt in npy fits; do
    echo "== ${ROWS}x${COLS} uint16, history($DEPTH), $RATE Hz, $FRAMES frames -> $fmt"
    name=rectarget-$fmt-$$
    # The camera runs 4 s longer than the recording, so the recorder may start late.
    "$CAMERA" "$name" "${ROWS}x${COLS}" $RATE $((SECS + 4)) $DEPTH &
    cam=$!
    wait_for_stream "$name" || exit 1
    "$BIN" record "$name" --out "$OUT/rec-$fmt" --frames $FRAMES --format $fmt
    rec=$?
    wait $cam
    "$PY" scripts/record_check.py "$OUT/rec-$fmt" "$name" $ROWS $COLS $FRAMES $fmt
    chk=$?
    rm -rf "$OUT/rec-$fmt"
    [ $rec -eq 0 ] && [ $chk -eq 0 ] && echo "$fmt: target met (0 lost, every frame checked)" \
        || echo "$fmt: target MISSED (record exit $rec, check exit $chk)"
done

echo "== throughput: camera flat out, the recorder takes $((FRAMES / 3)) frames (.npy; frames lost expected)"
name=rectarget-fast-$$
"$CAMERA" "$name" "${ROWS}x${COLS}" 0 $((SECS)) $DEPTH > /dev/null &
cam=$!
wait_for_stream "$name" || exit 1
line=$("$BIN" record "$name" --out "$OUT/rec-fast" --frames $((FRAMES / 3)) --format npy 2>&1 | grep " MB at ")
kill $cam 2>/dev/null; wait $cam 2>/dev/null
echo "$line"
rec_mbs=$(sed -n 's/.* MB at \([0-9.]*\) MB\/s.*/\1/p' <<<"$line")
bytes=$(du -sb "$OUT/rec-fast" | cut -f1)
rm -rf "$OUT/rec-fast"
plain_mbs=$("$PY" - "$OUT/plain" "$bytes" "$((ROWS * COLS * 2 * 1000))" <<'PYEOF'
import os, sys, time
out, total, chunk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(out, exist_ok=True)
data = bytes(range(256)) * (chunk // 256 + 1)
data = data[:chunk]
start, written, k = time.perf_counter(), 0, 0
while written < total:
    with open(os.path.join(out, f"plain_{k:06}.bin"), "wb") as f:
        n = min(chunk, total - written)
        f.write(data[:n])
    written += n
    k += 1
print(f"{written / (time.perf_counter() - start) / 1e6:.1f}")
PYEOF
)
rm -rf "$OUT/plain"
echo "recorder $rec_mbs MB/s, plain sequential write of the same $((bytes / 1000000)) MB $plain_mbs MB/s: $(awk -v a="$rec_mbs" -v b="$plain_mbs" 'BEGIN{printf "%.2f", a/b}')x (target >= 0.8)"

"""Checks a `shmstream record` recording of `examples/camera` (frame i holds i % 65536 in
every pixel, frame id i): every file's cube is uint16 (ROWS, COLS); frame ids across files
are consecutive, EXPECTED of them; every frame's pixels equal its id mod 65536.

python scripts/record_check.py DIR NAME ROWS COLS EXPECTED fits|npy
"""

import csv
import glob
import os
import sys

import numpy as np


def cubes(out, name, fmt):
    if fmt == "fits":
        from astropy.io import fits

        for path in sorted(glob.glob(os.path.join(out, f"{name}_*.fits"))):
            with fits.open(path, memmap=False) as hdus:
                yield path, hdus[0].data, np.asarray(hdus["FRAMES"].data["FRAME_ID"], dtype=np.int64)
    else:
        for path in sorted(glob.glob(os.path.join(out, f"{name}_*.npy"))):
            with open(path[: -len(".npy")] + ".frames.csv") as f:
                ids = [int(r["frame_id"]) for r in csv.DictReader(f)]
            yield path, np.load(path), np.asarray(ids, dtype=np.int64)


def main():
    out, name, rows, cols, expected, fmt = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6]), sys.argv[6]
    all_ids, files = [], 0
    for path, cube, ids in cubes(out, name, fmt):
        files += 1
        if cube.dtype != np.uint16 or cube.shape[1:] != (rows, cols):
            sys.exit(f"record_check: {path}: cube {cube.dtype} {cube.shape}")
        if len(ids) != cube.shape[0]:
            sys.exit(f"record_check: {path}: {cube.shape[0]} frames, {len(ids)} ids")
        want = (ids % 65536).astype(np.uint16)
        flat = cube.reshape(cube.shape[0], -1)
        bad = np.nonzero((flat != want[:, None]).any(axis=1))[0]
        if len(bad):
            sys.exit(f"record_check: {path}: frame {bad[0]} (id {ids[bad[0]]}) differs from what was written")
        all_ids.append(ids)
    if not files:
        sys.exit(f"record_check: no {name}_* {fmt} files in {out}")
    ids = np.concatenate(all_ids)
    gaps = int(np.sum(np.diff(ids) != 1))
    if len(ids) != expected or gaps:
        sys.exit(f"record_check: {len(ids)} frames ({expected} expected), {gaps} gaps in the ids")
    print(f"record_check: {len(ids)} frames in {files} file(s), ids {ids[0]}..{ids[-1]} consecutive, every frame's pixels equal its id")


main()

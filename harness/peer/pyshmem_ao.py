"""The AO loop written the way pyRTC runs it: each stage its own Python process,
pyshmem 1.4.0 notify streams, read_new, numpy. Run by the harness as
`python pyshmem_ao.py SPEC.json ROLE` (ROLE: camera, slopes, recon, merged); writes the
same log format as the harness's stages: little-endian u64 [frame id, in, publish, mid].
"""

import json
import os
import sys
import time

if __name__ == "__main__":
    # Pinned before numpy loads: its BLAS threads start at import and inherit this
    # affinity, so the stage's matrix products run on the stage's core, as ours do (the
    # harness also sets OPENBLAS_NUM_THREADS to the case's reconstructor threads).
    _spec = json.load(open(sys.argv[1]))
    os.sched_setaffinity(0, {_spec["cpus"][sys.argv[2]]})
    # The case's rt_priority: SCHED_FIFO, as the harness's own stages run.
    if _spec.get("rt_priority"):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(_spec["rt_priority"]))
    # The case's slice_us: the fair scheduler's slice, as the harness's own stages ask
    # (sched_setattr, which Python's os module does not wrap).
    if _spec.get("slice_ns"):
        import ctypes
        import struct

        _attr = struct.pack(
            "IIQiIQQQII", 56, 0, 0, os.getpriority(os.PRIO_PROCESS, 0), 0,
            _spec["slice_ns"], 0, 0, 0, 0,
        )
        _libc = ctypes.CDLL(None, use_errno=True)
        # SYS_sched_setattr on x86_64 and aarch64 differ: use the number of this machine.
        _nr = {"x86_64": 314, "aarch64": 274}[os.uname().machine]
        if _libc.syscall(_nr, 0, ctypes.create_string_buffer(_attr, 56), 0) != 0:
            raise OSError(ctypes.get_errno(), "sched_setattr (slice_us)")

import numpy as np  # noqa: E402
import pyshmem  # noqa: E402

STOP = 2**64 - 1
SPIN_NS = 150_000


def matrix(rows, cols):
    # The harness's reconstructor matrices (kernel::test_matrix scaled by recon::matrix):
    # element i is ((i % 7) * 0.25 - 0.5) * (1 / cols), each step in float32 as there. One
    # period of 7 repeated, so building it holds no int64 index or other temporary of the
    # whole matrix, only its float32 elements (what the harness's memory check counts).
    period = (np.arange(7, dtype=np.float32) * np.float32(0.25) - np.float32(0.5)) * (
        np.float32(1) / np.float32(cols)
    )
    n = rows * cols
    return np.tile(period, -(-n // 7))[:n].reshape(rows, cols)


def calibration(n):
    i = np.arange(n)
    dark = (100 + i % 7).astype(np.float32)
    flat = (1.0 + 0.01 * ((i % 5) - 2.0)).astype(np.float32)
    return dark, flat


class Slopes:
    def __init__(self, g):
        h, w = g["wfs"]
        self.g = g
        self.dark, self.flat = calibration(h * w)
        self.dark = self.dark.reshape(h, w)
        self.flat = self.flat.reshape(h, w)
        if g["kind"] == "centroids":
            sy, sx = g["subapertures"]
            self.ch, self.cw = h // sy, w // sx
            self.xs = np.arange(self.cw, dtype=np.float32)
            self.ys = np.arange(self.ch, dtype=np.float32)
        else:
            yy, xx = np.mgrid[0:h, 0:w]
            d = ((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2).ravel()
            self.valid = np.sort(np.lexsort((np.arange(h * w), d))[: g["signals"]])
            # Pixel signals calibrate the valid pixels only, as ours do.
            self.dark = self.dark.ravel()[self.valid]
            self.flat = self.flat.ravel()[self.valid]

    def __call__(self, frame):
        if self.g["kind"] != "centroids":
            v = np.maximum(frame.ravel()[self.valid].astype(np.float32) - self.dark, 0) * self.flat
            return (v / max(v.mean(), 1e-30) - 1).astype(np.float32)
        c = np.maximum(frame.astype(np.float32) - self.dark, 0) * self.flat
        sy, sx = self.g["subapertures"]
        cells = c.reshape(sy, self.ch, sx, self.cw).transpose(0, 2, 1, 3)
        tot = cells.sum(axis=(2, 3))
        dark = tot <= 0
        tot[dark] = 1
        cx = cells.sum(axis=2) @ self.xs / tot - (self.cw - 1) / 2
        cy = cells.sum(axis=3) @ self.ys / tot - (self.ch - 1) / 2
        # A subaperture with no light reads 0, as ours.
        cx[dark] = 0
        cy[dark] = 0
        return np.concatenate([cx.ravel(), cy.ravel()]).astype(np.float32)


class Recon:
    def __init__(self, g, gain, leak):
        mats = g["matrices"]
        self.r = matrix(*mats[0])
        self.m2c = matrix(*mats[1]) if len(mats) > 1 else None
        self.state = np.zeros(mats[0][0], dtype=np.float32)
        self.gain, self.leak = np.float32(gain), np.float32(leak)

    def __call__(self, s):
        self.state = self.leak * self.state - self.gain * (self.r @ s)
        cmd = self.m2c @ self.state if self.m2c is not None else self.state
        return np.clip(cmd, -1, 1)


def wait_until(deadline):
    while True:
        left = deadline - time.monotonic_ns()
        if left <= 0:
            return
        if left > SPIN_NS:
            time.sleep((left - SPIN_NS) / 1e9)


def mark_ready(ready, k, to):
    if k > 1:
        ready.wait_for_count(after=k - 2, timeout=to)
    ready.write(np.array([k], dtype=np.uint64))


def camera(spec, s, to):
    g = spec["geometry"]
    h, w = g["wfs"]
    rng = np.random.default_rng(0)
    frames = rng.integers(100, 4000, size=(4, h, w), dtype=np.uint16)
    s["ready"].wait_for_count(after=(1 if spec["merged"] else 2) - 1, timeout=to)
    period = 1e9 / spec["rate_hz"]
    n = spec["frames"]
    log = np.zeros((n, 4), dtype=np.uint64)
    t0 = time.monotonic_ns() + 1_000_000
    for i in range(1, n + 1):
        deadline = t0 + int(period * (i - 1))
        wait_until(deadline)
        # Stamped before the write, as the harness's camera does: the hop includes the
        # frame copy, and a stage woken by the write never comes out ahead of it.
        published = time.monotonic_ns()
        s["frame"].write(frames[i % 4], frame_id=i)
        log[i - 1] = (i, deadline, published, 0)
    wait_until(t0 + int(period * n))
    # read_new folds a frame published while the stage was busy into its baseline:
    # repeat the stop frame until it comes out of the DM end.
    for _ in range(2000):
        s["frame"].write(frames[0], frame_id=STOP)
        time.sleep(0.002)
        if s["commands"].frame_id == STOP:
            break
    return log


def stage(spec, s, to, role):
    g = spec["geometry"]
    slopes = Slopes(g) if role != "recon" else None
    recon = Recon(g, spec["gain"], spec["leak"]) if role != "slopes" else None
    src = s["signals"] if role == "recon" else s["frame"]
    dst = s["signals"] if role == "slopes" else s["commands"]
    log = []
    mark_ready(s["ready"], 2 if role == "slopes" else 1, to)
    while True:
        pub = src.read_new_publication(timeout=to)
        t_in = time.monotonic_ns()
        if pub.frame_id == STOP:
            # Repeated for the same reason as the camera's: read_new may fold it away.
            for _ in range(2000):
                dst.write(np.zeros(dst.shape, dtype=np.float32), frame_id=STOP)
                if s["commands"].frame_id == STOP:
                    break
                time.sleep(0.002)
            break
        mid = 0
        if slopes is not None:
            out = slopes(pub.payload)
            mid = time.monotonic_ns()
        else:
            out = pub.payload
        if recon is not None:
            out = recon(out)
        dst.write(out, frame_id=pub.frame_id)
        log.append((pub.frame_id, t_in, time.monotonic_ns(), mid))
    return np.array(log, dtype=np.uint64).reshape(-1, 4)


def main():
    spec = json.load(open(sys.argv[1]))
    role = sys.argv[2]
    n = spec["names"]
    s = {
        "frame": pyshmem.open(n["data"]),
        "signals": pyshmem.open(n["signals"]),
        "commands": pyshmem.open(n["commands"]),
        "ready": pyshmem.open(n["ctl"]),
    }
    to = spec["timeout_s"]
    log = camera(spec, s, to) if role == "camera" else stage(spec, s, to, role)
    with open(spec["log_prefix"] + "." + role + ".aolog", "wb") as f:
        f.write(log.astype("<u8").tobytes())


if __name__ == "__main__":
    main()

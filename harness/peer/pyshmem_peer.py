#!/usr/bin/env python3
"""pyshmem peer for the shmstream harness.

Runs one harness case (roundtrip, pingpong or mvm) with pyshmem 1.4.0 and numpy, with
the same loop shape as the Rust side (warm-up seconds, then `repeats` repeats of at least
`min_seconds`, one latency sample per iteration around the step only), and prints one
JSON line on stdout.  Per-iteration latencies (ns, little-endian uint64) go to
spec["samples_path"].  With spec["notify"] (set where ours' wait form notifies: park,
adaptive) the pingpong and mvm streams notify and their waiters park; the result's
notes["notify"] says whether pyshmem did use notify streams.  Where ours spin, the waits
poll the count first (`wait_past`), and the write locks ours holds for the run are held
for the run here too (`acquire`, `write_locked`, `write_view_locked`).

Usage: pyshmem_peer.py SPEC.json            (the measuring side)
       pyshmem_peer.py --role ROLE --leader PID SPEC.json
                                            (the partner process it spawns itself)
"""

import ctypes
import ctypes.util
import json
import os
import platform
import signal
import subprocess
import sys
import time

import numpy as np
import pyshmem

CAP = 4_000_000  # most latency samples kept


def pin(cpu):
    try:
        os.sched_setaffinity(0, {cpu})
        return True
    except (AttributeError, OSError):
        return False


def spin_us(us):
    if us <= 0:
        return
    end = time.perf_counter_ns() + int(us * 1000)
    while time.perf_counter_ns() < end:
        pass


def timed(spec, step, gap_us=0.0):
    t = spec["timing"]
    pc = time.perf_counter_ns
    i = 0
    warm = 0
    warm_until = pc() + int(t["warmup"] * 1e9)
    while warm < 2 or pc() < warm_until:
        i += 1
        spin_us(gap_us)
        step(i)
        warm += 1
    lat = np.empty(CAP, dtype=np.uint64)
    k = 0
    rates = []
    busy_rates = []
    min_ns = int(t["min_seconds"] * 1e9)
    for _ in range(t["repeats"]):
        start = pc()
        n = 0
        busy = 0
        while True:
            i += 1
            spin_us(gap_us)
            t0 = pc()
            step(i)
            t1 = pc()
            busy += t1 - t0
            if k < CAP:
                lat[k] = t1 - t0
                k += 1
            n += 1
            if n >= 3 and t1 - start >= min_ns:
                break
        rates.append(n * 1e9 / (t1 - start))
        busy_rates.append(n * 1e9 / max(busy, 1))
    lat[:k].astype("<u8").tofile(spec["samples_path"])
    return {"repeat_hz": rates, "repeat_busy_hz": busy_rates, "iterations": int(k), "warmup_iterations": warm}


def blas_info():
    """Which BLAS and which OpenBLAS kernel ('core') numpy runs, as far as we can tell."""
    info = {}
    try:
        from threadpoolctl import threadpool_info  # optional

        for m in threadpool_info():
            if m.get("user_api") == "blas":
                info["blas"] = f"{m.get('internal_api')} {m.get('version')}"
                info["blas_kernel"] = str(m.get("architecture"))
                info["blas_threads"] = str(m.get("num_threads"))
                info["source"] = "threadpoolctl"
                return info
    except Exception:  # noqa: BLE001 - threadpoolctl missing or failing: fall back
        pass
    # Fallback: find the loaded OpenBLAS in /proc/self/maps and ask it directly.
    try:
        with open("/proc/self/maps") as f:
            paths = {ln.split()[-1] for ln in f if "openblas" in ln.lower() and "/" in ln}
        names = ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename",
                 "openblas_get_corename64_", "openblas_get_corename")
        for p in sorted(paths):
            lib = ctypes.CDLL(p)
            for sym in names:
                core = getattr(lib, sym, None)
                if core is None:
                    continue
                core.restype = ctypes.c_char_p
                info["blas"] = "openblas (" + os.path.basename(p) + ")"
                info["blas_kernel"] = core().decode()
                nt = getattr(lib, sym.replace("get_corename", "get_num_threads"), None)
                if nt is not None:
                    info["blas_threads"] = str(nt())
                info["source"] = sym + " (threadpoolctl not installed)"
                return info
    except Exception as e:  # noqa: BLE001
        info["blas_error"] = str(e)
    info.setdefault("blas_kernel", "unknown (threadpoolctl not installed, no OpenBLAS symbol found)")
    return info


def all_cpus():
    os.sched_setaffinity(0, range(os.cpu_count() or 1))


def spawn_partner(role, spec_path, unpinned=False):
    # An unpinned partner must not inherit our pinning: OpenBLAS sizes its thread pool
    # from the affinity mask it sees when numpy is imported.
    script = os.path.abspath(__file__)
    leader = str(os.getpid())
    return subprocess.Popen(
        [sys.executable, script, "--role", role, "--leader", leader, spec_path],
        stdin=subprocess.DEVNULL,
        preexec_fn=all_cpus if unpinned else None,
    )


PR_SET_PDEATHSIG = 1


def die_with_leader(leader):
    """Has the kernel SIGKILL this partner when its leader (the thread that spawned it,
    Python's main thread) dies, however it dies (the harness's group kill misses a leader
    killed with the harness, SIGKILL or abort): it would otherwise wait out its 60 s reads."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")
    # The leader died before the prctl: no signal will come.
    if os.getppid() != leader:
        raise SystemExit(f"peer partner: its leader {leader} is gone")


def finish_partner(proc):
    try:
        rc = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise RuntimeError("peer partner process hung at the end")
    if rc != 0:
        raise RuntimeError(f"peer partner process exited with {rc}")


def notify(spec):
    """Whether the streams notify and their waiters park: whenever ours do (park, adaptive)."""
    return bool(spec.get("notify"))


def poll(spec):
    # notify: park. Otherwise `wait_past` busy-polls first, and pyshmem's own wait, which
    # would sleep(0) between polls, finds the count past at once.
    return 1e-5 if notify(spec) else 0.0


def wait_past(s, after, spin, timeout, poll_interval, out=None):
    """pyshmem's wait for a publication of `s` past count `after`: `read_after` into `out`,
    or `wait_for_count` without one. With `spin` (where ours spins: streams without notify),
    busy-polls the count first: pyshmem's own wait sleeps(0) between polls, which takes
    15-75 µs on this VM's timer (its slack), where ours takes none, and it then finds the
    count past at once. An aborted write is left to pyshmem's wait, which reports it."""
    if spin:
        polls, deadline = 0, None
        while s.count <= after:
            polls += 1
            if polls % 64 == 0:
                if s.write_sequence < 0:
                    break
                now = time.monotonic()
                deadline = deadline or now + timeout
                if now > deadline:
                    raise TimeoutError(f"no write on {s.name} past count {after} in {timeout} s")
    if out is None:
        return s.wait_for_count(after=after, timeout=timeout, poll_interval=poll_interval)
    return s.read_after(after, out=out, timeout=timeout, poll_interval=poll_interval)


def readers_lock_free():
    """Whether pyshmem's readers take no lock (they load the sequence atomically: on x86-64,
    or with libatomic), so that a writer may hold its lock for the run as ours does; else
    every read would wait for it."""
    return platform.machine().lower() in {"x86_64", "amd64"} or bool(
        ctypes.util.find_library("atomic")
    )


class Writer:
    """Writes to stream `s` as ours does: its lock held for the run where pyshmem's readers
    take none (`write_locked`, `write_view_locked`), else a lock taken per write."""

    def __init__(self, s):
        self.s, self.held = s, readers_lock_free()
        if self.held:
            s.acquire(timeout=60)

    def write(self, value):
        if self.held:
            self.s.write_locked(value)
        else:
            self.s.write(value)

    def view(self):
        return self.s.write_view_locked() if self.held else self.s.write_view()

    def release(self):
        if self.held:
            self.s.release()


def mvm_spins(spec):
    """Whether the MVM's waits spin: not where numpy's product uses every core (as ours
    would, given every core: `kernel_parallel`). There numpy's threads, unpinned, share the
    cores with the waits: both sides spinning held one off, 250 products a second at
    n = 1000 against 6 000 with pyshmem's own waits (its sleep(0) polls), and polling with
    sched_yield read 5 000; so those are kept there."""
    return not spec.get("kernel_parallel")


# ---------------------------------------------------------------- roundtrip
def roundtrip(spec):
    pin(spec["writer_cpu"])
    name = spec["names"]["data"]
    shape, dtype = tuple(spec["shape"]), np.dtype(spec["dtype"])
    w = pyshmem.create(name, shape=shape, dtype=dtype)
    r = pyshmem.open(name)
    # np.ones, not np.zeros: calloc'ed zeros map the shared zero page until written,
    # which would make every copy from them read one hot page.
    src = np.ones(shape, dtype=dtype)
    dst = np.ones_like(src)
    try:

        def step(_i):
            w.write(src)
            r.read(out=dst)

        return timed(spec, step)
    finally:
        r.close()
        w.close()
        pyshmem.unlink_quiet(name)


# ---------------------------------------------------------------- pingpong
def ping_writer(spec, spec_path):
    pin(spec["writer_cpu"])
    n = spec["names"]
    shape, dtype = tuple(spec["shape"]), np.dtype(spec["dtype"])
    data = pyshmem.create(n["data"], shape=shape, dtype=dtype, notify=notify(spec))
    ack = pyshmem.create(n["ack"], shape=(1,), dtype=np.int64, notify=notify(spec))
    ctl = pyshmem.create(n["ctl"], shape=(1,), dtype=np.int64)
    proc = spawn_partner("ping-reader", spec_path)
    src = np.ones(shape, dtype=dtype)
    pi = poll(spec)
    spin = not notify(spec)
    try:
        acks = ack.wait_for_count(after=0, timeout=60, poll_interval=1e-4)
        state = {"acks": acks}

        def step(_i):
            data.write(src)
            state["acks"] = wait_past(ack, state["acks"], spin, 30, pi)

        out = timed(spec, step, spec.get("gap_us", 0.0))
        out["notes"] = {"notify": data.notify and ack.notify}
        ctl.write(np.ones(1, dtype=np.int64))
        data.write(src)
        finish_partner(proc)
        return out
    finally:
        if proc.poll() is None:
            proc.kill()
        for s in (data, ack, ctl):
            s.close()
        for k in ("data", "ack", "ctl"):
            pyshmem.unlink_quiet(n[k])


def ping_reader(spec):
    pin(spec["reader_cpu"])
    n = spec["names"]
    data, ack, ctl = pyshmem.open(n["data"]), pyshmem.open(n["ack"]), pyshmem.open(n["ctl"])
    buf = np.ones(tuple(spec["shape"]), dtype=np.dtype(spec["dtype"]))
    one = np.zeros(1, dtype=np.int64)
    pi = poll(spec)
    spin = not notify(spec)
    acks = Writer(ack)
    last = data.count
    one[0] = last
    acks.write(one)
    while True:
        wait_past(data, last, spin, 60, pi, out=buf)
        if ctl.count > 0:
            break
        last = data.last_read_count
        one[0] = last
        acks.write(one)
    acks.release()


# ---------------------------------------------------------------- mvm
def vector(cols, k):
    """x_k[j] = ((j + k) % 5) * 0.5 - 1, the Rust side's vectors for k = 0, 1, 2."""
    return ((np.arange(cols) + k) % 5).astype(np.float32) * 0.5 - 1.0


def mvm_driver(spec, spec_path):
    pin(spec["writer_cpu"])
    n = spec["names"]
    rows, cols = spec["shape"]
    # Same values as the Rust side (i % 7) * 0.25 - 0.5, without an int64 temporary.
    a = np.resize(np.arange(7, dtype=np.float32) * 0.25 - 0.5, rows * cols).reshape(rows, cols)
    m = pyshmem.create(n["matrix"], shape=(rows, cols), dtype=np.float32)
    x = pyshmem.create(n["data"], shape=(cols,), dtype=np.float32, notify=notify(spec))
    y = pyshmem.create(n["ack"], shape=(rows,), dtype=np.float32, notify=notify(spec))
    ctl = pyshmem.create(n["ctl"], shape=(1,), dtype=np.int64)
    m.write(a)
    proc = spawn_partner("mvm-compute", spec_path, unpinned=True)
    # Three vectors prepared outside the timing, iteration i publishing xs[i % 3] as ours
    # does, so that a y computed from an earlier x cannot pass for the last one's.
    xs = [vector(cols, k) for k in range(3)]
    yv = np.empty(rows, dtype=np.float32)
    pi = poll(spec)
    spin = not notify(spec) and mvm_spins(spec)
    try:
        ys = y.wait_for_count(after=0, timeout=600, poll_interval=1e-4)
        state = {"ys": ys}
        xw = Writer(x)

        def step(i):
            xw.write(xs[i % 3])
            wait_past(y, state["ys"], spin, 60, pi, out=yv)
            state["ys"] = y.last_read_count

        out = timed(spec, step)
        # One checked iteration on a vector no timed one published: the y of the last x.
        xc = vector(cols, 3)
        xw.write(xc)
        wait_past(y, state["ys"], spin, 60, pi, out=yv)
        err = float(np.max(np.abs(yv - a @ xc))) / max(cols, 1)
        if err > 1e-4:
            raise RuntimeError(f"peer y = A.x is wrong: {err}")
        ctl.write(np.ones(1, dtype=np.int64))
        xw.write(xc)
        xw.release()
        finish_partner(proc)
        with open(spec["kernel_path"]) as f:
            out["notes"] = json.load(f)
        out["notes"]["notify"] = x.notify and y.notify
        return out
    finally:
        if proc.poll() is None:
            proc.kill()
        for s in (m, x, y, ctl):
            s.close()
        for k in ("matrix", "data", "ack", "ctl"):
            pyshmem.unlink_quiet(n[k])


def mvm_compute(spec):
    # Not pinned: OpenBLAS runs its own threads over every core, as numpy users get it.
    n = spec["names"]
    rows, cols = spec["shape"]
    m, x, y, ctl = (pyshmem.open(n[k]) for k in ("matrix", "data", "ack", "ctl"))
    a = m.read()  # once, like the Rust compute process
    xv = np.empty(cols, dtype=np.float32)
    yv = np.zeros(rows, dtype=np.float32)
    # Kernel alone (numpy's sgemv), for the kernel-vs-kernel target.
    kx = vector(cols, 0)
    ky = np.empty(rows, dtype=np.float32)
    t = spec["timing"]
    for _ in range(3):
        np.dot(a, kx, out=ky)
    rates = []
    pc = time.perf_counter_ns
    for _ in range(t["repeats"]):
        start = pc()
        k = 0
        while True:
            np.dot(a, kx, out=ky)
            k += 1
            now = pc()
            if k >= 3 and now - start >= t["min_seconds"] * 1e9:
                break
        rates.append(k * 1e9 / (now - start))
    hz = sorted(rates)[len(rates) // 2]
    notes = {"kernel_hz": hz, "kernel_gflops": 2.0 * rows * cols * hz / 1e9}
    notes.update(blas_info())
    notes["numpy"] = np.__version__
    with open(spec["kernel_path"], "w") as f:
        json.dump(notes, f)
    pi = poll(spec)
    spin = not notify(spec) and mvm_spins(spec)
    # y computed in place, as ours does.
    yw = Writer(y)
    last = x.count  # before "ready": the driver's first x may follow it at once
    yw.write(yv)
    while True:
        wait_past(x, last, spin, 60, pi, out=xv)
        if ctl.count > 0:
            break
        last = x.last_read_count
        with yw.view() as v:
            np.dot(a, xv, out=v)
    yw.release()


def main():
    args = sys.argv[1:]
    role = None
    if args and args[0] == "--role":
        role, args = args[1], args[2:]
        if args[:1] != ["--leader"]:
            raise SystemExit("--role needs --leader PID (the process that spawns the partner)")
        die_with_leader(int(args[1]))
        args = args[2:]
    spec_path = args[0]
    with open(spec_path) as f:
        spec = json.load(f)
    kind = spec["kind"]
    if role == "ping-reader":
        return ping_reader(spec)
    if role == "mvm-compute":
        return mvm_compute(spec)
    if kind == "roundtrip":
        out = roundtrip(spec)
    elif kind == "pingpong":
        out = ping_writer(spec, spec_path)
    elif kind == "mvm":
        out = mvm_driver(spec, spec_path)
    else:
        raise SystemExit(f"unknown kind {kind!r}")
    out.setdefault("notes", {})
    out["notes"]["pyshmem"] = pyshmem.__version__
    out["notes"]["numpy"] = np.__version__
    out["notes"]["python"] = sys.version.split()[0]
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
